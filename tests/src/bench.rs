//! What the benchmarks share: their command-line flags (`cargo bench --bench B -- --flag N`),
//! how they count what a store node lacks, and how they save and read a node's heap profile.

use std::{collections::HashSet, str::FromStr};

use libp2p::Multiaddr;
use roost_node::{client::Client, message::MessageHash, store::rpc::StoreQueryRequest};

/// The hashes among `wanted` that hash lookups (presence only, 100 per query) at the store
/// node `addr` do not find; a query that gets no 200 counts its hashes as missing (a store
/// still catching up or down is what a benchmark reports, not a reason to stop).
pub async fn missing_hashes(
    reader: &Client,
    addr: &Multiaddr,
    wanted: &[MessageHash],
) -> Vec<MessageHash> {
    let mut missing = Vec::new();
    for chunk in wanted.chunks(100) {
        let request = StoreQueryRequest::new("bench-check")
            .hashes(chunk.iter().copied())
            .include_data(false)
            .limit(100);
        match reader.store_query(addr, &request).await {
            Ok(r) if r.code() == 200 => {
                let found: HashSet<MessageHash> = r
                    .entries()
                    .map(|e| e.into_iter().map(|e| e.hash).collect())
                    .unwrap_or_default();
                missing.extend(chunk.iter().filter(|h| !found.contains(h)));
            }
            _ => missing.extend(chunk),
        }
    }
    missing
}

/// The value after `flag` on the command line (`--messages 5000`), or `default` when the flag
/// is absent. A value that does not parse is an error naming the flag, not a silent default.
pub fn flag<T: FromStr>(flag: &str, default: T) -> anyhow::Result<T> {
    flag_in(std::env::args(), flag, default)
}

fn flag_in<T: FromStr>(
    args: impl IntoIterator<Item = String>,
    flag: &str,
    default: T,
) -> anyhow::Result<T> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            let value = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            return value
                .parse()
                .map_err(|_| anyhow::anyhow!("{flag} {value}: not a number"));
        }
    }
    Ok(default)
}

/// Saves the jemalloc heap dump of the node serving `http` (`http://127.0.0.1:<port>`, started
/// with `--http-heap-profile true`) at `path`, for `jeprof`; says on stdout what it did.
pub async fn save_heap_dump(http: &str, path: &std::path::Path) -> bool {
    let url = format!("{http}/debug/pprof/heap?format=jeprof");
    match reqwest::get(&url).await {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(body) => match std::fs::write(path, &body) {
                Ok(()) => {
                    println!("heap profile: {}", path.display());
                    return true;
                }
                Err(e) => println!("heap profile: cannot write {}: {e}", path.display()),
            },
            Err(e) => println!("heap profile: {url}: {e}"),
        },
        Ok(r) => println!("heap profile: {url}: {}", r.status()),
        Err(e) => println!("heap profile: {url}: {e}"),
    }
    false
}

/// The first `lines` lines of `jeprof --text` for `profile` of `binary` (against `base` when
/// given: what grew since), or why there are none.
pub fn jeprof_top(
    binary: &std::path::Path,
    base: Option<&std::path::Path>,
    profile: &std::path::Path,
    lines: usize,
) -> Vec<String> {
    let mut cmd = std::process::Command::new("jeprof");
    cmd.arg("--text");
    if let Some(base) = base {
        cmd.arg(format!("--base={}", base.display()));
    }
    cmd.arg(binary).arg(profile);
    match cmd.output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .take(lines)
            .map(str::to_owned)
            .collect(),
        Ok(out) => vec![format!(
            "jeprof failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )],
        Err(e) => vec![format!("jeprof cannot run: {e}")],
    }
}

#[cfg(test)]
mod tests {
    use super::flag_in;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_are_read_defaulted_and_checked() {
        let a = args("bench --bench --messages 500 --pairs 2");
        assert_eq!(flag_in(a.clone(), "--messages", 8000usize).unwrap(), 500);
        assert_eq!(flag_in(a.clone(), "--window", 256usize).unwrap(), 256);
        assert!(flag_in(args("b --pairs x"), "--pairs", 3usize).is_err());
        assert!(flag_in(args("b --pairs"), "--pairs", 3usize).is_err());
    }
}
