//! The build context as a tar stream: the context directory minus what `.dockerignore` excludes,
//! plus the Dockerfile when it lives outside the context.
//!
//! It is produced the way the Docker CLI produces it, because the engine's classic builder sees
//! nothing else: entries in lexical order (Go's `filepath.Walk` order, which also makes the stream
//! deterministic), owner and group 0, modes and modification times kept, symbolic links sent as
//! links (never followed, so a link cannot pull a file from outside the context into the image),
//! sockets and devices skipped. A Dockerfile outside the context is added at the root under a
//! generated name, `<hex>_<basename>` as `az acr build` does (§5.4), and that name is appended to
//! the `.dockerignore` inside the stream so the engine removes it after reading it and `COPY . .`
//! never sees it (the CLI's `AddDockerfileToBuildContext`).
//!
//! The tar is written on a blocking thread into a bounded channel that feeds the HTTP request
//! body, so a context of any size is sent with constant memory, and the engine's back-pressure
//! slows the walk down rather than buffering.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File, Metadata};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::dockerignore::{DockerIgnore, IgnoreError};

/// How much of the tar stream is handed to the HTTP body at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the tar writer and the request body.
const CHANNEL_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot find the Dockerfile {path}: {source}")]
    Dockerfile { path: PathBuf, source: io::Error },
    #[error("invalid ignore file {path}: {source}")]
    Ignore { path: PathBuf, source: IgnoreError },
    #[error("cannot read {path} for the build context: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("sending the build context failed: {0}")]
    Send(io::Error),
    #[error("the build context writer stopped unexpectedly: {0}")]
    Writer(String),
}

/// A context ready to be streamed.
#[derive(Debug)]
pub struct PreparedContext {
    root: PathBuf,
    ignore: DockerIgnore,
    /// The `dockerfile` build parameter: the Dockerfile's path inside the stream.
    dockerfile_param: String,
    /// The Dockerfile from outside the context, added at the root under `dockerfile_param`.
    outside: Option<OutsideDockerfile>,
}

#[derive(Debug)]
struct OutsideDockerfile {
    content: Vec<u8>,
    mtime: u64,
    /// What the stream's `.dockerignore` must contain: the context's own file (or a line naming
    /// itself, as the CLI writes when there is none) plus the generated name.
    dockerignore: Vec<u8>,
    dockerignore_mode: u32,
}

impl PreparedContext {
    /// The `dockerfile` parameter of the build request.
    pub fn dockerfile_param(&self) -> &str {
        &self.dockerfile_param
    }
}

/// Reads `.dockerignore` and decides where the Dockerfile goes. `root` is the context directory,
/// `dockerfile` the Dockerfile's path (both already confined to the workspace by the caller).
///
/// The ignore file is `<Dockerfile>.dockerignore` when that exists (BuildKit's and `az acr
/// build`'s rule, so one context can serve several Dockerfiles), else `<context>/.dockerignore`.
pub fn prepare(root: &Path, dockerfile: &Path) -> Result<PreparedContext, ContextError> {
    prepare_with(root, Some(dockerfile), &[])
}

