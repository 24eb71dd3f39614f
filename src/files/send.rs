//! `send_file`: the file a path names, served by tower-http's `ServeDir` (as
//! `ServeFile` would serve it) with the request's conditions and range, `If-Range`
//! on top, and Actionhero's `Cache-Control`.

use std::io;
use std::path::Path;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_http::services::ServeDir;
use tower_http::services::fs::ServeFileSystemResponseBody;

use super::found::{Found, FoundBackend};
use super::{FileBody, NOT_FOUND, PublicFiles, if_range};
use crate::context::Context;
use crate::error::HttpError;

impl Context {
    /// Sends the file `path` names from the layer's public roots
    /// ([`ContextLayer::public_files`](crate::ContextLayer::public_files)):
    /// Actionhero's `connection.sendFile`, with ranges, `If-Range` and the
    /// conditional requests of tower-http's file serving. The
    /// [`files` module docs](crate::files) say what each request gets.
    ///
    /// `path` is a file system path, relative to each root in turn (or absolute, inside
    /// one of them), not a URL: decode a URL path first, as axum's `Path` extractor does.
    ///
    /// ```
    /// use axum::{Router, extract::Path, routing::get};
    /// use http::{HeaderValue, Response, header};
    /// use tower_context::files::{FileBody, PublicFiles};
    /// use tower_context::{Context, ContextLayer, HttpError};
    ///
    /// async fn download(ctx: Context, Path(name): Path<String>) -> Result<Response<FileBody>, HttpError> {
    ///     // Deferred edits apply to the file's response as to any other.
    ///     ctx.set_header(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    ///     ctx.send_file(format!("downloads/{name}")).await
    /// }
    ///
    /// let app: Router = Router::new()
    ///     .route("/download/{name}", get(download))
    ///     .layer(ContextLayer::new().public_files(PublicFiles::new(["public"])));
    /// ```
    ///
    /// # Errors
    ///
    /// `404 that file is not found` when no root has it (or the process may not read
    /// it: the client learns nothing more); a 500 (its message not exposed) when the
    /// layer was given no `PublicFiles` at all or the file fails while being read.
    /// Return the error from the handler and the layer renders it.
    pub async fn send_file(&self, path: impl AsRef<Path>) -> Result<Response<FileBody>, HttpError> {
        match self.config().features.get::<PublicFiles>() {
            Some(files) => files.send_file(self, path).await,
            None => Err(HttpError::new(500).message(
                "send_file has no public roots: give the layer some with ContextLayer::public_files",
            )),
        }
    }
}

