//! Response helpers: Toa's response aliases that build or shape a response.
//!
//! [`redirect`] and [`redirect_back`] build a redirect response; [`attachment`],
//! [`vary`], [`etag`], [`last_modified`] and [`content_type`] edit a response's
//! headers in place, and [`is`] reads its type, so they work on a response in a
//! handler, a layer or an after-hook alike.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, Response};
//! use tower_context::response::{attachment, etag, last_modified};
//!
//! let mut res = Response::new("a,b\n1,2\n");
//! attachment(res.headers_mut(), Some("report 2024.csv"));
//! etag(res.headers_mut(), "r2024").unwrap();
//! last_modified(res.headers_mut(), SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
//! assert_eq!(res.headers()["content-disposition"], "attachment; filename=\"report 2024.csv\"");
//! assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
//! assert_eq!(res.headers()["etag"], "\"r2024\"");
//! assert_eq!(res.headers()["last-modified"], "Tue, 14 Nov 2023 22:13:20 GMT");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::body::Body;
use crate::error::HttpError;
use crate::negotiate;
use crate::request::{HeaderExt, RequestHeadExt};

/// Adds `field` to the `Vary` header: merged with what is there, no duplicates
/// (case-insensitive), and `*` replaces everything.
///
/// ```
/// use tower_context::response::vary;
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// vary(&mut headers, "Accept");
/// vary(&mut headers, "origin");
/// vary(&mut headers, "accept");
/// assert_eq!(headers["vary"], "Accept, origin");
/// vary(&mut headers, "*");
/// assert_eq!(headers["vary"], "*");
/// ```
pub fn vary(headers: &mut HeaderMap, field: &str) {
    negotiate::vary(headers, field);
}

/// A redirect target that is refused: empty, or with a scheme that runs script
/// (`javascript:`, `vbscript:`, `data:`).
///
/// As an [`HttpError`] it is a 400 with an exposed message: redirect targets usually
/// come from the request (`?next=…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRedirect {
    target: String,
}

impl fmt::Display for InvalidRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused redirect target {:?}", self.target)
    }
}

impl std::error::Error for InvalidRedirect {}

impl From<InvalidRedirect> for HttpError {
    fn from(err: InvalidRedirect) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST).message("invalid redirect target").with_source(err)
    }
}

/// A header value these helpers could not write: an entity tag with characters an
/// entity tag cannot hold, or a content type this crate does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidValue {
    what: &'static str,
    value: String,
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {:?}", self.what, self.value)
    }
}

impl std::error::Error for InvalidValue {}

/// A value the server itself chose could not be written: a 500 that is not exposed.
impl From<InvalidValue> for HttpError {
    fn from(err: InvalidValue) -> Self {
        HttpError::from_error(err)
    }
}

/// A `302 Found` redirect to `location` (Koa's `ctx.redirect`).
///
/// The target is percent-encoded where it holds characters a URL cannot (spaces,
/// quotes, CR and LF, non-ASCII), leaving existing escapes alone, so it cannot split
/// the header. The body says where to go: HTML when the request accepts HTML (a link,
/// HTML-escaped), plain text otherwise.
///
/// ```
/// use http::Request;
/// use tower_context::response::redirect;
///
/// let req = Request::get("/old").header("accept", "text/html").body(()).unwrap();
/// let res = redirect(&req, "/new place?a=<b>").unwrap();
/// assert_eq!(res.status(), 302);
/// assert_eq!(res.headers()["location"], "/new%20place?a=%3Cb%3E");
/// assert!(redirect(&req, "javascript:alert(1)").is_err());
/// ```
///
/// # Errors
///
/// [`InvalidRedirect`] for an empty target or a `javascript:`, `vbscript:` or
/// `data:` URL (browsers ignore tabs, newlines and leading spaces in a scheme, and so
/// does this check).
pub fn redirect(
    request: &(impl HeaderExt + ?Sized),
    location: &str,
) -> Result<Response<Body>, InvalidRedirect> {
    redirect_with_status(request, StatusCode::FOUND, location)
}