/// [`prepare`] for a client packing a context to upload (`kiln build`, `kiln run`): the
/// Dockerfile is optional (a task-file run has none, so only `<context>/.dockerignore` applies),
/// and `default_excludes` are ignore patterns read *before* the ignore file's own, so the file's
/// `!` exceptions can re-include them (`az acr build`'s always-excluded `.git` & co., which
/// `!.git/**` brings back).
pub fn prepare_with(
    root: &Path,
    dockerfile: Option<&Path>,
    default_excludes: &[&str],
) -> Result<PreparedContext, ContextError> {
    let root = fs::canonicalize(root)
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| ContextError::NotADirectory { path: root.to_path_buf() })?;
    let dockerfile = dockerfile
        .map(|dockerfile| {
            fs::canonicalize(dockerfile)
                .and_then(|p| if p.is_file() { Ok(p) } else { Err(io::Error::other("not a file")) })
                .map_err(|source| ContextError::Dockerfile {
                    path: dockerfile.to_path_buf(),
                    source,
                })
        })
        .transpose()?;

    let context_ignore = root.join(".dockerignore");
    let specific = dockerfile.as_ref().map(|dockerfile| {
        let mut ignore_path = dockerfile.as_os_str().to_owned();
        ignore_path.push(".dockerignore");
        PathBuf::from(ignore_path)
    });
    let ignore_file = specific.into_iter().chain([context_ignore.clone()]).find(|p| p.is_file());
    let mut ignore_content = Vec::new();
    for pattern in default_excludes {
        ignore_content.extend_from_slice(pattern.as_bytes());
        ignore_content.push(b'\n');
    }
    if let Some(path) = &ignore_file {
        ignore_content.extend(
            fs::read(path).map_err(|source| ContextError::Read { path: path.clone(), source })?,
        );
    }
    let mut ignore = DockerIgnore::parse(&ignore_content).map_err(|source| {
        // Line numbers of the file itself, not of the defaults in front of it.
        let source = source.shifted_up(default_excludes.len());
        ContextError::Ignore { path: ignore_file.clone().unwrap_or(context_ignore.clone()), source }
    })?;

    let Some(dockerfile) = dockerfile else {
        ignore.keep_build_files(None);
        return Ok(PreparedContext {
            root,
            ignore,
            dockerfile_param: String::new(),
            outside: None,
        });
    };

    match dockerfile.strip_prefix(&root) {
        Ok(relative) => {
            let relative = relative.to_string_lossy().into_owned();
            ignore.keep_build_files(Some(&relative));
            Ok(PreparedContext { root, ignore, dockerfile_param: relative, outside: None })
        }
        Err(_) => {
            ignore.keep_build_files(None);
            let content = fs::read(&dockerfile)
                .map_err(|source| ContextError::Read { path: dockerfile.clone(), source })?;
            let modified = fs::metadata(&dockerfile).map(|m| mtime(&m)).unwrap_or(0);
            let base = dockerfile
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".to_string());
            // A name derived from the content, not a random one: the same inputs give the same
            // stream, and the engine never keeps the file anyway.
            // 32 hex digits, the length of the uuid hex `az acr build` uses.
            let mut hasher = DefaultHasher::new();
            content.hash(&mut hasher);
            base.hash(&mut hasher);
            let high = hasher.finish();
            high.hash(&mut hasher);
            let name = format!("{high:016x}{:016x}_{base}", hasher.finish());
            // The stream's `.dockerignore` is the context's own one, whichever file the patterns
            // came from, since that is the one the engine reads.
            let (mut dockerignore, dockerignore_mode) = match fs::symlink_metadata(&context_ignore)
            {
                Ok(meta) if meta.is_file() => (
                    fs::read(&context_ignore).map_err(|source| ContextError::Read {
                        path: context_ignore.clone(),
                        source,
                    })?,
                    meta.mode() & 0o7777,
                ),
                _ => (b".dockerignore".to_vec(), 0o600),
            };
            dockerignore.extend_from_slice(format!("\n{name}\n").as_bytes());
            Ok(PreparedContext {
                root,
                ignore,
                dockerfile_param: name,
                outside: Some(OutsideDockerfile {
                    content,
                    mtime: modified,
                    dockerignore,
                    dockerignore_mode,
                }),
            })
        }
    }
}

/// Writes the context as an uncompressed tar to `out`. Returns the number of entries written.
pub fn write_tar<W: Write>(context: &PreparedContext, out: W) -> Result<u64, ContextError> {
    let mut walker = Walker { context, tar: tar::Builder::new(out), count: 0, ignore_sent: false };
    walker.walk(&context.root, "")?;
    if let Some(outside) = &context.outside {
        if !walker.ignore_sent {
            walker.append_bytes(
                ".dockerignore",
                &outside.dockerignore,
                outside.dockerignore_mode,
                outside.mtime,
            )?;
        }
        walker.append_bytes(&context.dockerfile_param, &outside.content, 0o600, outside.mtime)?;
    }
    walker.tar.into_inner().and_then(|mut w| w.flush()).map_err(ContextError::Send)?;
    Ok(walker.count)
}

