//! HTTP errors: [`HttpError`], the [`throw!`](crate::throw) family of macros, and the
//! one rendering every error takes.
//!
//! An `HttpError` is Toa's `ctx.throw` / `http-errors` object made Rust: a status, a
//! message, whether that message may be shown to the client, headers to send with it
//! and extra JSON properties for the body.
//!
//! ```
//! use tower_context::{HttpError, http::StatusCode};
//!
//! let err = HttpError::new(401)
//!     .message("access_denied")
//!     .header("www-authenticate", "Bearer")
//!     .property("user", 42);
//! assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
//! assert!(err.is_exposed()); // below 500: the message is meant for the client
//! assert_eq!(err.to_string(), "access_denied");
//! ```
//!
//! # Invalid input
//!
//! - A status outside `400..=599` (including anything that is not a status at all)
//!   becomes 500, as `http-errors` does for a status that is not an error.
//! - Messages are Rust strings, so always UTF-8; build one with
//!   [`String::from_utf8_lossy`] from raw bytes. A message only ever goes into a
//!   response body (JSON-escaped where the body is JSON), never into a header, so CR/LF
//!   in it cannot split a response. Rendered bodies carry at most
//!   [`MAX_RENDERED_MESSAGE`] bytes of a message (cut at a character boundary, with
//!   `…` appended); [`HttpError::message_str`] still returns the whole of it.
//! - A header whose name or value is invalid is ignored (a value with CR/LF is invalid).
//! - A property named like one of the body's own fields (`status`, `error`, `message`;
//!   `type`, `title`, `detail` for problem+json) is ignored in the body: the error's own
//!   fields always win.

pub(crate) mod macros;
mod panic;
pub(crate) mod render;

pub use render::{ErrorFormat, MAX_RENDERED_MESSAGE};

pub(crate) use panic::panic_error;

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

pub use crate::body::BoxError;

/// An HTTP error: the Rust counterpart of Toa's `ctx.throw()` / `ctx.createError()`.
///
/// Build one with [`HttpError::new`] and the builder methods, or with the
/// [`http_error!`](crate::http_error) and [`throw!`](crate::throw) macros. Return it
/// from a handler (`Result<T, HttpError>` in axum), from a tower service, or from an
/// after-hook; [`ContextLayer`](crate::ContextLayer) renders it.
///
/// `HttpError` is one pointer wide, so `Result<T, HttpError>` stays small.
#[derive(Clone)]
pub struct HttpError(Box<Inner>);

#[derive(Clone)]
struct Inner {
    status: StatusCode,
    message: Option<Cow<'static, str>>,
    expose: Option<bool>,
    headers: HeaderMap,
    properties: Map<String, Value>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

/// Something that names an HTTP status: a [`StatusCode`] or an integer.
///
/// Integers that are not an error status (outside `400..=599`) become 500.
pub trait IntoStatus: sealed::Sealed {
    /// The status, 500 when `self` is not an error status.
    fn into_status(self) -> StatusCode;
}

mod sealed {
    pub trait Sealed {}
}

fn error_status(code: u64) -> StatusCode {
    match u16::try_from(code) {
        Ok(code @ 400..=599) => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl sealed::Sealed for StatusCode {}
impl IntoStatus for StatusCode {
    fn into_status(self) -> StatusCode {
        error_status(u64::from(self.as_u16()))
    }
}

macro_rules! int_status {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl IntoStatus for $t {
            fn into_status(self) -> StatusCode {
                u64::try_from(self).map_or(StatusCode::INTERNAL_SERVER_ERROR, error_status)
            }
        }
    )*};
}
int_status!(u16, u32, u64, usize, i32, i64);

impl HttpError {
    /// A new error with this status and no message (the reason phrase is shown).
    ///
    /// A status outside `400..=599` becomes 500.
    pub fn new(status: impl IntoStatus) -> Self {
        HttpError(Box::new(Inner {
            status: status.into_status(),
            message: None,
            expose: None,
            headers: HeaderMap::new(),
            properties: Map::new(),
            source: None,
        }))
    }

    /// A 500 error that wraps `source`: not exposed, the source kept for logging.
    ///
    /// If `source` is an `HttpError` (boxed or not), that error is returned as it is.
    pub fn from_error(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        match source.downcast::<HttpError>() {
            Ok(err) => *err,
            Err(other) => {
                let mut err = HttpError::new(StatusCode::INTERNAL_SERVER_ERROR);
                err.0.source = Some(Arc::from(other));
                err
            }
        }
    }

