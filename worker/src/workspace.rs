//! The run's workspace: a host directory, bind-mounted at `/workspace` in every step.
//!
//! ACR shares one named volume between the steps of a run and pre-fills it with the build
//! context (reference §8.3 step 1). kiln uses a host directory under the caller's workspace
//! root instead, one per run, so the control plane can put the context there with plain file
//! copies and read results back the same way. It is a bind mount, so the engine must see the
//! worker's file system (a local engine); remote engines would need a volume instead.

use std::io;
use std::path::{Path, PathBuf};

use kiln_plan::plan::RunId;

use crate::names;

/// Where the workspace appears inside every step container.
pub const CONTAINER_PATH: &str = "/workspace";

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot create workspace {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("workspace {0} already exists; is another run using the same run ID?")]
    Exists(PathBuf),
    #[error("cannot copy context {from} into the workspace: {source}")]
    CopyContext {
        from: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove workspace {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("workspace task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Debug)]
pub(crate) struct Workspace {
    host_dir: PathBuf,
}

impl Workspace {
    /// Creates `<root>/kiln-<run>` (it must not exist yet) and copies `context` into it, or
    /// with `move_context` moves it there (a rename; a copy across file systems).
    pub(crate) async fn create(
        root: &Path,
        run: &RunId,
        context: Option<&Path>,
        move_context: bool,
    ) -> Result<Workspace, WorkspaceError> {
        let root = root.to_path_buf();
        let name = names::workspace_dir(run);
        let context = context.map(Path::to_path_buf);
        tokio::task::spawn_blocking(move || {
            let create_err = |path: &Path| {
                let path = path.to_path_buf();
                move |source| WorkspaceError::Create { path, source }
            };
            std::fs::create_dir_all(&root).map_err(create_err(&root))?;
            // The engine resolves bind sources on its side: they must be absolute.
            let root = root.canonicalize().map_err(create_err(&root))?;
            let host_dir = root.join(name);
            match std::fs::create_dir(&host_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(WorkspaceError::Exists(host_dir));
                }
                Err(source) => {
                    return Err(WorkspaceError::Create { path: host_dir, source });
                }
            }
            if let Some(from) = context {
                // A directory renames onto an empty one; across file systems it is copied.
                let moved = move_context
                    && match std::fs::rename(&from, &host_dir) {
                        Ok(()) => true,
                        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => false,
                        Err(source) => {
                            return Err(WorkspaceError::CopyContext { from, source });
                        }
                    };
                if !moved {
                    copy_tree(&from, &host_dir)
                        .map_err(|source| WorkspaceError::CopyContext { from, source })?;
                }
            }
            Ok(Workspace { host_dir })
        })
        .await?
    }

    pub(crate) fn host_dir(&self) -> &Path {
        &self.host_dir
    }

    /// The `binds` entry mounting the workspace at [`CONTAINER_PATH`].
    pub(crate) fn bind(&self) -> String {
        format!("{}:{CONTAINER_PATH}", self.host_dir.display())
    }

    pub(crate) async fn remove(self) -> Result<(), WorkspaceError> {
        let path = self.host_dir;
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(WorkspaceError::Remove { path, source }),
        })
        .await?
    }
}

/// A step's working directory inside its container: relative paths are relative to the
/// workspace, as in ACR (`workingDirectory: src` ⇒ `/workspace/src`).
pub(crate) fn container_working_dir(dir: &str) -> String {
    if dir.starts_with('/') {
        dir.to_string()
    } else if dir.is_empty() || dir == "." {
        CONTAINER_PATH.to_string()
    } else {
        format!("{CONTAINER_PATH}/{}", dir.trim_start_matches("./").trim_end_matches('/'))
    }
}

/// Copies a directory tree, keeping symlinks as symlinks (a context may contain links that
/// point outside it, which must not be followed) and skipping sockets and other special files.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_dirs_resolve_against_the_workspace() {
        assert_eq!(container_working_dir("/src"), "/src");
        assert_eq!(container_working_dir("src"), "/workspace/src");
        assert_eq!(container_working_dir("./src/"), "/workspace/src");
        assert_eq!(container_working_dir(""), "/workspace");
        assert_eq!(container_working_dir("."), "/workspace");
    }

    #[tokio::test]
    async fn context_is_copied_and_workspace_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        let context = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(context.path().join("sub")).expect("mkdir");
        std::fs::write(context.path().join("sub/file.txt"), b"hello").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", context.path().join("link")).expect("link");

        let run = RunId::new("ws-unit");
        let ws = Workspace::create(root.path(), &run, Some(context.path()), false)
            .await
            .expect("workspace");
        assert!(ws.host_dir().is_absolute());
        assert_eq!(std::fs::read(ws.host_dir().join("sub/file.txt")).expect("copied"), b"hello");
        assert_eq!(
            std::fs::read_link(ws.host_dir().join("link")).expect("link kept"),
            Path::new("/etc/passwd")
        );
        assert!(ws.bind().ends_with(":/workspace"));

        let again = Workspace::create(root.path(), &run, None, false).await;
        assert!(matches!(again, Err(WorkspaceError::Exists(_))));

        let dir = ws.host_dir().to_path_buf();
        ws.remove().await.expect("removed");
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_scratch_context_is_moved_not_copied() {
        let root = tempfile::tempdir().expect("tempdir");
        let scratch = root.path().join("ctx-ws-move");
        std::fs::create_dir_all(scratch.join("sub")).expect("mkdir");
        std::fs::write(scratch.join("sub/file.txt"), b"hello").expect("write");
        let run = RunId::new("ws-move");
        let ws =
            Workspace::create(root.path(), &run, Some(&scratch), true).await.expect("workspace");
        assert_eq!(std::fs::read(ws.host_dir().join("sub/file.txt")).expect("moved"), b"hello");
        assert!(!scratch.exists(), "the context is on disk once");
        ws.remove().await.expect("removed");
    }
}