struct Walker<'a, W: Write> {
    context: &'a PreparedContext,
    tar: tar::Builder<W>,
    count: u64,
    /// Whether the stream's `.dockerignore` has been written (only tracked for an outside
    /// Dockerfile, whose name must be in it).
    ignore_sent: bool,
}

impl<W: Write> Walker<'_, W> {
    fn walk(&mut self, dir: &Path, prefix: &str) -> Result<(), ContextError> {
        let mut names = fs::read_dir(dir)
            .and_then(|entries| {
                entries.map(|e| e.map(|e| e.file_name())).collect::<Result<Vec<_>, _>>()
            })
            .map_err(|source| ContextError::Read { path: dir.to_path_buf(), source })?;
        // Byte order of names, as Go's walk.
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let path = dir.join(&name);
            let relative = format!("{prefix}{}", name.to_string_lossy());
            let read_err = |source| ContextError::Read { path: path.clone(), source };
            let meta = fs::symlink_metadata(&path).map_err(read_err)?;
            let file_type = meta.file_type();
            let ignore = &self.context.ignore;
            if ignore.is_excluded(&relative) {
                if file_type.is_dir() && ignore.may_include_below(&relative) {
                    self.walk(&path, &format!("{relative}/"))?;
                }
                continue;
            }
            let replaces_ignore = relative == ".dockerignore" && self.context.outside.is_some();
            if file_type.is_dir() {
                let mut header = header_for(&meta, tar::EntryType::Directory, 0);
                let dir_name = format!("{relative}/");
                self.tar
                    .append_data(&mut header, &dir_name, io::empty())
                    .map_err(ContextError::Send)?;
                self.count += 1;
                self.walk(&path, &dir_name)?;
            } else if replaces_ignore {
                // The context's `.dockerignore` plus the generated Dockerfile's name (a link or
                // directory of that name is replaced by the generated file).
                if let Some(outside) = &self.context.outside {
                    let mode = if file_type.is_file() { meta.mode() & 0o7777 } else { 0o600 };
                    self.append_bytes(&relative, &outside.dockerignore, mode, mtime(&meta))?;
                }
            } else if file_type.is_symlink() {
                let target = fs::read_link(&path).map_err(read_err)?;
                let mut header = header_for(&meta, tar::EntryType::Symlink, 0);
                self.tar
                    .append_link(&mut header, &relative, &target)
                    .map_err(ContextError::Send)?;
                self.count += 1;
            } else if file_type.is_file() {
                let file = File::open(&path).map_err(read_err)?;
                let mut header = header_for(&meta, tar::EntryType::Regular, meta.len());
                // A read error of the file and a write error of the stream both land here; name
                // the file, which is what a user can act on.
                self.tar.append_data(&mut header, &relative, file).map_err(read_err)?;
                self.count += 1;
            }
            // Anything else (sockets, pipes, devices) is skipped: Docker's CLI skips sockets, and
            // device nodes from a workspace have no business in an image.
        }
        Ok(())
    }

    fn append_bytes(
        &mut self,
        name: &str,
        content: &[u8],
        mode: u32,
        mtime: u64,
    ) -> Result<(), ContextError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(content.len() as u64);
        self.tar.append_data(&mut header, name, content).map_err(ContextError::Send)?;
        self.count += 1;
        if name == ".dockerignore" {
            self.ignore_sent = true;
        }
        Ok(())
    }
}

fn mtime(meta: &Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

fn header_for(meta: &Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(mtime(meta));
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(size);
    header
}

/// A `Write` that hands fixed-size chunks to the request body through a bounded channel.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading the context")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

type Chunk = Result<Bytes, io::Error>;
type Slot = Arc<Mutex<Option<mpsc::Receiver<Chunk>>>>;

/// The running tar writer behind a request body.
pub struct Upload {
    receiver: Slot,
    handle: tokio::task::JoinHandle<Result<u64, ContextError>>,
}

impl Upload {
    /// Waits for the writer and returns its outcome (entries written, or why it stopped). The
    /// body's receiving end is dropped first, so a writer blocked on an engine that stopped
    /// reading (the build failed early) ends at once instead of waiting forever.
    pub async fn finish(self) -> Result<u64, ContextError> {
        lock(&self.receiver).take();
        self.handle.await.map_err(|e| ContextError::Writer(e.to_string()))?
    }
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<mpsc::Receiver<Chunk>>> {
    // The lock is only held inside a poll; a poisoned lock still holds a usable receiver.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ContextError {
    /// The writer stopped because the engine stopped reading: the engine's error is the real one.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ContextError::Send(e) | ContextError::Read { source: e, .. } => {
                e.kind() == io::ErrorKind::BrokenPipe
            }
            _ => false,
        }
    }
}

