//! The SSH identity a run's git fetches use: the task's own key (`--ssh-key-file`, sealed with
//! the run) or else the server's (`kiln serve --git-ssh-key`), with the server's known_hosts.
//! The files are read for each run, so a host added to known_hosts counts from the next run on,
//! without a restart.

use std::path::{Path, PathBuf};

use kiln_plan::plan::GitSsh;

/// A file of the identity could not be read. The cause is in the message and not a `source`,
/// so the CLI prints it once.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path} (git SSH identity): {cause}")]
pub struct GitSshError {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

/// Where the server's part of the identity lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitSshFiles {
    /// The server's private key, for tasks without their own.
    pub private_key: Option<PathBuf>,
    /// The hosts SSH fetches may reach; a missing file lists none.
    pub known_hosts: Option<PathBuf>,
}

impl GitSshFiles {
    /// The identity of a run whose task has `task_key`: that key, else the server's; `None`
    /// without either (an SSH fetch then says how to configure one).
    pub fn identity(&self, task_key: Option<String>) -> Result<Option<GitSsh>, GitSshError> {
        let private_key = match (task_key, &self.private_key) {
            (Some(key), _) => key,
            (None, Some(path)) => read(path)?,
            (None, None) => return Ok(None),
        };
        let (known_hosts, known_hosts_file) = match &self.known_hosts {
            Some(path) => match read(path) {
                Err(e) if e.cause.kind() == std::io::ErrorKind::NotFound => {
                    (String::new(), path.display().to_string())
                }
                other => (other?, path.display().to_string()),
            },
            None => (String::new(), "a known_hosts file (kiln serve --git-known-hosts)".into()),
        };
        Ok(Some(GitSsh { private_key, known_hosts, known_hosts_file }))
    }
}

fn read(path: &Path) -> Result<String, GitSshError> {
    std::fs::read_to_string(path).map_err(|cause| GitSshError { path: path.to_path_buf(), cause })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_ssh_identity_prefers_the_tasks_key_and_reads_the_files_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&key, "server-key").unwrap();
        let files =
            GitSshFiles { private_key: Some(key.clone()), known_hosts: Some(known_hosts.clone()) };
        let ssh = files.identity(None).unwrap().unwrap();
        assert_eq!((ssh.private_key.as_str(), ssh.known_hosts.as_str()), ("server-key", ""));
        std::fs::write(&known_hosts, "h ssh-ed25519 AAAA\n").unwrap();
        let ssh = files.identity(Some("task-key".into())).unwrap().unwrap();
        assert_eq!(ssh.private_key, "task-key");
        assert_eq!(ssh.known_hosts, "h ssh-ed25519 AAAA\n");
        assert_eq!(ssh.known_hosts_file, known_hosts.display().to_string());

        let none = GitSshFiles { private_key: None, known_hosts: Some(known_hosts) };
        assert_eq!(none.identity(None).unwrap(), None);
        std::fs::remove_file(&key).unwrap();
        let err = files.identity(None).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot read {}", key.display())), "{err}");
    }
}
