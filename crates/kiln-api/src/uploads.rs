//! Where uploaded contexts live: `<data dir>/uploads/<id>.tar.gz`. The server writes them
//! (`POST /uploads`), the agent extracts them into a run's workspace; this module is the one
//! place that maps an upload ID to a file, and the only check between a client-chosen string
//! and a path. It also owns the limit on a context's unpacked size ([`ContextLimit`]), which
//! the server checks when an archive arrives and the agent again when a run unpacks or fetches
//! one, so a small archive cannot fill the disk.

use std::path::{Path, PathBuf};

/// Length of an upload ID: 32 lowercase hex digits (128 random bits).
pub const ID_LEN: usize = 32;

/// The unpacked size a run's context may have (`kiln serve --max-context-mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimit {
    pub bytes: u64,
}

/// A context larger than its [`ContextLimit`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the context unpacks to more than the server's limit of {limit_mb} MiB (--max-context-mb)")]
pub struct ContextTooLarge {
    pub limit_mb: u64,
}

/// `--max-context-mb`'s default.
impl Default for ContextLimit {
    fn default() -> Self {
        ContextLimit::from_mb(ContextLimit::DEFAULT_MB)
    }
}

impl ContextLimit {
    /// `--max-context-mb`'s default: four times the default upload limit, room for well
    /// compressed sources, far from a disk filled by a small archive.
    pub const DEFAULT_MB: u64 = 4096;

    pub fn from_mb(mb: u64) -> Self {
        ContextLimit { bytes: mb.saturating_mul(1024 * 1024) }
    }

    /// Refuses `total` unpacked bytes when over the limit.
    pub fn check(self, total: u64) -> Result<(), ContextTooLarge> {
        if total > self.bytes { Err(self.exceeded()) } else { Ok(()) }
    }

    /// The refusal of a context over this limit.
    pub fn exceeded(self) -> ContextTooLarge {
        ContextTooLarge { limit_mb: self.bytes / (1024 * 1024) }
    }

    /// The bytes of the files under `dir` (a fetched git or tarball context), refused when
    /// over the limit; links are not followed and count as nothing.
    pub fn check_dir(self, dir: &Path) -> std::io::Result<Result<(), ContextTooLarge>> {
        let mut total = 0u64;
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    total += entry.metadata()?.len();
                    if let Err(e) = self.check(total) {
                        return Ok(Err(e));
                    }
                }
            }
        }
        Ok(Ok(()))
    }
}

/// The directory of uploads under the data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}

/// The archive of upload `id`, or `None` when `id` is not an upload ID (so it can never
/// name another file).
pub fn path(data_dir: &Path, id: &str) -> Option<PathBuf> {
    is_id(id).then(|| dir(data_dir).join(format!("{id}.tar.gz")))
}

/// A fresh random upload ID.
pub fn new_id() -> String {
    let mut bytes = [0u8; ID_LEN / 2];
    // The OS random source failing is not something a server can carry on from.
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_limits_count_files_below_a_directory() {
        let limit = ContextLimit::from_mb(1);
        assert_eq!(limit.check(1024 * 1024), Ok(()));
        assert_eq!(limit.check(1024 * 1024 + 1), Err(ContextTooLarge { limit_mb: 1 }));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/half"), vec![0u8; 512 * 1024]).unwrap();
        assert_eq!(limit.check_dir(dir.path()).unwrap(), Ok(()));
        std::fs::write(dir.path().join("more"), vec![0u8; 512 * 1024 + 1]).unwrap();
        assert_eq!(limit.check_dir(dir.path()).unwrap(), Err(ContextTooLarge { limit_mb: 1 }));
    }

    #[test]
    fn only_upload_ids_map_to_paths() {
        let data = Path::new("/data");
        let id = new_id();
        assert_eq!(path(data, &id), Some(PathBuf::from(format!("/data/uploads/{id}.tar.gz"))));
        for bad in ["", "../../etc/passwd", &id.to_uppercase(), &format!("{id}0"), "x/y"] {
            assert_eq!(path(data, bad), None, "{bad}");
        }
    }
}