/// Starts writing the tar on a blocking thread. The stream is the request body.
pub fn stream(context: PreparedContext) -> (impl Stream<Item = Chunk> + Send + 'static, Upload) {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        let result = write_tar(&context, writer);
        if let Err(e) = &result {
            // Fail the request body so the engine does not build a truncated context.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    let receiver: Slot = Arc::new(Mutex::new(Some(rx)));
    let slot = receiver.clone();
    let body = futures_util::stream::poll_fn(move |cx| match lock(&slot).as_mut() {
        Some(rx) => rx.poll_recv(cx),
        None => Poll::Ready(None),
    });
    (body, Upload { receiver, handle })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn write(path: &Path, content: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content).unwrap();
    }

    /// Entry name → (type, mode, content or link target).
    fn entries(tar_bytes: &[u8]) -> Vec<(String, char, u32, String)> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = match header.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                _ => 'f',
            };
            let mut content = String::new();
            if kind == 'l' {
                content = entry.link_name().unwrap().unwrap().to_string_lossy().into_owned();
            } else {
                entry.read_to_string(&mut content).unwrap();
            }
            assert_eq!(header.uid().unwrap(), 0);
            out.push((name, kind, header.mode().unwrap(), content));
        }
        out
    }

    fn tar_of(root: &Path, dockerfile: &Path) -> (String, Vec<(String, char, u32, String)>) {
        let prepared = prepare(root, dockerfile).unwrap();
        let mut buf = Vec::new();
        write_tar(&prepared, &mut buf).unwrap();
        (prepared.dockerfile_param().to_string(), entries(&buf))
    }

    #[test]
    fn honours_dockerignore_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("Dockerfile"), "FROM scratch\n");
        write(&root.join(".dockerignore"), "*.secret\nlogs\n!logs/keep.txt\n.dockerignore\n");
        write(&root.join("b.txt"), "b");
        write(&root.join("a.txt"), "a");
        write(&root.join("x.secret"), "no");
        write(&root.join("logs/drop.txt"), "no");
        write(&root.join("logs/keep.txt"), "yes");
        write(&root.join("sub/deep/file"), "deep");
        fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../a.txt", root.join("sub/link")).unwrap();

        let (param, got) = tar_of(root, &root.join("Dockerfile"));
        assert_eq!(param, "Dockerfile");
        let names: Vec<&str> = got.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "a.txt",
                "b.txt",
                "logs/keep.txt",
                "sub/",
                "sub/deep/",
                "sub/deep/file",
                "sub/link"
            ]
        );
        let by_name: BTreeMap<_, _> =
            got.iter().map(|(n, k, m, c)| (n.as_str(), (*k, *m, c.as_str()))).collect();
        assert_eq!(by_name["a.txt"], ('f', 0o755, "a"));
        assert_eq!(by_name["sub/link"], ('l', 0o777, "../a.txt"));
        assert_eq!(by_name["logs/keep.txt"].2, "yes");

        // Deterministic: a second stream is byte-identical.
        let prepared = prepare(root, &root.join("Dockerfile")).unwrap();
        let (mut one, mut two) = (Vec::new(), Vec::new());
        write_tar(&prepared, &mut one).unwrap();
        write_tar(&prepared, &mut two).unwrap();
        assert_eq!(one, two);
    }

    #[test]
    fn dockerfile_inside_an_excluded_directory_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join(".dockerignore"), "docker\n");
        write(&root.join("docker/Dockerfile"), "FROM scratch\n");
        write(&root.join("docker/other"), "no");
        let (param, got) = tar_of(root, &root.join("docker/Dockerfile"));
        assert_eq!(param, "docker/Dockerfile");
        let names: Vec<&str> = got.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(names, [".dockerignore", "docker/Dockerfile"]);
    }

    #[test]
    fn dockerfile_outside_the_context_gets_a_generated_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        write(&root.join("app.txt"), "app");
        write(&dir.path().join("build/Dockerfile.prod"), "FROM scratch\nCOPY . /\n");
        let (param, got) = tar_of(&root, &dir.path().join("build/Dockerfile.prod"));
        assert!(param.ends_with("_Dockerfile.prod"), "{param}");
        assert_eq!(param.len(), 32 + 1 + "Dockerfile.prod".len());
        let by_name: BTreeMap<_, _> =
            got.iter().map(|(n, _, _, c)| (n.as_str(), c.as_str())).collect();
        assert_eq!(by_name[param.as_str()], "FROM scratch\nCOPY . /\n");
        // The generated .dockerignore names itself and the Dockerfile, so the engine drops both.
        assert_eq!(by_name[".dockerignore"], format!(".dockerignore\n{param}\n"));
        assert_eq!(by_name["app.txt"], "app");
    }

    #[test]
    fn outside_dockerfile_extends_an_existing_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        write(&root.join(".dockerignore"), "*.tmp");
        write(&root.join("x.tmp"), "no");
        write(&dir.path().join("Dockerfile"), "FROM scratch\n");
        let (param, got) = tar_of(&root, &dir.path().join("Dockerfile"));
        let by_name: BTreeMap<_, _> =
            got.iter().map(|(n, _, _, c)| (n.as_str(), c.as_str())).collect();
        assert_eq!(by_name[".dockerignore"], format!("*.tmp\n{param}\n"));
        assert!(!by_name.contains_key("x.tmp"));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join(".dockerignore"), "a.txt\n");
        write(&root.join("web.Dockerfile.dockerignore"), "b.txt\n");
        write(&root.join("web.Dockerfile"), "FROM scratch\n");
        write(&root.join("a.txt"), "a");
        write(&root.join("b.txt"), "b");
        let (_, got) = tar_of(root, &root.join("web.Dockerfile"));
        let names: Vec<&str> = got.iter().map(|(n, ..)| n.as_str()).collect();
        assert!(names.contains(&"a.txt") && !names.contains(&"b.txt"), "{names:?}");
    }

    #[test]
    fn errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(matches!(
            prepare(root, &root.join("Dockerfile")),
            Err(ContextError::Dockerfile { .. })
        ));
        assert!(matches!(
            prepare(&root.join("missing"), &root.join("Dockerfile")),
            Err(ContextError::NotADirectory { .. })
        ));
        write(&root.join("Dockerfile"), "FROM scratch\n");
        write(&root.join(".dockerignore"), "!\n");
        let err = prepare(root, &root.join("Dockerfile")).unwrap_err();
        assert!(matches!(err, ContextError::Ignore { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_in_chunks() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("Dockerfile"), "FROM scratch\n");
        // Bigger than the channel can hold at once, so the writer must wait for the reader.
        let big = "x".repeat(CHUNK * (CHANNEL_DEPTH + 4));
        write(&root.join("big"), &big);
        let (body, upload) = stream(prepare(root, &root.join("Dockerfile")).unwrap());
        let chunks: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
        assert!(chunks.len() > CHANNEL_DEPTH);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK));
        assert_eq!(upload.finish().await.unwrap(), 2);
        let all: Vec<u8> = chunks.concat();
        let got = entries(&all);
        assert_eq!(got[1].3.len(), big.len());
    }

    /// An engine that stops reading must not leave the writer blocked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finishing_early_stops_the_writer() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("Dockerfile"), "FROM scratch\n");
        write(&root.join("big"), &"y".repeat(CHUNK * (CHANNEL_DEPTH + 4)));
        let (body, upload) = stream(prepare(root, &root.join("Dockerfile")).unwrap());
        let mut body = Box::pin(body);
        assert!(body.next().await.is_some());
        let err = upload.finish().await.unwrap_err();
        assert!(err.is_disconnect(), "{err}");
        assert!(body.next().await.is_none());
    }
}
