//! Packing a local context directory into the `.tar.gz` that `kiln build` and `kiln run`
//! upload (`POST /uploads`), as `az acr build` packs its `build_archive_<hex>.tar.gz` (§5.4).
//!
//! What goes in is decided by the worker's context code (`kiln_worker::build::context`), the one
//! that later streams the extracted context to Docker, so the client and the engine cannot
//! disagree about `.dockerignore`: `!` exceptions, `**`, later rules win, `<Dockerfile>.dockerignore`
//! next to the Dockerfile, and a Dockerfile outside the context added at the archive root as
//! `<32-hex>_<basename>`. On top of Docker's rules the client always leaves out the top-level
//! version-control files az leaves out ([`VCS_EXCLUDES`]); an ignore file can re-include them
//! (`!.git/**`) because they are read as patterns in front of its own.
//!
//! The archive is written to a temporary file rather than streamed, so the upload knows its
//! length (the server answers 400 to a short body) and can show real progress.

use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use kiln_worker::build::context::{self, ContextError};

/// Top-level files and directories `az acr build` never uploads unless re-included.
pub const VCS_EXCLUDES: [&str; 7] =
    [".git", ".gitignore", ".hg", ".hgignore", ".svn", ".bzr", "bzrignore"];

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("cannot write the context archive: {0}")]
    Write(#[source] io::Error),
}

/// A packed context, deleted when dropped.
#[derive(Debug)]
pub struct Packed {
    /// The `.tar.gz` on disk.
    pub file: tempfile::NamedTempFile,
    /// Its length in bytes.
    pub size: u64,
    /// Entries in the archive.
    pub entries: u64,
    /// The Dockerfile's path inside the archive (`None` when packing without one).
    pub dockerfile: Option<String>,
}

impl Packed {
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Packs `root` (and `dockerfile`, which may live outside it) into a temporary `.tar.gz`.
/// `prefix` names the temporary file (`build_archive_` / `run_archive_`, as az does).
pub fn pack(root: &Path, dockerfile: Option<&Path>, prefix: &str) -> Result<Packed, PackError> {
    let prepared = context::prepare_with(root, dockerfile, &VCS_EXCLUDES)?;
    let file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tar.gz")
        .tempfile()
        .map_err(PackError::Write)?;
    let out = file.reopen().map_err(PackError::Write)?;
    let mut gz = GzEncoder::new(BufWriter::new(out), Compression::default());
    // By reference, so the gzip trailer can still be written afterwards.
    let entries = context::write_tar(&prepared, &mut gz)?;
    let mut buffered = gz.finish().map_err(PackError::Write)?;
    buffered.flush().map_err(PackError::Write)?;
    drop(buffered);
    let size = file.as_file().metadata().map_err(PackError::Write)?.len();
    let dockerfile = dockerfile.map(|_| prepared.dockerfile_param().to_string());
    Ok(Packed { file, size, entries, dockerfile })
}

/// The Dockerfile `-f` names for a local context: relative to the context, as az resolves it
/// (an absolute path stays as it is).
pub fn resolve_dockerfile(context: &Path, dockerfile: &Path) -> PathBuf {
    context.join(dockerfile)
}

/// `12.3 MiB`: sizes as az prints them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::fs;
    use std::fs::File;

