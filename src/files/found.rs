//! The file a root search found (and its precompressed variants), opened: its
//! descriptor and metadata come from the search's one trip to the blocking pool, and tower-http's `ServeDir` reads them
//! through its `Backend` trait instead of opening the file and reading its metadata
//! again (two more trips, which a bare `ServeFile` pays).

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::future::{Ready, ready};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File as BackendFile};

use super::path::{INDEX, SmallPath};
use super::precompressed::{Coding, Codings};

/// A regular file found under a root, open for reading, with the precompressed
/// variants of it that were asked for and exist.
pub(super) struct Found {
    pub(super) path: SmallPath,
    pub(super) file: File,
    pub(super) meta: Metadata,
    pub(super) variants: Vec<Variant>,
}

/// A precompressed variant of a found file (`site.css.gz`), open for reading (its
/// descriptor is taken when `ServeDir` opens it).
pub(super) struct Variant {
    coding: Coding,
    file: Option<File>,
    meta: Metadata,
}

impl Found {
    /// The regular file at `candidate`, or its `index.html` when it is a directory,
    /// opened, with those of its `variants` that exist as regular files. Runs on the
    /// blocking pool.
    ///
    /// The path is looked at first, so only what looked like a regular file is
    /// opened (opening a device can do things); it is opened without waiting (a FIFO
    /// swapped in after the look cannot stall the thread) and what was opened is
    /// checked again, so a file replaced between the look and the open is never
    /// served unless it is itself a regular file.
    pub(super) fn at(mut candidate: SmallPath, variants: Codings) -> Option<Found> {
        let mut meta = std::fs::metadata(candidate.as_path()).ok()?;
        if meta.is_dir() {
            candidate.push(OsStr::new(INDEX));
            meta = std::fs::metadata(candidate.as_path()).ok()?;
        }
        let (file, meta) = open_regular(candidate.as_path(), &meta)?;
        let variants = variants
            .iter()
            .filter_map(|coding| {
                let mut name = candidate.as_path().as_os_str().to_owned();
                name.push(coding.extension());
                let path = Path::new(&name);
                let meta = std::fs::metadata(path).ok()?;
                let (file, meta) = open_regular(path, &meta)?;
                Some(Variant { coding, file: Some(file), meta })
            })
            .collect();
        Some(Found { path: candidate, file, meta, variants })
    }
}

/// The regular file at `path`, which was just looked at (`meta`), opened and checked
/// again.
fn open_regular(path: &Path, meta: &Metadata) -> Option<(File, Metadata)> {
    if !meta.is_file() {
        return None;
    }
    let file = open(path).ok()?;
    let meta = file.metadata().ok().filter(Metadata::is_file)?;
    Some((file, meta))
}

/// `path` opened for reading, without blocking on a FIFO.
fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No effect on a regular file's reads; opening a FIFO returns at once.
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// `ServeDir`'s file system for one request: the found file and its variants, with
/// the metadata read when they were opened.
///
/// `ServeDir` keeps a backend and clones it into each request's future; ours serves
/// one request, so the clone takes the descriptors with it (no `Arc` to share
/// them). Each descriptor is handed over at its first open; another open, or one on
/// a backend cloned twice, finds none (`send_file` searches again to serve twice).
pub(super) struct FoundBackend(Mutex<Option<Held>>);

struct Held {
    file: Option<File>,
    meta: Metadata,
    variants: Vec<Variant>,
    /// The found file's path, to tell its variants' paths from its own; `None` when
    /// `ServeDir` asks for no variant, and every path is the file.
    path: Option<SmallPath>,
}

impl FoundBackend {
    /// The backend for `found`; `path` is its path when `ServeDir` may ask for
    /// variants of it.
    pub(super) fn new(file: File, meta: Metadata, variants: Vec<Variant>, path: Option<SmallPath>) -> Self {
        FoundBackend(Mutex::new(Some(Held { file: Some(file), meta, variants, path })))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Held {
    /// The descriptor slot and metadata `path` names: the file's own, a variant's
    /// (the file's path and the coding's extension), or none (a variant that was not
    /// asked for or does not exist).
    fn named(&mut self, path: &Path) -> Option<(&mut Option<File>, &Metadata)> {
        let Some(own) = &self.path else { return Some((&mut self.file, &self.meta)) };
        let own = own.as_path().as_os_str().as_encoded_bytes();
        let asked = path.as_os_str().as_encoded_bytes();
        // `ServeDir` may have put `./` before the path it was given.
        if asked.ends_with(own) {
            return Some((&mut self.file, &self.meta));
        }
        self.variants.iter_mut().find_map(|variant| {
            let stem = asked.strip_suffix(variant.coding.extension().as_bytes())?;
            stem.ends_with(own).then_some((&mut variant.file, &variant.meta))
        })
    }
}

fn not_held() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file was found, or it was opened already")
}

impl Clone for FoundBackend {
    fn clone(&self) -> Self {
        FoundBackend(Mutex::new(self.held().take()))
    }
}

impl Backend for FoundBackend {
    type File = FoundFile;
    type Metadata = Metadata;
    type OpenFuture = Ready<io::Result<FoundFile>>;
    type MetadataFuture = Ready<io::Result<Metadata>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let mut held = self.held();
        let named = held.as_mut().and_then(|held| held.named(&path));
        ready(match named {
            Some((slot, meta)) => match slot.take() {
                Some(file) => Ok(FoundFile { handle: Handle::Idle(Some(file)), meta: meta.clone() }),
                None => Err(not_held()),
            },
            None => Err(not_held()),
        })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let mut held = self.held();
        let named = held.as_mut().and_then(|held| held.named(&path));
        ready(named.map(|(_, meta)| meta.clone()).ok_or_else(not_held))
    }
}

