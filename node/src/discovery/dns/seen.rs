//! The highest root `seq` seen per tree, kept in the node's data dir
//! (`dns-discovery-seq.json`, `{"enrtree://<key>@<domain>": seq}`) so the rollback check survives
//! restarts: a node that has read seq 7 refuses seq 6 after a restart too. A tree is its key and
//! its domain: one operator key may sign several trees, each with its own `seq`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::tree::TreeUrl;

/// Name of the file in the node's data dir.
pub const FILE: &str = "dns-discovery-seq.json";

#[derive(Debug, thiserror::Error)]
pub enum SeenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a map of enrtree:// URLs to seq numbers: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The persisted seqs.
#[derive(Debug)]
pub struct SeenSeqs {
    path: PathBuf,
    seqs: BTreeMap<String, u64>,
}

impl SeenSeqs {
    /// Reads `data_dir/dns-discovery-seq.json`; no file is no tree seen yet.
    pub fn load(data_dir: &Path) -> Result<SeenSeqs, SeenError> {
        let path = data_dir.join(FILE);
        let seqs = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| SeenError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(SeenError::Read { path, source }),
        };
        Ok(SeenSeqs { path, seqs })
    }

    /// Nothing persisted, writing to `data_dir` (after a file that could not be read).
    pub fn empty(data_dir: &Path) -> SeenSeqs {
        SeenSeqs {
            path: data_dir.join(FILE),
            seqs: BTreeMap::new(),
        }
    }

    pub fn get(&self, url: &TreeUrl) -> Option<u64> {
        self.seqs.get(&url.to_string()).copied()
    }

    /// Remembers `seq` for `url` if it is higher than what is known, and writes the file
    /// (through a temp file and a rename: a crash leaves the old file or the new one).
    pub fn record(&mut self, url: &TreeUrl, seq: u64) -> Result<(), SeenError> {
        let key = url.to_string();
        if self.seqs.get(&key).is_some_and(|s| *s >= seq) {
            return Ok(());
        }
        self.seqs.insert(key, seq);
        let tmp = self.path.with_extension("json.tmp");
        let write = |path: &Path, bytes: &[u8]| std::fs::write(path, bytes);
        let bytes = serde_json::to_vec_pretty(&self.seqs).unwrap_or_default();
        write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|source| SeenError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@nodes.example.org";
    const B: &str =
        "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@other.example.org";

    #[test]
    fn seqs_survive_a_reload_never_go_down_and_a_bad_file_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b): (TreeUrl, TreeUrl) = (A.parse().unwrap(), B.parse().unwrap());
        let mut seen = SeenSeqs::load(dir.path()).unwrap();
        assert_eq!(seen.get(&a), None);
        seen.record(&a, 7).unwrap();
        seen.record(&b, 2).unwrap();
        seen.record(&a, 5).unwrap();
        let again = SeenSeqs::load(dir.path()).unwrap();
        assert_eq!(
            again.get(&a),
            Some(7),
            "a lower seq does not replace a higher one"
        );
        assert_eq!(
            again.get(&b),
            Some(2),
            "the same key at another domain is another tree"
        );

        std::fs::write(dir.path().join(FILE), b"{\"enrtree://x\": \"seven\"}").unwrap();
        let err = SeenSeqs::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(FILE) && err.contains("not a map"), "{err}");
    }
}