/// [`redirect`] with a status; one that is not 3xx becomes 302, as in Koa.
///
/// # Errors
///
/// As [`redirect`].
pub fn redirect_with_status(
    request: &(impl HeaderExt + ?Sized),
    status: StatusCode,
    location: &str,
) -> Result<Response<Body>, InvalidRedirect> {
    let refuse = || InvalidRedirect { target: location.to_owned() };
    if location.trim().is_empty() || runs_script(location) {
        return Err(refuse());
    }
    let encoded = encode_url(location);
    let value = HeaderValue::from_str(&encoded).map_err(|_| refuse())?;
    let (body, content_type) = if request.accepts(&["html"]).is_some() {
        let escaped = escape_html(&encoded);
        (format!("Redirecting to <a href=\"{escaped}\">{escaped}</a>."), "text/html; charset=utf-8")
    } else {
        (format!("Redirecting to {encoded}."), "text/plain; charset=utf-8")
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = if status.is_redirection() { status } else { StatusCode::FOUND };
    response.headers_mut().insert(header::LOCATION, value);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// A redirect to the `Referer` when it is on this site, else to `fallback` (Koa's
/// `ctx.back`).
///
/// On this site means a path (`/cart`, not `//other.example`) or an `http`/`https`
/// URL whose host is the request's [`host`](RequestHeadExt::host). To send the client
/// back to another site on purpose, pass the `Referer` to [`redirect`] yourself.
///
/// ```
/// use http::Request;
/// use tower_context::response::redirect_back;
///
/// let req = Request::post("/cart/add")
///     .header("host", "shop.example")
///     .header("referer", "https://evil.example/phish")
///     .body(())
///     .unwrap();
/// let res = redirect_back(&req, "/cart").unwrap();
/// assert_eq!(res.headers()["location"], "/cart");
/// ```
///
/// # Errors
///
/// As [`redirect`], for the fallback.
pub fn redirect_back(
    request: &(impl RequestHeadExt + ?Sized),
    fallback: &str,
) -> Result<Response<Body>, InvalidRedirect> {
    let referer = HeaderExt::header(request, "referer").and_then(|v| v.to_str().ok()).map(str::trim);
    let on_site = referer.filter(|r| is_on_site(r, request.host().as_deref()));
    match on_site {
        Some(target) => redirect(request, target).or_else(|_| redirect(request, fallback)),
        None => redirect(request, fallback),
    }
}

fn is_on_site(target: &str, host: Option<&str>) -> bool {
    if target.starts_with('/') {
        return !target.starts_with("//") && !target.starts_with("/\\");
    }
    let Ok(uri) = target.parse::<http::Uri>() else { return false };
    let web = matches!(uri.scheme_str(), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let Some(authority) = uri.authority() else { return false };
    let target_host = authority.as_str().rsplit('@').next().unwrap_or_default();
    web && host.is_some_and(|h| h.eq_ignore_ascii_case(target_host))
}

/// Whether a URL's scheme is one that runs script in a browser.
fn runs_script(location: &str) -> bool {
    // As browsers parse it: leading C0 controls and spaces dropped, tabs and
    // newlines removed anywhere.
    let cleaned: String = location
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .take(16)
        .collect();
    let Some((scheme, _)) = cleaned.split_once(':') else { return false };
    ["javascript", "vbscript", "data"].iter().any(|s| s.eq_ignore_ascii_case(scheme))
}

/// Percent-encodes what a URL cannot hold, keeping valid `%XX` escapes.
fn encode_url(url: &str) -> String {
    let bytes = url.as_bytes();
    let mut out = String::with_capacity(url.len());
    for (i, &b) in bytes.iter().enumerate() {
        let keep = match b {
            b'%' => bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)),
            b'!' | b'#'..=b';' | b'=' | b'?'..=b'[' | b']' | b'_' | b'a'..=b'z' | b'|' | b'~' => true,
            _ => false,
        };
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 5987 `attr-char`s stay as they are; everything else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Marks the response as a download (Koa's `ctx.attachment`): `Content-Disposition:
/// attachment`, with the file name when given, and `Content-Type` from its extension
/// when the extension is known.
///
/// Only the last path segment of `filename` is used. A name that is not printable
/// ASCII gets an ASCII fallback (`?` for each other character) in `filename` and the
/// exact name UTF-8 percent-encoded in `filename*` (RFC 6266, RFC 5987).
///
/// ```
/// use http::HeaderMap;
/// use tower_context::response::attachment;
///
/// let mut headers = HeaderMap::new();
/// attachment(&mut headers, Some("../../résumé.pdf"));
/// assert_eq!(
///     headers["content-disposition"],
///     "attachment; filename=\"r?sum?.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
/// );
/// assert_eq!(headers["content-type"], "application/pdf");
/// ```
pub fn attachment(headers: &mut HeaderMap, filename: Option<&str>) {
    let name = filename.and_then(|f| f.rsplit(['/', '\\']).next()).unwrap_or_default();
    if name.is_empty() {
        headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
        return;
    }
    let mut fallback = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                fallback.push('\\');
                fallback.push(c);
            }
            ' '..='~' => fallback.push(c),
            _ => fallback.push('?'),
        }
    }
    let mut value = format!("attachment; filename=\"{fallback}\"");
    if !name.chars().all(|c| matches!(c, ' '..='~')) {
        value.push_str("; filename*=UTF-8''");
        value.extend(utf8_percent_encode(name, ATTR_CHAR));
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some((_, ext)) = name.rsplit_once('.') {
        // An unknown extension leaves the type to whoever sets the body.
        let _ = content_type(headers, ext);
    }
}

/// Sets `ETag` (Koa's `ctx.etag =`): the value is quoted unless it already is
/// (`"v1"`) or is a weak tag (`W/"v1"`).
///
/// ```
/// use http::HeaderMap;
/// use tower_context::response::etag;
///
/// let mut headers = HeaderMap::new();
/// etag(&mut headers, "v1").unwrap();
/// assert_eq!(headers["etag"], "\"v1\"");
/// etag(&mut headers, "W/\"v2\"").unwrap();
/// assert_eq!(headers["etag"], "W/\"v2\"");
/// assert!(etag(&mut headers, "has space").is_err());
/// ```
///
/// # Errors
///
/// [`InvalidValue`] when the value is not a valid entity tag once quoted (spaces,
/// quotes, control characters inside); the headers are left as they were.
pub fn etag(headers: &mut HeaderMap, value: &str) -> Result<(), InvalidValue> {
    let value = value.trim();
    let quoted = if value.starts_with('"') || value.starts_with("W/\"") {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format!("\"{value}\""))
    };
    let opaque = quoted.strip_prefix("W/").unwrap_or(&quoted);
    let inner = opaque.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
    let valid = inner.is_some_and(|tag| tag.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)));
    let invalid = || InvalidValue { what: "entity tag", value: value.to_owned() };
    if !valid {
        return Err(invalid());
    }
    let header = HeaderValue::from_str(&quoted).map_err(|_| invalid())?;
    headers.insert(header::ETAG, header);
    Ok(())
}

