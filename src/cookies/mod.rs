//! Cookies: a per-request jar with rotating keys (placeholder, being built).

use http::HeaderMap;
use http::header::HeaderValue;

/// The request's cookie jar: see [`Context::cookies`](crate::Context::cookies).
#[derive(Debug)]
pub struct Cookies {
    _header: Option<HeaderValue>,
}

/// Cookie settings of the layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct CookieConfig {}

impl Cookies {
    /// The jar for a request with this `Cookie` header. Nothing is parsed here.
    pub(crate) fn new(header: Option<HeaderValue>, _config: &CookieConfig, _secure: bool) -> Self {
        Cookies { _header: header }
    }

    /// Writes a `Set-Cookie` header for every change.
    pub(crate) fn write(&self, _headers: &mut HeaderMap) {}
}
