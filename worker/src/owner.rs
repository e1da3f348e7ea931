//! Who owns what kiln creates on an engine, and whether that owner is provably gone.
//!
//! Several kiln processes (servers, `kiln exec`, tests) share one engine, so a sweep of crashed
//! runs' leftovers must know which objects belong to a process that no longer runs. A host name
//! and PID cannot say: a zombie keeps its PID, and PID 1 of a restarted container has the same
//! PID and host name as its predecessor. So each process is an [`Owner`] instance: a random ID,
//! never reused, and a lock file `kiln-owner-<id>.lock` that the process holds (`flock`) for its
//! whole life. The kernel releases the lock when the process dies, zombie or not; a lock file
//! that can be locked therefore names an owner that is gone. Every object kiln creates carries
//! both ([`OWNER_LABEL`], [`OWNER_LOCK_LABEL`]); an object whose lock file cannot be found
//! (another host, a deleted data directory) or read is never judged gone.
//!
//! Lock files of gone owners are deleted by sweeps, but only [`FORGET_AFTER`] after a sweep
//! first found the owner gone: the engine completes requests a process sent just before it
//! died, so objects can appear after its death, and they must still find the lock file.

use std::collections::HashMap;
use std::fs::{self, File, TryLockError};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Label carrying the owner instance's ID.
pub const OWNER_LABEL: &str = "kiln.owner";
/// Label carrying the absolute path of the owner instance's lock file.
pub const OWNER_LOCK_LABEL: &str = "kiln.owner-lock";

const LOCK_PREFIX: &str = "kiln-owner-";
const LOCK_SUFFIX: &str = ".lock";
/// The line a sweep appends to a gone owner's lock file: `gone <unix seconds>`.
const GONE_MARK: &str = "gone ";

/// How long a gone owner's lock file is kept after a sweep first found it gone; far longer than
/// an engine takes to complete a request.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("cannot create the owner lock file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot get random bytes for the owner ID: {0}")]
    Random(getrandom::Error),
}

/// This process as the owner of engine objects. Holding it holds the lock.
#[derive(Debug)]
pub struct Owner {
    id: String,
    lock_path: PathBuf,
    /// Holds the `flock` until the process ends.
    _lock: File,
}

/// How a sweep judges an object's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its lock is free: the owner process is dead.
    Gone,
    /// Someone holds the lock (the owner, or a sweep judging it right now).
    Live,
    /// No (valid) owner labels, or the lock file is not there to judge by.
    Unknown,
}

static INSTANCE: OnceLock<Owner> = OnceLock::new();

/// This process's owner instance, claimed with its lock file in `dir` on the first call (a
/// server passes its data directory's `owners/`); later calls return the same instance
/// whatever `dir` they name, because one process is one owner.
pub fn claim(dir: &Path) -> Result<&'static Owner, OwnerError> {
    if let Some(owner) = INSTANCE.get() {
        return Ok(owner);
    }
    let owner = Owner::create(dir)?;
    // A concurrent first claim may have won; its instance is the one, this one unlocks on drop.
    Ok(INSTANCE.get_or_init(|| owner))
}

/// Where `kiln exec` and other data-directory-less processes keep their lock files.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("kiln-owners")
}

impl Owner {
    pub(crate) fn create(dir: &Path) -> Result<Owner, OwnerError> {
        let create = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OwnerError::Create { path, source }
        };
        fs::create_dir_all(dir).map_err(create(dir))?;
        // Labels must name the file from anywhere: absolute.
        let dir = dir.canonicalize().map_err(create(dir))?;
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(OwnerError::Random)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let lock_path = dir.join(format!("{LOCK_PREFIX}{id}{LOCK_SUFFIX}"));
        // Locked under a name sweeps ignore, then renamed: a lock file a sweep can see is
        // locked from the moment it appears, so it is never mistaken for a dead owner's.
        let staging = dir.join(format!(".{LOCK_PREFIX}{id}.tmp"));
        let mut file = File::create_new(&staging).map_err(create(&staging))?;
        file.try_lock().map_err(|e| OwnerError::Create {
            path: staging.clone(),
            source: io::Error::from(e),
        })?;
        // For people reading the directory; the lock, not the PID, is what sweeps trust.
        writeln!(file, "pid {}", std::process::id()).map_err(create(&staging))?;
        fs::rename(&staging, &lock_path).map_err(create(&lock_path))?;
        Ok(Owner { id, lock_path, _lock: file })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The owner labels every engine object kiln creates carries.
    pub(crate) fn labels(&self) -> [(String, String); 2] {
        [
            (OWNER_LABEL.to_string(), self.id.clone()),
            (OWNER_LOCK_LABEL.to_string(), self.lock_path.display().to_string()),
        ]
    }
}