/// The found file as `ServeDir` reads it, with the metadata at hand.
///
/// It becomes tokio's file (reads on the blocking pool) at its first read; a `304`
/// never reads, so never pays for that. A seek before then is done in place: on a
/// regular file (the search checked it is one) an `lseek` to an offset only sets the
/// offset, with no I/O to wait for, where tokio's file would send it to the blocking
/// pool.
pub(super) struct FoundFile {
    handle: Handle,
    meta: Metadata,
}

enum Handle {
    /// Not read yet: the descriptor as opened (taken when it moves to tokio).
    Idle(Option<File>),
    Reading(tokio::fs::File),
}

impl FoundFile {
    /// Tokio's file, made at the first use that needs it.
    fn reading(&mut self) -> io::Result<Pin<&mut tokio::fs::File>> {
        if let Handle::Idle(idle) = &mut self.handle
            && let Some(file) = idle.take()
        {
            self.handle = Handle::Reading(tokio::fs::File::from_std(file));
        }
        match &mut self.handle {
            Handle::Reading(file) => Ok(Pin::new(file)),
            Handle::Idle(_) => Err(io::Error::other("the found file is closed")),
        }
    }
}

impl AsyncRead for FoundFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reading()?.poll_read(cx, buf)
    }
}

impl AsyncSeek for FoundFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match &mut self.handle {
            Handle::Idle(Some(file)) => file.seek(position).map(drop),
            _ => self.reading()?.start_seek(position),
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match &mut self.handle {
            Handle::Idle(Some(file)) => Poll::Ready(file.stream_position()),
            _ => self.reading()?.poll_complete(cx),
        }
    }
}

impl BackendFile for FoundFile {
    type Metadata = Metadata;
    type MetadataFuture<'a> = Ready<io::Result<Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        ready(Ok(self.meta.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    /// A file holding `0, 1, 2, ... 255, 0, 1, ...` (`len` bytes), and its backend.
    fn backend(name: &str, len: usize) -> (PathBuf, FoundBackend) {
        let path = std::env::temp_dir().join(format!("tower-context-found-{}-{name}", std::process::id()));
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        std::fs::File::create(&path).and_then(|mut file| file.write_all(&bytes)).expect("a temporary file");
        let found =
            Found::at(SmallPath::heap(path.clone()), Codings::default()).expect("the file just written");
        (path, FoundBackend::new(found.file, found.meta, found.variants, None))
    }

    #[tokio::test]
    async fn a_seek_before_the_first_read_lands_where_asked_and_reads_go_on_from_there() {
        let (path, backend) = backend("seek", 1000);
        let mut file = backend.open(PathBuf::new()).await.expect("the descriptor");
        assert_eq!(file.seek(SeekFrom::Start(300)).await.expect("a seek"), 300);
        let mut part = [0_u8; 4];
        file.read_exact(&mut part).await.expect("a read");
        assert_eq!(part, [44, 45, 46, 47]); // 300..304, modulo 256
        // Once reading, seeks go through tokio's file.
        assert_eq!(file.seek(SeekFrom::Start(10)).await.expect("a seek"), 10);
        file.read_exact(&mut part).await.expect("a read");
        assert_eq!(part, [10, 11, 12, 13]);
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).await.expect("the rest");
        assert_eq!(rest.len(), 1000 - 14);
        std::fs::remove_file(path).ok();
    }

    #[tokio::test]
    async fn the_descriptor_goes_with_the_clone_and_opens_once() {
        let (path, backend) = backend("clone", 10);
        let serving = backend.clone();
        assert_eq!(backend.open(PathBuf::new()).await.err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        let mut file = serving.open(PathBuf::new()).await.expect("the descriptor");
        assert_eq!(file.metadata().await.expect("metadata").len(), 10);
        let mut all = Vec::new();
        file.read_to_end(&mut all).await.expect("a read");
        assert_eq!(all, (0..10).collect::<Vec<u8>>());
        assert!(serving.open(PathBuf::new()).await.is_err(), "a second open finds no descriptor");
        // The metadata went with the clone too.
        assert_eq!(serving.metadata(PathBuf::new()).await.expect("metadata").len(), 10);
        assert!(backend.metadata(PathBuf::new()).await.is_err());
        std::fs::remove_file(path).ok();
    }
}