    fn write(path: &Path, content: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content).unwrap();
    }

    /// Entry names and contents of a packed archive, in archive order.
    fn entries(packed: &Packed) -> Vec<(String, String)> {
        let file = File::open(packed.path()).unwrap();
        let mut archive = tar::Archive::new(GzDecoder::new(file));
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            io::Read::read_to_string(&mut entry, &mut content).unwrap();
            out.push((name, content));
        }
        out
    }

    fn names(packed: &Packed) -> Vec<String> {
        entries(packed).into_iter().map(|(n, _)| n).collect()
    }

    /// A context with every VCS leftover az excludes, plus ordinary files.
    fn vcs_context(root: &Path) {
        write(&root.join("Dockerfile"), "FROM scratch\n");
        write(&root.join("main.go"), "package main\n");
        write(&root.join(".git/config"), "[core]\n");
        write(&root.join(".gitignore"), "target\n");
        write(&root.join(".hg/store"), "x");
        write(&root.join(".hgignore"), "x");
        write(&root.join(".svn/entries"), "x");
        write(&root.join(".bzr/branch"), "x");
        write(&root.join("bzrignore"), "x");
        // Only the top level is excluded, as in az.
        write(&root.join("vendor/lib/.git/HEAD"), "ref\n");
    }

    #[test]
    fn vcs_files_are_left_out_at_the_top_level_only() {
        let dir = tempfile::tempdir().unwrap();
        vcs_context(dir.path());
        let packed = pack(dir.path(), Some(&dir.path().join("Dockerfile")), "t_").unwrap();
        assert_eq!(
            names(&packed),
            [
                "Dockerfile",
                "main.go",
                "vendor/",
                "vendor/lib/",
                "vendor/lib/.git/",
                "vendor/lib/.git/HEAD"
            ]
        );
        assert_eq!(packed.dockerfile.as_deref(), Some("Dockerfile"));
        assert_eq!(packed.size, fs::metadata(packed.path()).unwrap().len());
        assert_eq!(packed.entries, 6);
    }

    #[test]
    fn dockerignore_rules_apply_and_can_bring_vcs_files_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        vcs_context(root);
        write(&root.join("build/out.bin"), "x");
        write(&root.join("docs/a.md"), "x");
        write(&root.join("docs/keep.md"), "x");
        write(&root.join(".dockerignore"), "build\ndocs/*.md\n!docs/keep.md\nvendor\n!.git/**\n");
        let packed = pack(root, Some(&root.join("Dockerfile")), "t_").unwrap();
        assert_eq!(
            names(&packed),
            [".dockerignore", ".git/config", "Dockerfile", "docs/", "docs/keep.md", "main.go"]
        );
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("Dockerfile.prod"), "FROM scratch\n");
        write(&root.join("Dockerfile.prod.dockerignore"), "secret.txt\n");
        write(&root.join(".dockerignore"), "main.go\n");
        write(&root.join("main.go"), "x");
        write(&root.join("secret.txt"), "x");
        let packed = pack(root, Some(&root.join("Dockerfile.prod")), "t_").unwrap();
        assert_eq!(
            names(&packed),
            [".dockerignore", "Dockerfile.prod", "Dockerfile.prod.dockerignore", "main.go"]
        );
    }

    #[test]
    fn dockerfile_outside_the_context_is_added_at_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        write(&ctx.join("app.txt"), "x");
        write(&dir.path().join("docker/Dockerfile"), "FROM busybox\n");
        let dockerfile = resolve_dockerfile(&ctx, Path::new("../docker/Dockerfile"));
        let packed = pack(&ctx, Some(&dockerfile), "t_").unwrap();
        let entries = entries(&packed);
        let param = packed.dockerfile.clone().unwrap();
        let (hex, base) = param.split_once('_').unwrap();
        assert_eq!(base, "Dockerfile");
        assert_eq!(hex.len(), 32);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{hex}");
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        // The stream's .dockerignore names the added file so `COPY . .` never sees it.
        // With no `.dockerignore` in the context one is written after the walk, naming itself.
        assert_eq!(names, ["app.txt", ".dockerignore", param.as_str()]);
        assert_eq!(entries[1].1, format!(".dockerignore\n{param}\n"));
        assert_eq!(entries[2].1, "FROM busybox\n");
    }

    #[test]
    fn a_run_context_needs_no_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("acb.yaml"), "steps: []\n");
        write(&root.join(".git/HEAD"), "x");
        write(&root.join("tmp/x"), "x");
        write(&root.join(".dockerignore"), "tmp\n");
        let packed = pack(root, None, "run_archive_").unwrap();
        assert_eq!(names(&packed), [".dockerignore", "acb.yaml"]);
        assert_eq!(packed.dockerfile, None);
        assert!(packed.path().file_name().unwrap().to_string_lossy().starts_with("run_archive_"));
    }

    #[test]
    fn a_missing_dockerfile_or_context_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = pack(dir.path(), Some(&dir.path().join("Dockerfile")), "t_").unwrap_err();
        assert!(err.to_string().contains("cannot find the Dockerfile"), "{err}");
        let err = pack(&dir.path().join("nope"), None, "t_").unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn ignore_file_errors_name_the_files_own_line() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join(".dockerignore"), "a\n!\n");
        let err = pack(dir.path(), None, "t_").unwrap_err();
        assert!(err.to_string().contains("line 2 of the ignore file"), "{err}");
    }

    #[test]
    fn sizes_read_like_az() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(12_897_485), "12.3 MiB");
    }
}