/// The lock file an object's labels name, if they are well formed: an absolute path whose file
/// name carries the owner ID (so a label cannot point a sweep at an unrelated file).
pub(crate) fn lock_of(labels: &HashMap<String, String>) -> Option<PathBuf> {
    let id = labels.get(OWNER_LABEL)?;
    let path = PathBuf::from(labels.get(OWNER_LOCK_LABEL)?);
    let named = path.file_name()? == format!("{LOCK_PREFIX}{id}{LOCK_SUFFIX}").as_str();
    let plain_id = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit());
    (path.is_absolute() && named && plain_id).then_some(path)
}

/// Judges the owner whose lock file is `lock`. Locking it for a moment is the proof; the lock
/// is released at once.
pub(crate) fn judge(lock: &Path) -> Verdict {
    let Ok(file) = File::open(lock) else { return Verdict::Unknown };
    match file.try_lock() {
        Ok(()) => Verdict::Gone,
        Err(TryLockError::WouldBlock) => Verdict::Live,
        Err(TryLockError::Error(_)) => Verdict::Unknown,
    }
}

/// Lock files in `dir` whose owners were first found gone at least [`FORGET_AFTER`] before
/// `now`: what a sweep may delete once their objects are. Owners found gone for the first time
/// are marked so (the time is appended to their lock file).
pub(crate) fn forgettable_in(dir: &Path, now: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let is_lock = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(LOCK_PREFIX) && n.ends_with(LOCK_SUFFIX))
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_lock(p) && gone_long_enough(p, now).unwrap_or(false))
        .collect()
}

/// Whether the owner of `lock` is gone and was first found gone `FORGET_AFTER` ago; marks it
/// when it is found gone for the first time.
fn gone_long_enough(lock: &Path, now: SystemTime) -> io::Result<bool> {
    let mut file = fs::OpenOptions::new().read(true).append(true).open(lock)?;
    if file.try_lock().is_err() {
        return Ok(false);
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let since = text.lines().find_map(|l| l.strip_prefix(GONE_MARK)?.parse::<u64>().ok());
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match since {
        Some(since) => Ok(now_secs.saturating_sub(since) >= FORGET_AFTER.as_secs()),
        None => {
            writeln!(file, "{GONE_MARK}{now_secs}")?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(id: &str, path: &Path) -> HashMap<String, String> {
        HashMap::from([
            (OWNER_LABEL.to_string(), id.to_string()),
            (OWNER_LOCK_LABEL.to_string(), path.display().to_string()),
        ])
    }

    #[test]
    fn a_held_lock_is_live_and_a_released_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner::create(dir.path()).unwrap();
        let lock = lock_of(&HashMap::from(owner.labels())).expect("well formed");
        assert_eq!(lock, owner.lock_path());
        let now = SystemTime::now();
        assert_eq!(judge(&lock), Verdict::Live);
        assert!(forgettable_in(dir.path(), now + 2 * FORGET_AFTER).is_empty());
        drop(owner);
        // The file stays (its objects may still exist), but nobody holds it any more.
        assert_eq!(judge(&lock), Verdict::Gone);
        assert!(forgettable_in(dir.path(), now).is_empty(), "first found gone: kept");
        assert!(forgettable_in(dir.path(), now + FORGET_AFTER / 2).is_empty());
        assert_eq!(forgettable_in(dir.path(), now + FORGET_AFTER), [lock]);
    }

    #[test]
    fn owners_are_never_reused_and_bad_labels_are_not_judged() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Owner::create(dir.path()).unwrap(), Owner::create(dir.path()).unwrap());
        assert_ne!(a.id(), b.id());
        let missing = dir.path().join(format!("{LOCK_PREFIX}00ff{LOCK_SUFFIX}"));
        assert_eq!(judge(&missing), Verdict::Unknown, "no lock file: cannot judge");
        assert!(lock_of(&labels("00ff", &missing)).is_some());
        assert!(lock_of(&labels("00fe", &missing)).is_none(), "the name must carry the ID");
        assert!(lock_of(&labels("../x", &missing)).is_none());
        assert!(lock_of(&labels("00ff", Path::new("kiln-owner-00ff.lock"))).is_none());
        assert!(lock_of(&HashMap::new()).is_none());
    }
}
