//! Files (feature `files`): Actionhero's `sendFile` on tower-http's file serving
//! (what [`ServeFile`](tower_http::services::ServeFile) and
//! [`ServeDir`](tower_http::services::ServeDir) do), searching several public roots.
//!
//! ```
//! use axum::{Router, extract::Path, routing::get};
//! use http::Response;
//! use tower_context::files::{FileBody, PublicFiles};
//! use tower_context::{Context, ContextLayer, HttpError};
//!
//! async fn asset(ctx: Context, Path(path): Path<String>) -> Result<Response<FileBody>, HttpError> {
//!     ctx.send_file(path).await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/static/{*path}", get(asset))
//!     .layer(ContextLayer::new().public_files(PublicFiles::new(["public", "vendor/public"])));
//! ```
//!
//! What a request gets, in Actionhero's terms and beyond:
//! - **Where the file is.** The roots are searched in order and the first that has
//!   the file serves it. A path that leaves a root (a `..` above it, an absolute
//!   path elsewhere) tries the next root, and so is never served from outside them;
//!   a NUL byte is refused. A directory serves its `index.html`. Anything else (no
//!   such file, a socket or a device) is the error `404 that file is not found`,
//!   rendered by the layer like every other error.
//! - **The head.** `Content-Type` by the file's extension, `Content-Length`,
//!   `Last-Modified`, a strong `ETag` and `Accept-Ranges: bytes` (tower-http's), and
//!   `Cache-Control: max-age=60, must-revalidate, public` (Actionhero's) unless the
//!   app set one through the context ([`Context::set_header`](crate::Context::set_header)
//!   before or after `send_file`, as edits are applied last; an `append_header`
//!   made after the call adds to the default rather than replacing it) or chose
//!   another default with [`PublicFiles::cache_control`]. `HEAD` gets the head
//!   alone.
//! - **Conditions and ranges,** evaluated in RFC 9110's order (§13.2.2):
//!   1. `If-Match`, else `If-Unmodified-Since`: when it fails, `412 Precondition
//!      Failed`.
//!   2. `If-None-Match`, else `If-Modified-Since`: when the client's copy is
//!      current, `304 Not Modified` (with `ETag`, `Last-Modified` and
//!      `Cache-Control`). As in Actionhero (and Koa's `fresh`), a request that says
//!      `Cache-Control: no-cache` skips this step and gets the file. Actionhero
//!      reads `If-Modified-Since` first; the RFC's order, kept here, lets an entity
//!      tag decide when both are sent.
//!   3. `Range` on a `GET` (one range in bytes; a request for several, or a `Range`
//!      sent on more than one line, gets the whole file, `200`, and a unit other
//!      than `bytes` is ignored):
//!      `206 Partial Content` with `Content-Range`, or `416 Range Not Satisfiable`
//!      with `Content-Range: bytes */LENGTH` when it lies outside the file or does
//!      not parse. A suffix longer than the file (`bytes=-5000` of 100 bytes) is
//!      the whole file as a `206` (RFC 9110 §14.1.3; tower-http alone answers 416),
//!      and a range of an empty file is ignored (`200`, empty).
//!      **`If-Range`**, which neither Actionhero nor tower-http reads, guards it: a
//!      validator that names the current version (the `ETag`, compared strongly, or
//!      exactly the `Last-Modified` date of a file last changed at least a second
//!      ago, RFC 9110 §8.8.2.2) lets the range through (`206`, or `416`);
//!      a stale, weak or malformed one gets the whole file (`200`), so a resumed
//!      download never splices two versions. Without `Range`, `If-Range` is
//!      ignored.
//!
//!   Conditions apply to `GET` and `HEAD`, ranges to `GET` only (a `HEAD` gets the
//!   whole file's head); a handler for another method that sends a file sends it
//!   whole.
//! - **Precompressed variants,** when asked for ([`PublicFiles::precompressed_gzip`]
//!   and its siblings for `br`, `deflate` and `zstd`): `site.css.gz` beside
//!   `site.css` goes to a client whose `Accept-Encoding` takes gzip, chosen as
//!   tower-http chooses (the highest weight among the variants that exist, else the
//!   file itself), with `Content-Encoding` and the file's own `Content-Type`. The
//!   variant is a representation of its own: its `ETag`, `Last-Modified`, length
//!   and ranges, and the rules above apply to it. A file's answer from such roots
//!   (`200`, `206`, `416`, and `304` too) says `Vary: accept-encoding`. The search opens the variants
//!   the request names in the same trip to the blocking pool as the file.
//! - **The rest of the layer still applies:** `Set-Cookie` for the jar's changes,
//!   deferred edits, after-hooks, lifecycle events. The file's body is tower-http's
//!   stream, not copied or boxed again.
//!
//! Over the chat WebSocket (feature `ws`), `{"event": "file", "file": PATH}` answers
//! with the file's content: see `chat::ws::WebSocketChat::public_files`.

mod found;
mod if_range;
mod path;
mod precompressed;
mod send;
#[cfg(feature = "ws")]
pub(crate) mod socket;

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_http::services::fs::ServeFileSystemResponseBody;

use crate::error::HttpError;
use found::Found;
use path::{Root, SmallPath};
use precompressed::{Coding, Codings};

