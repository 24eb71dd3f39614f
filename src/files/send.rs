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
use super::{Codings, FileBody, NOT_FOUND, PublicFiles, if_range};
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
        match self.config().feature::<PublicFiles>() {
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
        let variants = self.0.precompressed;
        let wanted = variants.named_in(ctx.header("accept-encoding"));
        let Some(found) = self.find(path, wanted).await? else {
            return Err(not_found());
        };
        let mut response = serve(found, file_request(ctx, Ranged::AsAsked, variants), variants).await?;
        if let Some(ranged) = second_look(ctx, &response) {
            // Rare: the first answer is dropped, and its descriptor with it.
            let Some(found) = self.find(path, wanted).await? else {
                return Err(not_found());
            };
            response = serve(found, file_request(ctx, ranged, variants), variants).await?;
        }
        if response.status() == StatusCode::NOT_MODIFIED && !variants.is_empty() {
            // A 304 carries the `Vary` a 200 would (RFC 9110 §15.4.5); tower-http's
            // leaves it out.
            response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
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

/// The found file through tower-http's `ServeDir`, reading it (and the variants
/// found with it) through [`FoundBackend`] (no second open or metadata read): a
/// response, or the error for a file that cannot be read (500).
pub(super) async fn serve(
    found: Found,
    request: Request<()>,
    variants: Codings,
) -> Result<Response<ServeFileSystemResponseBody>, HttpError> {
    let Found { path, file, meta, variants: found_variants } = found;
    // `ServeDir` joins the request's path ("/", so nothing) to its base: the found
    // file's own path, which names the file's type as `ServeFile` would. With
    // variants, the backend keeps the path too, to tell their paths from the file's.
    let own = (!variants.is_empty()).then(|| path.clone());
    let backend = FoundBackend::new(file, meta, found_variants, own);
    // Several ranges get the whole file (200), which RFC 9110 allows, rather than a
    // 416 that would say the ranges lie outside it.
    let service = ServeDir::with_backend(path.as_path(), backend).ignore_multi_range_requests(true);
    let mut service = variants.configure(service);
    match service.try_call(request).await {
        Ok(response) if response.status() != StatusCode::NOT_FOUND => Ok(response),
        Ok(_) => Err(not_found()),
        Err(err) if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) => {
            Err(not_found())
        }
        Err(err) => Err(HttpError::new(500).message("the file could not be read").with_source(err)),
    }
}

/// What of the request's `Range` goes to `ServeDir`.
#[derive(Clone, Copy)]
enum Ranged {
    /// As the request has it (a unit other than bytes is not understood, so it is
    /// ignored and the whole file goes out, rather than a 416: RFC 9110 §14.2).
    AsAsked,
    /// None: the whole file.
    Whole,
    /// `bytes=0-`: all of it, as a range.
    FromStart,
}

/// The request `ServeDir` answers: `GET` or `HEAD`, with the request's
/// preconditions, its validators unless it said `Cache-Control: no-cache`, its
/// `Accept-Encoding` when there are `variants` to choose from, and its `Range` as
/// `ranged` says. Another method gets the whole file, unconditionally.
fn file_request(ctx: &Context, ranged: Ranged, variants: Codings) -> Request<()> {
    let mut request = Request::new(());
    let method = ctx.method();
    if method == Method::HEAD {
        *request.method_mut() = Method::HEAD;
    } else if method != Method::GET {
        return request;
    }
    // A request that says `Cache-Control: no-cache` wants the file, not a 304
    // (Actionhero's rule, from Koa's `fresh`).
    let revalidate = !ctx.header("cache-control").is_some_and(crate::fresh::says_no_cache);
    let headers = request.headers_mut();
    for (name, wanted) in [
        (header::IF_MATCH, true),
        (header::IF_UNMODIFIED_SINCE, true),
        (header::IF_NONE_MATCH, revalidate),
        (header::IF_MODIFIED_SINCE, revalidate),
        (header::ACCEPT_ENCODING, !variants.is_empty()),
    ] {
        if wanted && let Some(value) = ctx.header(name.as_str()) {
            headers.insert(name, value.clone());
        }
    }
    // Ranges are defined for GET only (RFC 9110 §14.2): a HEAD gets the whole file's
    // headers.
    if method != Method::GET {
        return request;
    }
    let range = match ranged {
        Ranged::AsAsked => ctx.header("range").and_then(in_bytes),
        Ranged::Whole => None,
        Ranged::FromStart => Some(HeaderValue::from_static("bytes=0-")),
    };
    if let Some(range) = range {
        headers.insert(header::RANGE, range);
    }
    request
}

/// The request's range if it is in bytes, its unit written as tower-http reads it:
/// range units are case-insensitive (RFC 9110 §14.1), and `Bytes=0-4` is bytes 0-4.
/// `None` for any other unit, and for `Range` sent on more than one line (the
/// lines come joined, `bytes=0-1, bytes=4-5`; `Range` is not a list): ignored, the
/// whole file, as for several ranges on one line.
fn in_bytes(range: &HeaderValue) -> Option<HeaderValue> {
    let (unit, set) = range.as_bytes().split_at_checked(6)?;
    if set.contains(&b'=') {
        return None;
    }
    if unit == b"bytes=" {
        return Some(range.clone());
    }
    if !unit.eq_ignore_ascii_case(b"bytes=") {
        return None;
    }
    HeaderValue::from_bytes(&[b"bytes=".as_slice(), set].concat()).ok()
}

/// Whether the answer to the request's range must be made again, and how; `None`
/// when it stands:
/// - an `If-Range` that does not name the version answered (a 206 or 416) refuses
///   the range: the whole file instead;
/// - the file answered is empty: it has no bytes to range over, so the range is
///   ignored, and the empty file goes out whole (a server may ignore `Range`, §14.2;
///   tower-http alone answers `bytes 0-0/0` or 416);
/// - one suffix range longer than the file asks for all of it (§14.1.3:
///   `bytes=-5000` of a 100-byte file is bytes 0-99), where tower-http answers 416.
///
/// Decided on the answer rather than on the file found, because with precompressed
/// variants the file answered (and its length) is tower-http's choice.
fn second_look<B>(ctx: &Context, response: &Response<B>) -> Option<Ranged> {
    let status = response.status();
    if !matches!(status, StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE) {
        return None;
    }
    if ctx.header("if-range").is_some_and(|given| !if_range::matches(given, response.headers())) {
        return Some(Ranged::Whole);
    }
    let of_empty =
        response.headers().get(header::CONTENT_RANGE).is_some_and(|range| range.as_bytes().ends_with(b"/0"));
    if of_empty {
        return Some(Ranged::Whole);
    }
    let longer = status == StatusCode::RANGE_NOT_SATISFIABLE
        && ctx.header("range").is_some_and(|asked| suffix_longer(asked.as_bytes(), response.headers()));
    longer.then_some(Ranged::FromStart)
}

/// The range asked for is one suffix (`bytes=-N`) longer than the file a 416 names
/// (`Content-Range: bytes */LENGTH`); digits past `u64` are longer than any file.
/// A suffix that is not longer (`bytes=-0`, or one tower-http would not parse, as
/// `bytes=-05` of 100 bytes) keeps its 416.
fn suffix_longer(asked: &[u8], answer: &HeaderMap) -> bool {
    let Some(suffix) = asked.get(7..).filter(|_| asked.get(6) == Some(&b'-')) else {
        return false;
    };
    let length = answer
        .get(header::CONTENT_RANGE)
        .and_then(|range| range.to_str().ok()?.strip_prefix("bytes */")?.parse::<u64>().ok());
    let Some(length) = length else { return false };
    !suffix.is_empty()
        && suffix.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(suffix).ok().and_then(|n| n.parse::<u64>().ok()).is_none_or(|n| n > length)
}
