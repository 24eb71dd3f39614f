//! The file a root search found, opened: its descriptor and metadata come from the
//! search's one trip to the blocking pool, and tower-http's `ServeDir` reads them
//! through its `Backend` trait instead of opening the file and reading its metadata
//! again (two more trips, which a bare `ServeFile` pays).

use std::fs::{File, Metadata, OpenOptions};
use std::future::{Ready, ready};
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File as BackendFile};

use super::path::INDEX;

/// A regular file found under a root, open for reading.
pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) meta: Metadata,
}

impl Found {
    /// The regular file at `candidate`, or its `index.html` when it is a directory,
    /// opened. Runs on the blocking pool.
    ///
    /// The path is looked at first, so nothing but a regular file is opened (opening
    /// a device can do things); it is opened without waiting (a FIFO swapped in after
    /// the look cannot stall the thread) and what was opened is checked again, so a
    /// file replaced between the look and the open is never served unless it is
    /// itself a regular file.
    pub(super) fn at(mut candidate: PathBuf) -> Option<Found> {
        let mut meta = std::fs::metadata(&candidate).ok()?;
        if meta.is_dir() {
            candidate.push(INDEX);
            meta = std::fs::metadata(&candidate).ok()?;
        }
        if !meta.is_file() {
            return None;
        }
        let file = open(&candidate).ok()?;
        let meta = file.metadata().ok().filter(Metadata::is_file)?;
        Some(Found { path: candidate, file, meta })
    }
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

/// `ServeDir`'s file system for one request: every path is the found file. Its
/// metadata is the one read when it was opened; the first open hands over the
/// descriptor, a second finds none (`send_file` searches again to serve twice).
#[derive(Clone)]
pub(super) struct FoundBackend(Arc<Slot>);

struct Slot {
    meta: Metadata,
    file: Mutex<Option<File>>,
}

impl FoundBackend {
    pub(super) fn new(file: File, meta: Metadata) -> Self {
        FoundBackend(Arc::new(Slot { meta, file: Mutex::new(Some(file)) }))
    }
}

impl Backend for FoundBackend {
    type File = FoundFile;
    type Metadata = Metadata;
    type OpenFuture = Ready<io::Result<FoundFile>>;
    type MetadataFuture = Ready<io::Result<Metadata>>;

    fn open(&self, _: PathBuf) -> Self::OpenFuture {
        let taken = self.0.file.lock().unwrap_or_else(PoisonError::into_inner).take();
        ready(match taken {
            Some(file) => Ok(FoundFile { file: tokio::fs::File::from_std(file), meta: self.0.meta.clone() }),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "the found file was opened already")),
        })
    }

    fn metadata(&self, _: PathBuf) -> Self::MetadataFuture {
        ready(Ok(self.0.meta.clone()))
    }
}

/// The found file as `ServeDir` reads it: tokio's file, with the metadata at hand.
pub(super) struct FoundFile {
    file: tokio::fs::File,
    meta: Metadata,
}

impl AsyncRead for FoundFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncSeek for FoundFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

impl BackendFile for FoundFile {
    type Metadata = Metadata;
    type MetadataFuture<'a> = Ready<io::Result<Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        ready(Ok(self.meta.clone()))
    }
}