    /// [`from_error`](Self::from_error) for an inner service's error: an `HttpError`
    /// (what a handler's `Err` usually is) is taken as it is, without the box that
    /// `Into<BoxError>` would put it in first.
    pub(crate) fn from_service_error<E: Into<BoxError> + 'static>(source: E) -> Self {
        let mut slot = Some(source);
        if let Some(err) =
            (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<HttpError>>().and_then(Option::take)
        {
            return err;
        }
        slot.map_or_else(|| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR), HttpError::from_error)
    }

    /// A body stream's error: as [`from_error`](Self::from_error), except that an I/O
    /// error of kind `NotFound` is a 404 and `PermissionDenied` a 403 (looked for
    /// along the error's sources), as Koa and Toa answer a missing file stream.
    pub(crate) fn from_stream_error(source: BoxError) -> Self {
        let status = {
            let mut next: Option<&(dyn StdError + 'static)> = Some(&*source);
            let mut found = None;
            while let Some(err) = next {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    found = match io.kind() {
                        std::io::ErrorKind::NotFound => Some(StatusCode::NOT_FOUND),
                        std::io::ErrorKind::PermissionDenied => Some(StatusCode::FORBIDDEN),
                        _ => None,
                    };
                    break;
                }
                next = err.source();
            }
            found
        };
        let err = HttpError::from_error(source);
        match status {
            Some(status) if err.status() == StatusCode::INTERNAL_SERVER_ERROR => {
                let mut err = err;
                err.0.status = status;
                err
            }
            _ => err,
        }
    }

    /// Sets the message.
    #[must_use]
    pub fn message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.0.message = Some(message.into());
        self
    }

    /// Sets whether the message (and properties) may be shown to the client.
    ///
    /// The default is `status < 500`.
    #[must_use]
    pub fn expose(mut self, expose: bool) -> Self {
        self.0.expose = Some(expose);
        self
    }

    /// Adds a header to send with the error response (Koa's `err.headers`).
    ///
    /// An invalid name or value is ignored. The same name twice keeps both values.
    #[must_use]
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        if let (Ok(name), Ok(value)) = (name.try_into(), value.try_into()) {
            self.0.headers.append(name, value);
        }
        self
    }

    /// Adds a property merged into the JSON body of the rendered error.
    ///
    /// A value that cannot be serialized is ignored.
    #[must_use]
    pub fn property(mut self, name: impl Into<String>, value: impl serde::Serialize) -> Self {
        if let Ok(value) = serde_json::to_value(value) {
            self.0.properties.insert(name.into(), value);
        }
        self
    }

    /// Merges every entry of a JSON object into the properties; other values are ignored.
    #[must_use]
    pub fn properties_from(mut self, value: Value) -> Self {
        if let Value::Object(map) = value {
            self.0.properties.extend(map);
        }
        self
    }

    /// Sets the underlying cause, kept for logging and [`std::error::Error::source`].
    ///
    /// (Named `with_source` so that `err.source()` keeps meaning the standard
    /// [`Error::source`](std::error::Error::source).)
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.0.source = Some(Arc::from(source.into()));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The message as set, or the status's reason phrase when none was set.
    pub fn message_str(&self) -> &str {
        match &self.0.message {
            Some(message) => message,
            None => reason(self.0.status),
        }
    }

    /// Whether the message and properties may be shown to the client.
    pub fn is_exposed(&self) -> bool {
        self.0.expose.unwrap_or(self.0.status.as_u16() < 500)
    }

    /// Headers sent with the rendered error.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// Properties merged into the rendered JSON body.
    pub fn properties(&self) -> &Map<String, Value> {
        &self.0.properties
    }

    /// Whether two errors say the same thing: status, message, exposure, headers,
    /// properties, and the very same source.
    pub(crate) fn says_the_same_as(&self, other: &HttpError) -> bool {
        let (a, b) = (&*self.0, &*other.0);
        let same_source = match (&a.source, &b.source) {
            (None, None) => true,
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        };
        a.status == b.status
            && self.message_str() == other.message_str()
            && self.is_exposed() == other.is_exposed()
            && a.headers == b.headers
            && a.properties == b.properties
            && same_source
    }

    /// Whether this error came from a panic caught by the layer.
    pub fn is_panic(&self) -> bool {
        self.0.source.as_deref().is_some_and(|source| source.is::<panic::PanicError>())
    }
}

/// The reason phrase of a status, or "Unknown Error" for one without.
pub(crate) fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Unknown Error")
}

impl fmt::Debug for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("HttpError");
        debug
            .field("status", &self.0.status)
            .field("message", &self.message_str())
            .field("expose", &self.is_exposed());
        if !self.0.headers.is_empty() {
            debug.field("headers", &self.0.headers);
        }
        if !self.0.properties.is_empty() {
            debug.field("properties", &self.0.properties);
        }
        if let Some(source) = &self.0.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message_str())
    }
}

