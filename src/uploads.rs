//! Where uploaded contexts live: `<data dir>/uploads/<id>.tar.gz`. The server writes them
//! (`POST /uploads`), the agent extracts them into a run's workspace; this module is the one
//! place that maps an upload ID to a file, and the only check between a client-chosen string
//! and a path.

use std::path::{Path, PathBuf};

/// Length of an upload ID: 32 lowercase hex digits (128 random bits).
pub const ID_LEN: usize = 32;

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
    fn only_upload_ids_map_to_paths() {
        let data = Path::new("/data");
        let id = new_id();
        assert_eq!(path(data, &id), Some(PathBuf::from(format!("/data/uploads/{id}.tar.gz"))));
        for bad in ["", "../../etc/passwd", &id.to_uppercase(), &format!("{id}0"), "x/y"] {
            assert_eq!(path(data, bad), None, "{bad}");
        }
    }
}