impl PublicFiles {
    /// Sends the file `path` names from these roots, for the request of `ctx`: what
    /// [`Context::send_file`] does with the layer's roots.
    ///
    /// ```
    /// use http::Response;
    /// use tower_context::files::{FileBody, PublicFiles};
    /// use tower_context::{Context, HttpError};
    ///
    /// async fn avatar(ctx: Context, avatars: PublicFiles, user: &str) -> Result<Response<FileBody>, HttpError> {
    ///     avatars.send_file(&ctx, format!("{user}.png")).await
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Context::send_file`].
    pub async fn send_file(
        &self,
        ctx: &Context,
        path: impl AsRef<Path>,
    ) -> Result<Response<FileBody>, HttpError> {
        let path = path.as_ref();
        let Some(found) = self.find(path).await? else {
            return Err(not_found());
        };
        let len = found.meta.len();
        let mut response = serve(found, file_request(ctx, true, len)).await?;
        if range_refused(ctx, &response) {
            // Rare: the first answer is dropped, and its descriptor with it.
            let Some(found) = self.find(path).await? else {
                return Err(not_found());
            };
            let len = found.meta.len();
            response = serve(found, file_request(ctx, false, len)).await?;
        }
        self.cache(ctx, response.status(), response.headers_mut());
        Ok(response.map(FileBody::new))
    }

    /// Adds the default `Cache-Control` to a file's answer (200, 206, 304) unless the
    /// response or the app's deferred edits already have one.
    fn cache(&self, ctx: &Context, status: StatusCode, headers: &mut HeaderMap) {
        let Some(value) = &self.0.cache_control else { return };
        let answered =
            matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED);
        if answered
            && !headers.contains_key(header::CACHE_CONTROL)
            && !ctx.edits_header(&header::CACHE_CONTROL)
        {
            headers.insert(header::CACHE_CONTROL, value.clone());
        }
    }
}

pub(super) fn not_found() -> HttpError {
    HttpError::new(404).message(NOT_FOUND)
}

/// The found file through tower-http's `ServeDir`, reading it through
/// [`FoundBackend`] (no second open or metadata read): a response, or the error for
/// a file that cannot be read (500).
pub(super) async fn serve(
    found: Found,
    request: Request<()>,
) -> Result<Response<ServeFileSystemResponseBody>, HttpError> {
    let Found { path, file, meta } = found;
    // `ServeDir` joins the request's path ("/", so nothing) to its base: the found
    // file's own path, which names the file's type as `ServeFile` would.
    let backend = FoundBackend::new(file, meta);
    // Several ranges get the whole file (200), which RFC 9110 allows, rather than a
    // 416 that would say the ranges lie outside it.
    let mut service = ServeDir::with_backend(path.as_path(), backend).ignore_multi_range_requests(true);
    match service.try_call(request).await {
        Ok(response) if response.status() != StatusCode::NOT_FOUND => Ok(response),
        Ok(_) => Err(not_found()),
        Err(err) if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) => {
            Err(not_found())
        }
        Err(err) => Err(HttpError::new(500).message("the file could not be read").with_source(err)),
    }
}

/// The request `ServeDir` answers for a file of `len` bytes: `GET` or `HEAD`, with
/// the request's preconditions, its validators unless it said `Cache-Control:
/// no-cache`, and its `Range` when `with_range` (see [`range`]). Another method
/// gets the whole file, unconditionally.
fn file_request(ctx: &Context, with_range: bool, len: u64) -> Request<()> {
    let mut request = Request::new(());
    let method = ctx.method();
    if method == Method::HEAD {
        *request.method_mut() = Method::HEAD;
    } else if method != Method::GET {
        return request;
    }
    let revalidate = !says_no_cache(ctx);
    let headers = request.headers_mut();
    for (name, wanted) in [
        (header::IF_MATCH, true),
        (header::IF_UNMODIFIED_SINCE, true),
        (header::IF_NONE_MATCH, revalidate),
        (header::IF_MODIFIED_SINCE, revalidate),
    ] {
        if wanted && let Some(value) = ctx.header(name.as_str()) {
            headers.insert(name, value.clone());
        }
    }
    // Ranges are defined for GET only (RFC 9110 §14.2): a HEAD gets the whole file's
    // headers.
    if with_range
        && method == Method::GET
        && let Some(value) = range(ctx, len)
    {
        headers.insert(header::RANGE, value);
    }
    request
}

/// The request's `Range` as tower-http is to see it, for a file of `len` bytes, or
/// none:
/// - a unit other than bytes is not understood, so it is ignored and the whole
///   file goes out, rather than a 416 (RFC 9110 §14.2);
/// - an empty file has no bytes to range over: the range is ignored, and the empty
///   file goes out whole (a server may ignore `Range`, §14.2);
/// - one suffix range longer than the file asks for all of it (§14.1.3:
///   `bytes=-5000` of a 100-byte file is bytes 0-99), where tower-http answers 416.
fn range(ctx: &Context, len: u64) -> Option<HeaderValue> {
    let value = ctx.header("range")?;
    let bytes = value.as_bytes();
    if len == 0 || bytes.len() < 6 || !bytes[..6].eq_ignore_ascii_case(b"bytes=") {
        return None;
    }
    let suffix = &bytes[7.min(bytes.len())..];
    let one_suffix =
        bytes.get(6) == Some(&b'-') && !suffix.is_empty() && suffix.iter().all(u8::is_ascii_digit);
    // Digits past u64 are a suffix longer than any file.
    let longer = one_suffix
        && std::str::from_utf8(suffix).ok().and_then(|n| n.parse::<u64>().ok()).is_none_or(|n| n > len);
    if longer { Some(HeaderValue::from_static("bytes=0-")) } else { Some(value.clone()) }
}

/// The request's `Cache-Control` has `no-cache`: the client wants the file, not a
/// 304 (Actionhero's rule, from Koa's `fresh`).
fn says_no_cache(ctx: &Context) -> bool {
    ctx.header("cache-control")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache")))
}

/// Whether the request's `If-Range` refuses the range this response answers (206 or
/// 416): then the whole file goes out instead.
fn range_refused<B>(ctx: &Context, response: &Response<B>) -> bool {
    matches!(response.status(), StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE)
        && ctx.header("if-range").is_some_and(|given| !if_range::matches(given, response.headers()))
}