/// Sets `Last-Modified` to `time` as an HTTP date (Koa's `ctx.lastModified =`).
/// HTTP dates run from 1970 to 9999; a time outside is clamped to that range.
pub fn last_modified(headers: &mut HeaderMap, time: SystemTime) {
    // The last second of 9999-12-31.
    const MAX: Duration = Duration::from_secs(253_402_300_799);
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().min(MAX);
    let date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + since_epoch);
    if let Ok(value) = HeaderValue::from_str(&date) {
        headers.insert(header::LAST_MODIFIED, value);
    }
}

/// Sets `Content-Type` from a media type (`image/png`, kept as given) or a short
/// name or extension (`json`, `.html`, `csv`; text types get `charset=utf-8`), Koa's
/// `ctx.type =`.
///
/// ```
/// use http::HeaderMap;
/// use tower_context::response::content_type;
///
/// let mut headers = HeaderMap::new();
/// content_type(&mut headers, ".html").unwrap();
/// assert_eq!(headers["content-type"], "text/html; charset=utf-8");
/// content_type(&mut headers, "application/vnd.api+json").unwrap();
/// assert_eq!(headers["content-type"], "application/vnd.api+json");
/// assert!(content_type(&mut headers, "no-such-ext").is_err());
/// ```
///
/// # Errors
///
/// [`InvalidValue`] when the type is neither a valid media type nor a name this
/// crate knows; the headers are left as they were.
pub fn content_type(headers: &mut HeaderMap, type_or_extension: &str) -> Result<(), InvalidValue> {
    let invalid = || InvalidValue { what: "content type", value: type_or_extension.to_owned() };
    let media = negotiate::media_type(type_or_extension).filter(|m| !m.contains('*')).ok_or_else(invalid)?;
    let value = HeaderValue::from_str(&media).map_err(|_| invalid())?;
    headers.insert(header::CONTENT_TYPE, value);
    Ok(())
}

/// Which of `types` the response's `Content-Type` is (Koa's `response.is`), with the
/// rules of the request's [`is`](HeaderExt::is): a name or full type answers as
/// given, a wildcard or `+suffix` with the response's actual type (lowercase,
/// without parameters), no types with that type. `None` when there is no
/// `Content-Type`, a malformed one, or none of the types.
///
/// For a layer or hook that only touches some responses:
///
/// ```
/// use http::header::CACHE_CONTROL;
/// use http::{HeaderValue, Response};
/// use tower_context::response::{content_type, is};
///
/// let mut res = Response::new("<p>hi</p>");
/// content_type(res.headers_mut(), "html").unwrap();
/// if is(res.headers(), &["html", "json"]).is_some() {
///     res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
/// }
/// assert_eq!(is(res.headers(), &["json", "html"]).as_deref(), Some("html"));
/// assert_eq!(is(res.headers(), &["text/*"]).as_deref(), Some("text/html"));
/// assert_eq!(is(res.headers(), &[]).as_deref(), Some("text/html"));
/// assert_eq!(is(res.headers(), &["image/*"]), None);
/// assert_eq!(res.headers()["cache-control"], "no-store");
/// ```
pub fn is<'t>(headers: &HeaderMap, types: &[&'t str]) -> Option<Cow<'t, str>> {
    negotiate::type_is(headers.get(header::CONTENT_TYPE), types)
}