impl StdError for HttpError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source.as_deref().map(|source| source as &(dyn StdError + 'static))
    }
}

impl From<StatusCode> for HttpError {
    fn from(status: StatusCode) -> Self {
        HttpError::new(status)
    }
}

impl From<(StatusCode, &'static str)> for HttpError {
    fn from((status, message): (StatusCode, &'static str)) -> Self {
        HttpError::new(status).message(message)
    }
}

impl From<(StatusCode, String)> for HttpError {
    fn from((status, message): (StatusCode, String)) -> Self {
        HttpError::new(status).message(message)
    }
}

impl From<BoxError> for HttpError {
    fn from(err: BoxError) -> Self {
        HttpError::from_error(err)
    }
}

impl From<std::convert::Infallible> for HttpError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<std::io::Error> for HttpError {
    fn from(err: std::io::Error) -> Self {
        HttpError::from_error(err)
    }
}

/// Marks a response as carrying an error: the layer takes the error path for it.
///
/// `HttpError`'s axum `IntoResponse` puts this in the response extensions.
#[derive(Clone)]
pub(crate) struct Thrown(pub(crate) HttpError);

impl HttpError {
    /// Renders this error the way [`ContextLayer`](crate::ContextLayer) would for a
    /// request that accepts JSON, and marks the response so that a `ContextLayer`
    /// around it renders the error again with the request's own negotiation, headers
    /// and hooks.
    ///
    /// This is what an `HttpError` returned from an axum handler becomes, so errors
    /// make sense even without the layer. (Named apart from axum's
    /// `IntoResponse::into_response`, which gives axum's body type, so that
    /// `err.into_response()` means axum's under axum.)
    ///
    /// ```
    /// use tower_context::HttpError;
    ///
    /// let response = HttpError::new(404).into_http_response();
    /// assert_eq!(response.status(), 404);
    /// assert_eq!(response.headers()["content-type"], "application/json");
    /// ```
    pub fn into_http_response(self) -> http::Response<crate::body::Body> {
        let mut response = render::render_default(&self);
        response.extensions_mut().insert(Thrown(self));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inner service's error: an `HttpError` as it is, a boxed one unboxed, any
    /// other a hidden 500 that keeps it as its source.
    #[test]
    fn service_errors_keep_an_http_error_and_wrap_the_rest() {
        let err = HttpError::from_service_error(HttpError::new(409).message("taken"));
        assert_eq!((err.status().as_u16(), err.to_string()), (409, "taken".to_owned()));
        let boxed: BoxError = Box::new(HttpError::new(410).message("gone"));
        let err = HttpError::from_service_error(boxed);
        assert_eq!((err.status().as_u16(), err.to_string()), (410, "gone".to_owned()));
        let err = HttpError::from_service_error(std::io::Error::other("disk"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.is_exposed());
        assert_eq!(StdError::source(&err).map(ToString::to_string).as_deref(), Some("disk"));
    }

    #[test]
    fn statuses_outside_the_error_range_become_500() {
        for bad in [0_i32, -1, 99, 200, 302, 399, 600, 999, 1000, 70_000] {
            assert_eq!(HttpError::new(bad).status(), 500, "{bad}");
        }
        assert_eq!(HttpError::new(StatusCode::OK).status(), 500);
        assert_eq!(HttpError::new(404_u16).status(), 404);
        assert_eq!(HttpError::new(599_u64).status(), 599);
        assert_eq!(HttpError::new(u64::MAX).status(), 500);
    }

    #[test]
    fn expose_follows_the_status_unless_set() {
        assert!(HttpError::new(499).is_exposed());
        assert!(!HttpError::new(500).is_exposed());
        assert!(HttpError::new(503).expose(true).is_exposed());
        assert!(!HttpError::new(400).expose(false).is_exposed());
    }

    #[test]
    fn boxed_http_errors_are_recovered() {
        let boxed: BoxError = Box::new(HttpError::new(418).message("teapot"));
        let err = HttpError::from(boxed);
        assert_eq!(err.status(), 418);
        assert_eq!(err.message_str(), "teapot");

        let other: BoxError = "disk on fire".into();
        let err = HttpError::from(other);
        assert_eq!(err.status(), 500);
        assert!(!err.is_exposed());
        assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("disk on fire"));
    }

    #[test]
    fn invalid_headers_are_ignored() {
        let err = HttpError::new(400)
            .header("x-ok", "1")
            .header("x-bad", "a\r\nset-cookie: evil=1")
            .header("bad name", "1");
        assert_eq!(err.headers().len(), 1);
        assert_eq!(err.headers()["x-ok"], "1");
    }
}
