//! Deferred response edits: `ctx.set_status`, `set_header` and friends shape a
//! response the caller does not hold yet; the layer applies them when it does.

use http::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use http::{Response, StatusCode};

use super::Context;

/// A response edit made before there was a response to edit.
pub(crate) enum Edit {
    Status(StatusCode),
    Insert(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
    Remove(HeaderName),
    Vary(HeaderName),
}

/// Applies the deferred edits to a response's head, in the order they were made.
///
/// A status set before the response is a preset, as in Koa: a redirect keeps its
/// own status over a preset that is not a redirect (`set_status(304)` then
/// `redirect(..)` answers 302), and takes a preset redirect status (301, 303, 307,
/// 308) instead of its 302.
pub(crate) fn apply(edits: Vec<Edit>, status: &mut StatusCode, headers: &mut HeaderMap) {
    for edit in edits {
        match edit {
            Edit::Status(s) if is_redirect(*status) && headers.contains_key(LOCATION) && !is_redirect(s) => {}
            Edit::Status(s) => *status = s,
            Edit::Insert(name, value) => {
                headers.insert(name, value);
            }
            Edit::Append(name, value) => {
                headers.append(name, value);
            }
            Edit::Remove(name) => {
                headers.remove(name);
            }
            Edit::Vary(field) => crate::negotiate::vary(headers, field.as_str()),
        }
    }
}

/// [`apply`] to a whole response, in place.
#[inline]
pub(crate) fn apply_to<B>(edits: Vec<Edit>, response: &mut Response<B>) {
    if edits.is_empty() {
        return;
    }
    let mut status = response.status();
    apply(edits, &mut status, response.headers_mut());
    *response.status_mut() = status;
}

impl Edit {
    /// Whether this edit sets, appends or removes the header `name`.
    #[cfg(feature = "files")]
    pub(crate) fn touches(&self, name: &HeaderName) -> bool {
        match self {
            Edit::Insert(n, _) | Edit::Append(n, _) | Edit::Remove(n) => n == name,
            Edit::Status(_) | Edit::Vary(_) => false,
        }
    }
}

/// A status that redirects, as Koa's `statuses.redirect` lists them.
fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 300..=303 | 305 | 307 | 308)
}

/// The error an invalid status becomes: a 500 whose message, not exposed, says why.
pub(crate) fn invalid_status(status: StatusCode) -> crate::error::HttpError {
    crate::error::HttpError::new(500).message(format!("invalid status code {}", status.as_u16()))
}

/// The statuses an app may set: `http` accepts up to 999, HTTP defines up to 599.
pub(crate) fn is_valid_status(status: StatusCode) -> bool {
    status.as_u16() <= 599
}

impl Context {
    /// Sets the response status, applied when the response leaves the inner service
    /// (before the hooks run), so a layer or handler without the response in hand
    /// can still shape it. Edits made later (from a hook, say) apply just before the
    /// response leaves the layer.
    ///
    /// A status above 599 (`http` accepts up to 999; HTTP stops at 599) is refused:
    /// the request takes the error path with a 500 that names it.
    pub fn set_status(&self, status: StatusCode) {
        if !is_valid_status(status) {
            self.emit_error(invalid_status(status));
            return;
        }
        self.inner.phase.add_edit(Edit::Status(status));
    }

    /// Sets a response header (replacing any value), applied like [`set_status`](Self::set_status).
    /// On the error path only headers the error rendering keeps survive.
    pub fn set_header(&self, name: HeaderName, value: HeaderValue) {
        self.inner.phase.add_edit(Edit::Insert(name, value));
    }

    /// Appends a response header value, applied like [`set_status`](Self::set_status).
    pub fn append_header(&self, name: HeaderName, value: HeaderValue) {
        self.inner.phase.add_edit(Edit::Append(name, value));
    }

    /// Removes a response header, applied like [`set_status`](Self::set_status).
    pub fn remove_header(&self, name: HeaderName) {
        self.inner.phase.add_edit(Edit::Remove(name));
    }

    /// Whether a deferred edit made so far sets, appends or removes the header `name`:
    /// `send_file` leaves such a header to the app.
    #[cfg(feature = "files")]
    pub(crate) fn edits_header(&self, name: &HeaderName) -> bool {
        self.inner.phase.edits_header(name)
    }

    /// Adds a field to the response's `Vary` header (merged, no duplicates, `*` wins),
    /// applied like [`set_status`](Self::set_status).
    pub fn vary(&self, field: HeaderName) {
        self.inner.phase.add_edit(Edit::Vary(field));
    }
}
