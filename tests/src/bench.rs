//! What the benchmarks share: their command-line flags (`cargo bench --bench B -- --flag N`).

use std::str::FromStr;

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