/// The public roots files are served from, searched in order: see the
/// [module docs](self).
///
/// A cheap handle (one `Arc`). Give it to the layer for [`Context::send_file`], or
/// call [`PublicFiles::send_file`] with any context.
///
/// ```
/// use http::HeaderValue;
/// use tower_context::ContextLayer;
/// use tower_context::files::PublicFiles;
///
/// // Relative roots are taken from the current directory, now.
/// let files = PublicFiles::new(["public", "/usr/share/app/public"])
///     .cache_control(HeaderValue::from_static("public, max-age=3600"));
/// let layer = ContextLayer::new().public_files(files);
/// ```
///
/// [`Context::send_file`]: crate::Context::send_file
#[derive(Clone)]
pub struct PublicFiles(Arc<Settings>);

#[derive(Clone)]
struct Settings {
    roots: Vec<Root>,
    cache_control: Option<HeaderValue>,
    /// The precompressed variants looked for beside a file.
    precompressed: Codings,
}

/// Actionhero's `Cache-Control` for files.
const CACHE_CONTROL: &str = "max-age=60, must-revalidate, public";

/// The text of the 404 for a file that is not there (Actionhero's).
pub(crate) const NOT_FOUND: &str = "that file is not found";

impl PublicFiles {
    /// Files from `roots`, searched in the order given. A relative root is taken from
    /// the current directory at this call.
    pub fn new<I, P>(roots: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let roots = roots.into_iter().map(|root| Root::new(root.as_ref())).collect();
        PublicFiles(Arc::new(Settings {
            roots,
            cache_control: Some(HeaderValue::from_static(CACHE_CONTROL)),
            precompressed: Codings::default(),
        }))
    }

    /// The `Cache-Control` a file response gets when the app sets none:
    /// `max-age=60, must-revalidate, public` unless changed here; `None` sends none.
    #[must_use]
    pub fn cache_control(mut self, value: impl Into<Option<HeaderValue>>) -> Self {
        Arc::make_mut(&mut self.0).cache_control = value.into();
        self
    }

    /// Also sends `FILE.gz`, when it exists beside the file, to a client that
    /// accepts gzip (tower-http's negotiation: the highest `q` among the variants
    /// that exist, else the file itself), with `Content-Encoding: gzip`. A file's
    /// answer from these roots (`200`, `206`, `416`, `304`) then says `Vary:
    /// accept-encoding`. `Content-Type` is the file's; `ETag`, `Last-Modified`,
    /// conditions and ranges are the variant's.
    ///
    /// ```
    /// use tower_context::files::PublicFiles;
    ///
    /// let files = PublicFiles::new(["public"]).precompressed_gzip().precompressed_br();
    /// ```
    #[must_use]
    pub fn precompressed_gzip(self) -> Self {
        self.precompressed(Coding::Gzip)
    }

    /// As [`precompressed_gzip`](Self::precompressed_gzip), for `FILE.br` and `br`.
    #[must_use]
    pub fn precompressed_br(self) -> Self {
        self.precompressed(Coding::Brotli)
    }

    /// As [`precompressed_gzip`](Self::precompressed_gzip), for `FILE.zz` and
    /// `deflate`.
    #[must_use]
    pub fn precompressed_deflate(self) -> Self {
        self.precompressed(Coding::Deflate)
    }

    /// As [`precompressed_gzip`](Self::precompressed_gzip), for `FILE.zst` and
    /// `zstd`.
    #[must_use]
    pub fn precompressed_zstd(self) -> Self {
        self.precompressed(Coding::Zstd)
    }

    fn precompressed(mut self, coding: Coding) -> Self {
        let settings = Arc::make_mut(&mut self.0);
        settings.precompressed = settings.precompressed.with(coding);
        self
    }

    /// The roots, in search order, as they are searched (absolute, without `.` or
    /// `..`).
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        self.0.roots.iter().map(Root::path)
    }

    /// The file `requested` names: the first root that has it as a regular file (a
    /// directory's `index.html` standing for it), opened, with its metadata and those
    /// of its `variants` that exist beside it. One trip to the blocking pool, whatever
    /// the number of roots.
    async fn find(&self, requested: &Path, variants: Codings) -> Result<Option<Found>, HttpError> {
        let settings = self.0.clone();
        let first = settings.roots.first().and_then(|root| root.candidate(requested));
        // The path itself is needed inside the task only when there are more roots to
        // try after the first.
        let rest = (settings.roots.len() > 1).then(|| SmallPath::new(requested, requested.as_os_str().len()));
        let search = tokio::task::spawn_blocking(move || {
            if let Some(found) = first.and_then(|candidate| Found::at(candidate, variants)) {
                return Some(found);
            }
            let requested = rest?;
            let requested = requested.as_path();
            settings.roots[1..]
                .iter()
                .filter_map(|root| root.candidate(requested))
                .find_map(|candidate| Found::at(candidate, variants))
        });
        search.await.map_err(|err| HttpError::from_error(io::Error::other(err)))
    }
}

impl fmt::Debug for PublicFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicFiles")
            .field("roots", &self.0.roots)
            .field("cache_control", &self.0.cache_control)
            .field("precompressed", &self.0.precompressed.iter().collect::<Vec<_>>())
            .finish()
    }
}

pin_project! {
    /// The body of a file response: tower-http's file stream (read in 64 KiB chunks),
    /// passed through as it is.
    pub struct FileBody {
        #[pin]
        inner: ServeFileSystemResponseBody,
    }
}

impl FileBody {
    fn new(inner: ServeFileSystemResponseBody) -> Self {
        FileBody { inner }
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl fmt::Debug for FileBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileBody")
    }
}
