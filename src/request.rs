//! Request helpers: Toa's request aliases (`ctx.accepts`, `ctx.ip`, `ctx.host`, …) as
//! two extension traits.
//!
//! - [`HeaderExt`] needs only headers: content negotiation ([`accepts`](HeaderExt::accepts)
//!   and its siblings), the body's [`content_type`](HeaderExt::content_type),
//!   [`charset`](HeaderExt::charset) and [`content_length`](HeaderExt::content_length),
//!   [`is`](HeaderExt::is) and [`header`](HeaderExt::header). It is implemented for
//!   [`HeaderMap`], [`http::Request`], [`http::request::Parts`] and [`Context`].
//! - [`RequestHeadExt`] needs the whole request head: freshness, the client's address,
//!   protocol and host (following [`TrustProxy`]), the URL's
//!   parts. It is implemented for `Request`, `Parts` and `Context`.
//!
//! Both are sealed: they cannot be implemented outside this crate, so new helpers
//! can be added without breaking anyone.
//!
//! ```
//! use http::Request;
//! use tower_context::request::{HeaderExt, RequestHeadExt};
//!
//! let req = Request::get("/shop/items?page=2&tag=a&tag=b")
//!     .header("host", "eu.shop.example:8080")
//!     .header("accept", "text/html;q=0.9, application/json")
//!     .body(())
//!     .unwrap();
//! assert_eq!(req.accepts(&["html", "json"]), Some("json"));
//! assert_eq!(req.hostname().as_deref(), Some("eu.shop.example"));
//! assert_eq!(req.subdomains(2), ["eu"]);
//! assert_eq!(req.query().get_all("tag").collect::<Vec<_>>(), ["a", "b"]);
//! assert_eq!(req.href().as_deref(), Some("http://eu.shop.example:8080/shop/items?page=2&tag=a&tag=b"));
//! ```
//!
//! On a [`Context`] only the request headers it keeps are visible (see
//! [`Context::header`]); everything these helpers read is among them.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri};
use percent_encoding::percent_decode_str;

use crate::context::Context;
use crate::fresh::Validators;
use crate::negotiate;
use crate::proxy::{self, ProxyHeaders, Resolved, TrustProxy};

pub(crate) mod sealed {
    use std::borrow::Cow;
    use std::net::IpAddr;

    use http::{HeaderValue, Method, Uri};

    use crate::proxy::TrustProxy;

    /// Header access for [`HeaderExt`](super::HeaderExt).
    pub trait Headers {
        /// The first value of a header (a [`Context`](crate::Context) keeps the
        /// lines of a header joined).
        fn sealed_header(&self, name: &str) -> Option<&HeaderValue>;

        /// All lines of a header joined with `, `.
        fn sealed_joined(&self, name: &str) -> Option<Cow<'_, HeaderValue>> {
            self.sealed_header(name).map(Cow::Borrowed)
        }
    }

    /// Request-head access for [`RequestHeadExt`](super::RequestHeadExt).
    pub trait Head: Headers {
        fn sealed_method(&self) -> &Method;
        fn sealed_uri(&self) -> &Uri;
        /// The connection's peer, when known.
        fn sealed_peer(&self) -> Option<IpAddr>;
        /// Whether the transport says the request came over TLS.
        fn sealed_tls(&self) -> bool;
        fn sealed_trust(&self) -> &TrustProxy;
    }
}

/// The lines of a header in a map, joined with `, ` when there are several.
fn join(headers: &HeaderMap, name: &str) -> Option<Cow<'static, HeaderValue>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else { return Some(Cow::Owned(first.clone())) };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    // Valid values joined by a visible separator stay valid.
    HeaderValue::from_bytes(&joined).ok().map(Cow::Owned)
}

impl sealed::Headers for HeaderMap {
    fn sealed_header(&self, name: &str) -> Option<&HeaderValue> {
        self.get(name)
    }

    fn sealed_joined(&self, name: &str) -> Option<Cow<'_, HeaderValue>> {
        let mut values = self.get_all(name).iter();
        let first = values.next()?;
        if values.next().is_none() {
            return Some(Cow::Borrowed(first));
        }
        join(self, name)
    }
}

impl<B> sealed::Headers for Request<B> {
    fn sealed_header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers().sealed_header(name)
    }

    fn sealed_joined(&self, name: &str) -> Option<Cow<'_, HeaderValue>> {
        self.headers().sealed_joined(name)
    }
}

impl sealed::Headers for Parts {
    fn sealed_header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.sealed_header(name)
    }

    fn sealed_joined(&self, name: &str) -> Option<Cow<'_, HeaderValue>> {
        self.headers.sealed_joined(name)
    }
}

impl sealed::Headers for Context {
    fn sealed_header(&self, name: &str) -> Option<&HeaderValue> {
        Context::header(self, name)
    }
}

static NO_TRUST: TrustProxy = TrustProxy::None;

fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
    crate::Connection::from_extensions(extensions)
        .or_else(|| extensions.get::<Context>().and_then(|ctx| ctx.connection().cloned()))
        .map(|c| c.remote_addr().ip())
}

fn tls_of(extensions: &http::Extensions) -> bool {
    crate::connection::came_over_tls(extensions)
        || extensions.get::<Context>().is_some_and(Context::came_over_tls)
}

fn trust_of(extensions: &http::Extensions) -> &TrustProxy {
    extensions.get::<Context>().map_or(&NO_TRUST, |ctx| &ctx.config().trust_proxy)
}

impl<B> sealed::Head for Request<B> {
    fn sealed_method(&self) -> &Method {
        self.method()
    }
    fn sealed_uri(&self) -> &Uri {
        self.uri()
    }
    fn sealed_peer(&self) -> Option<IpAddr> {
        peer_of(self.extensions())
    }
    fn sealed_tls(&self) -> bool {
        tls_of(self.extensions())
    }
    fn sealed_trust(&self) -> &TrustProxy {
        trust_of(self.extensions())
    }
}

impl sealed::Head for Parts {
    fn sealed_method(&self) -> &Method {
        &self.method
    }
    fn sealed_uri(&self) -> &Uri {
        &self.uri
    }
    fn sealed_peer(&self) -> Option<IpAddr> {
        peer_of(&self.extensions)
    }
    fn sealed_tls(&self) -> bool {
        tls_of(&self.extensions)
    }
    fn sealed_trust(&self) -> &TrustProxy {
        trust_of(&self.extensions)
    }
}

impl sealed::Head for Context {
    fn sealed_method(&self) -> &Method {
        self.method()
    }
    fn sealed_uri(&self) -> &Uri {
        self.uri()
    }
    fn sealed_peer(&self) -> Option<IpAddr> {
        self.connection().map(|c| c.remote_addr().ip())
    }
    fn sealed_tls(&self) -> bool {
        self.came_over_tls()
    }
    fn sealed_trust(&self) -> &TrustProxy {
        &self.config().trust_proxy
    }
}

/// Helpers that read request headers: content negotiation, the request's content
/// type and length, `is`, `header`.
///
/// Implemented for [`HeaderMap`], [`http::Request`], [`http::request::Parts`] and
/// [`Context`]. Negotiation follows Koa's `accepts` (the `negotiator` package): an
/// offer takes the q-value of the most specific header entry that covers it, the
/// highest q wins, ties go to the more specific match and then to the earlier offer;
/// `q=0` refuses. Without the header, every offer is acceptable and the first wins,
/// except for encodings: without `Accept-Encoding` only `identity` is acceptable.
/// A malformed entry (a q that is not a number) is skipped; a q above 1 counts as 1.
///
/// Each `accepts_*` method has an `accepted_*` sibling that lists what the header
/// accepts, best first (Koa's `accepts()` with no arguments).
pub trait HeaderExt: sealed::Headers {
    /// A request header by name (case-insensitive); `Referrer` and `Referer` are
    /// the same header. Koa's `ctx.get`.
    ///
    /// On a [`Context`] the inherent [`Context::header`] is found first; it reads
    /// the same headers and knows the same alias.
    fn header(&self, name: &str) -> Option<&HeaderValue> {
        let name = if name.eq_ignore_ascii_case("referrer") { "referer" } else { name };
        self.sealed_header(name)
    }

    /// The best of `types` for the `Accept` header, as given, or `None` when none is
    /// acceptable. A type is a media type (`text/plain`, `image/*`) or a short name
    /// or extension (`json`, `html`, `png`, `.csv`); a name this crate does not know
    /// is never acceptable.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::get("/").header("accept", "text/*, application/json;q=0.5").body(()).unwrap();
    /// assert_eq!(req.accepts(&["json", "html", "text/plain"]), Some("html"));
    /// assert_eq!(req.accepts(&["png"]), None);
    /// ```
    fn accepts<'t>(&self, types: &[&'t str]) -> Option<&'t str> {
        let offers: Vec<Option<Cow<'_, str>>> = types.iter().map(|t| negotiate::media_type(t)).collect();
        let accept = self.sealed_joined(header::ACCEPT.as_str());
        let index = negotiate::best(accept.as_deref(), &offers, |entry, offer| {
            offer.as_deref().and_then(|offer| negotiate::media_match(entry, offer))
        })?;
        // Without an Accept header `best` takes the first offer even if unknown: take
        // the first known one instead, as `*/*` would.
        let index = match offers.get(index)? {
            Some(_) => index,
            None => offers.iter().position(Option::is_some)?,
        };
        types.get(index).copied()
    }

    /// The media ranges the `Accept` header accepts, highest q first, ties in header
    /// order, `q=0` left out, each as written without its parameters (Koa's
    /// `accepts()` with no arguments). Without the header, `["*/*"]`: anything goes.
    /// Empty when nothing is acceptable (an empty or unreadable header).
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::get("/")
    ///     .header("accept", "text/*;q=0.5, application/json, image/png;q=0, text/html;level=1")
    ///     .body(())
    ///     .unwrap();
    /// assert_eq!(req.accepted_types(), ["application/json", "text/html", "text/*"]);
    /// assert_eq!(Request::get("/").body(()).unwrap().accepted_types(), ["*/*"]);
    /// ```
    fn accepted_types(&self) -> Vec<String> {
        accepted(self.sealed_joined(header::ACCEPT.as_str()).as_deref(), "*/*", negotiate::is_media_range)
    }

    /// The best of `encodings` for `Accept-Encoding`. Unless the header names it
    /// (`identity;q=0`) or `*`, `identity` is acceptable at the lowest q the header
    /// gives, as in Koa; so without the header `identity` is the only acceptable
    /// encoding, and a client is never sent a compression it did not ask for.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::get("/").header("accept-encoding", "gzip;q=0.5, br").body(()).unwrap();
    /// assert_eq!(req.accepts_encodings(&["gzip", "br", "identity"]), Some("br"));
    /// assert_eq!(req.accepts_encodings(&["zstd", "identity"]), Some("identity"));
    ///
    /// let plain = Request::get("/").body(()).unwrap();
    /// assert_eq!(plain.accepts_encodings(&["gzip", "identity"]), Some("identity"));
    /// assert_eq!(plain.accepts_encodings(&["gzip"]), None);
    /// ```
    fn accepts_encodings<'t>(&self, encodings: &[&'t str]) -> Option<&'t str> {
        let header = self.sealed_joined(header::ACCEPT_ENCODING.as_str());
        let entries = negotiate::encoding_entries(readable(header.as_deref()));
        let index = negotiate::best_among(entries, encodings, |e, o| negotiate::token_match(e, o, false))?;
        encodings.get(index).copied()
    }

    /// The content codings `Accept-Encoding` accepts, highest q first, ties in
    /// header order, `q=0` left out, `identity` included as
    /// [`accepts_encodings`](Self::accepts_encodings) counts it (Koa's
    /// `acceptsEncodings()`). Without the header, `["identity"]`.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::get("/").header("accept-encoding", "gzip;q=0.8, deflate;q=0, br").body(()).unwrap();
    /// assert_eq!(req.accepted_encodings(), ["br", "gzip", "identity"]);
    /// assert_eq!(Request::get("/").body(()).unwrap().accepted_encodings(), ["identity"]);
    /// ```
    fn accepted_encodings(&self) -> Vec<String> {
        let header = self.sealed_joined(header::ACCEPT_ENCODING.as_str());
        negotiate::ranked(negotiate::encoding_entries(readable(header.as_deref())), negotiate::is_token)
    }

    /// The best of `charsets` for `Accept-Charset` (case-insensitive names).
    fn accepts_charsets<'t>(&self, charsets: &[&'t str]) -> Option<&'t str> {
        let header = self.sealed_joined(header::ACCEPT_CHARSET.as_str());
        let index = negotiate::best(header.as_deref(), charsets, |e, o| negotiate::token_match(e, o, false))?;
        charsets.get(index).copied()
    }

    /// The charsets `Accept-Charset` accepts, highest q first, ties in header order,
    /// `q=0` left out (Koa's `acceptsCharsets()`). Without the header, `["*"]`.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::get("/").header("accept-charset", "iso-8859-1;q=0.2, utf-8").body(()).unwrap();
    /// assert_eq!(req.accepted_charsets(), ["utf-8", "iso-8859-1"]);
    /// ```
    fn accepted_charsets(&self) -> Vec<String> {
        accepted(self.sealed_joined(header::ACCEPT_CHARSET.as_str()).as_deref(), "*", negotiate::is_token)
    }

    /// The best of `languages` for `Accept-Language`; `en` in the header covers
    /// `en-US`, and `en-US` covers `en` less specifically.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::get("/").header("accept-language", "fr-CH, fr;q=0.9, en;q=0.8").body(()).unwrap();
    /// assert_eq!(req.accepts_languages(&["en-US", "fr"]), Some("fr"));
    /// assert_eq!(req.accepts_languages(&["de"]), None);
    /// ```
    fn accepts_languages<'t>(&self, languages: &[&'t str]) -> Option<&'t str> {
        let header = self.sealed_joined(header::ACCEPT_LANGUAGE.as_str());
        let index = negotiate::best(header.as_deref(), languages, |e, o| negotiate::token_match(e, o, true))?;
        languages.get(index).copied()
    }

    /// The language tags `Accept-Language` accepts, highest q first, ties in header
    /// order, `q=0` left out, as written (Koa's `acceptsLanguages()`). Without the
    /// header, `["*"]`.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::get("/").header("accept-language", "en;q=0.8, fr-CH, fr;q=0.9, de;q=0").body(()).unwrap();
    /// assert_eq!(req.accepted_languages(), ["fr-CH", "fr", "en"]);
    /// ```
    fn accepted_languages(&self) -> Vec<String> {
        accepted(self.sealed_joined(header::ACCEPT_LANGUAGE.as_str()).as_deref(), "*", negotiate::is_token)
    }

    /// The request's media type, lowercase and without parameters: `text/html` for
    /// `Content-Type: text/HTML; charset=utf-8` (Koa's `ctx.type`). `None` when there
    /// is no `Content-Type` or it is not a media type. Koa keeps the case as sent and
    /// returns whatever comes before `;`; lowercase lets a plain `==` compare, and a
    /// malformed header is not half-read. To test the type, use [`is`](Self::is),
    /// which knows short names and wildcards.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::post("/").header("content-type", "text/HTML; charset=UTF-8").body(()).unwrap();
    /// assert_eq!(req.content_type().as_deref(), Some("text/html"));
    /// assert_eq!(req.charset().as_deref(), Some("utf-8"));
    /// ```
    fn content_type(&self) -> Option<String> {
        let media = negotiate::parse_content_type(self.sealed_header(header::CONTENT_TYPE.as_str())?)?;
        Some(media.essence_str().to_owned())
    }

    /// The `charset` parameter of `Content-Type`, lowercase and unquoted (Koa's
    /// `ctx.charset`, which keeps the case as sent). `None` when there is none, or
    /// the `Content-Type` is missing or not a media type.
    fn charset(&self) -> Option<String> {
        let media = negotiate::parse_content_type(self.sealed_header(header::CONTENT_TYPE.as_str())?)?;
        media.get_param(mime::CHARSET).map(|charset| charset.as_str().to_owned())
    }

    /// `Content-Length` as a number (Koa's `ctx.length`). `None` when it is absent,
    /// not a decimal number (where Koa gives 0), or too big for a `u64`. Repeated
    /// lines (or a list) that all give the same number count as that number, as
    /// RFC 9110 allows; lines that disagree give `None`.
    ///
    /// Named `content_length` rather than Koa's `length` so that, on a
    /// [`HeaderMap`], it does not read like [`HeaderMap::len`] (the number of headers).
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::post("/").header("content-length", "42").body(()).unwrap();
    /// assert_eq!(req.content_length(), Some(42));
    /// let bad = Request::post("/").header("content-length", "-1").body(()).unwrap();
    /// assert_eq!(bad.content_length(), None);
    /// ```
    fn content_length(&self) -> Option<u64> {
        let value = self.sealed_joined(header::CONTENT_LENGTH.as_str())?;
        let mut lengths = value.to_str().ok()?.split(',').map(|part| {
            let digits = part.trim();
            // `u64::from_str` would also take a leading `+`, which HTTP does not.
            let decimal = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            decimal.then(|| digits.parse::<u64>().ok()).flatten()
        });
        let first = lengths.next()??;
        lengths.all(|length| length == Some(first)).then_some(first)
    }

    /// Which of `types` the request's `Content-Type` is (Koa's `ctx.is`). A type is a
    /// media type with optional wildcards (`multipart/*`), a short name or extension
    /// (`json`, `urlencoded`, `multipart`, `html`), or a structured-syntax suffix
    /// (`+json` matches `application/ld+json`). The first match answers: a name or
    /// full type as given (borrowed), a wildcard or suffix with the request's actual
    /// type (owned, as [`content_type`](Self::content_type) gives it), since it
    /// matches a whole family. No types at all gives the request's type. `None` when
    /// the request has no `Content-Type`, a malformed one, or none of the types.
    /// Koa also answers `null` for a request with neither `Content-Length` nor
    /// `Transfer-Encoding` (no body); here only `Content-Type` counts.
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::HeaderExt;
    ///
    /// let req = Request::post("/").header("content-type", "text/html; charset=utf-8").body(()).unwrap();
    /// assert_eq!(req.is(&["json", "html"]).as_deref(), Some("html"));
    /// assert_eq!(req.is(&["text/*"]).as_deref(), Some("text/html"));
    /// assert_eq!(req.is(&[]).as_deref(), Some("text/html"));
    /// assert_eq!(req.is(&["multipart/*"]), None);
    /// ```
    fn is<'t>(&self, types: &[&'t str]) -> Option<Cow<'t, str>> {
        negotiate::type_is(self.sealed_header(header::CONTENT_TYPE.as_str()), types)
    }
}

impl<T: sealed::Headers + ?Sized> HeaderExt for T {}

/// A header as text for negotiation: an unreadable one (not visible ASCII) names
/// nothing that could match, so it reads as empty.
fn readable(header: Option<&HeaderValue>) -> &str {
    header.and_then(|h| h.to_str().ok()).unwrap_or_default()
}

/// What an `Accept`-style header accepts, best first; `absent` stands for "anything"
/// when there is no header, as `negotiator` reads a missing header.
fn accepted(header: Option<&HeaderValue>, absent: &str, well_formed: fn(&str) -> bool) -> Vec<String> {
    match header {
        None => vec![absent.to_owned()],
        Some(_) => negotiate::ranked(negotiate::entries(readable(header)), well_formed),
    }
}

/// Helpers that read the whole request head: freshness, client facts (following
/// [`TrustProxy`]), the URL's parts. Toa's request aliases.
///
/// Implemented for [`http::Request`], [`http::request::Parts`] and [`Context`]. On
/// a `Request` or `Parts`, the peer address comes from the
/// [`Connection`](crate::Connection) in its extensions and the proxy setting from the
/// [`Context`] in its extensions (so, inside [`ContextLayer`](crate::ContextLayer),
/// the layer's [`trust_proxy`](crate::ContextLayer::trust_proxy)); without a
/// `Context`, no proxy is trusted.
pub trait RequestHeadExt: HeaderExt + sealed::Head {
    /// Whether the client's cached copy is still good for this response: a `GET` or
    /// `HEAD` whose `If-None-Match` or `If-Modified-Since` matches the response's
    /// `ETag` or `Last-Modified`, on a 2xx or 304 response (Koa's `ctx.fresh`). See
    /// [`conditional`](crate::conditional) for the exact rules.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use tower_context::request::RequestHeadExt;
    ///
    /// let req = Request::get("/").header("if-none-match", "W/\"v1\", \"v2\"").body(()).unwrap();
    /// let res = Response::builder().header("etag", "\"v2\"").body(()).unwrap();
    /// assert!(req.fresh(&res));
    /// ```
    fn fresh<B>(&self, response: &Response<B>) -> bool {
        validators(self.sealed_method(), self).is_some_and(|v| v.fresh(response.status(), response.headers()))
    }

    /// `!fresh(response)`.
    fn stale<B>(&self, response: &Response<B>) -> bool {
        !self.fresh(response)
    }

    /// The client's address: the connection's peer, or what trusted proxies report
    /// (see [`proxy`]). `None` when no connection is known and no
    /// proxy header is believed, or when a trusted proxy reported a non-address such
    /// as `unknown`.
    fn ip(&self) -> Option<IpAddr> {
        believed(self).ip
    }

    /// The addresses trusted proxies report, client first (Koa's `ctx.ips`): the
    /// client and the proxies between it and the nearest one. Empty when no proxy
    /// header is believed.
    fn ips(&self) -> Vec<IpAddr> {
        believed(self).ips
    }

    /// `"https"` when the request came over TLS (the URI's scheme says so) or a
    /// trusted proxy says it did, else `"http"`.
    fn protocol(&self) -> &'static str {
        proxy::protocol(self.sealed_tls(), believed(self).proto)
    }

    /// `protocol() == "https"`.
    fn secure(&self) -> bool {
        self.protocol() == "https"
    }

    /// The host the client asked for, with its port if it gave one: a trusted
    /// proxy's report, else the URI's authority (HTTP/2 `:authority`, absolute-form
    /// requests), else the `Host` header. `None` when absent or not a valid host
    /// (`Host: :8080`, user info, spaces).
    fn host(&self) -> Option<String> {
        if let Some(host) = believed(self).host {
            return Some(host);
        }
        if let Some(authority) = self.sealed_uri().authority() {
            let host = authority.as_str().rsplit('@').next().unwrap_or_default();
            return proxy::parse_host(host).map(str::to_owned);
        }
        let value = self.sealed_header(header::HOST.as_str())?.to_str().ok()?;
        proxy::parse_host(value).map(str::to_owned)
    }

    /// [`host`](Self::host) without the port. An IPv6 literal keeps its brackets,
    /// as in Koa: `[::1]:8080` gives `[::1]`.
    fn hostname(&self) -> Option<String> {
        let host = self.host()?;
        let name = if host.starts_with('[') {
            host.find(']').map_or(host.as_str(), |end| &host[..=end])
        } else {
            host.split(':').next().unwrap_or_default()
        };
        Some(name.to_owned())
    }

    /// `protocol://host`, or `None` without a host.
    fn origin(&self) -> Option<String> {
        Some(format!("{}://{}", self.protocol(), self.host()?))
    }

    /// The full URL: the request URI when it is absolute, else
    /// [`origin`](Self::origin) followed by the path and query.
    fn href(&self) -> Option<String> {
        let uri = self.sealed_uri();
        if uri.scheme().is_some() && uri.authority().is_some() {
            return Some(uri.to_string());
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Some(format!("{}{path}", self.origin()?))
    }

    /// The URL's path, still percent-encoded.
    fn path(&self) -> &str {
        self.sealed_uri().path()
    }

    /// The query string without `?`; empty when there is none.
    fn querystring(&self) -> &str {
        self.sealed_uri().query().unwrap_or_default()
    }

    /// The query string with its `?`, or empty (Koa's `ctx.search`).
    fn search(&self) -> &str {
        let pq = self.sealed_uri().path_and_query().map_or("", |p| p.as_str());
        pq.find('?').map_or("", |i| &pq[i..])
    }

    /// The parsed query string: pairs in order, repeated keys kept, `+` and
    /// percent-escapes decoded (invalid UTF-8 replaced).
    ///
    /// ```
    /// use http::Request;
    /// use tower_context::request::RequestHeadExt;
    ///
    /// let req = Request::get("/?q=rust+tower&tag=a&tag=b&empty").body(()).unwrap();
    /// let query = req.query();
    /// assert_eq!(query.get("q"), Some("rust tower"));
    /// assert_eq!(query.get_all("tag").collect::<Vec<_>>(), ["a", "b"]);
    /// assert_eq!(query.get("empty"), Some(""));
    /// ```
    fn query(&self) -> Query {
        Query::parse(self.querystring())
    }

    /// The subdomains of [`hostname`](Self::hostname) after dropping `offset` labels
    /// from the right, nearest the domain first as in Koa: `tobi.ferrets.example.com`
    /// with offset 2 gives `["ferrets", "tobi"]`. Empty for an IP address.
    fn subdomains(&self, offset: usize) -> Vec<String> {
        let Some(hostname) = self.hostname() else { return Vec::new() };
        if hostname.starts_with('[') || hostname.parse::<IpAddr>().is_ok() {
            return Vec::new();
        }
        hostname.split('.').rev().skip(offset).map(str::to_owned).collect()
    }

    /// Whether the method is idempotent: `GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`,
    /// `TRACE`.
    fn idempotent(&self) -> bool {
        [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS, Method::TRACE]
            .contains(self.sealed_method())
    }
}

impl<T: sealed::Head + ?Sized> RequestHeadExt for T {}

/// The cache validators of a request (see `fresh`).
pub(crate) fn validators<T: sealed::Headers + ?Sized>(method: &Method, headers: &T) -> Option<Validators> {
    Validators::of(
        method,
        headers.sealed_joined(header::IF_NONE_MATCH.as_str()),
        headers.sealed_header(header::IF_MODIFIED_SINCE.as_str()),
        || headers.sealed_joined(header::CACHE_CONTROL.as_str()),
    )
}

/// What the trusted proxies say, owned.
struct Believed {
    ip: Option<IpAddr>,
    ips: Vec<IpAddr>,
    proto: Option<&'static str>,
    host: Option<String>,
}

fn believed<T: sealed::Head + ?Sized>(request: &T) -> Believed {
    if matches!(request.sealed_trust(), TrustProxy::None) {
        // No proxy is believed: the forwarding headers are not even looked up.
        return proxy::untrusted(request.sealed_peer()).into();
    }
    let forwarded = request.sealed_joined("forwarded");
    let xff = request.sealed_joined("x-forwarded-for");
    let xfp = request.sealed_joined("x-forwarded-proto");
    let xfh = request.sealed_joined("x-forwarded-host");
    let headers = ProxyHeaders {
        forwarded: forwarded.as_deref(),
        x_forwarded_for: xff.as_deref(),
        x_forwarded_proto: xfp.as_deref(),
        x_forwarded_host: xfh.as_deref(),
    };
    proxy::resolve(request.sealed_trust(), request.sealed_peer(), headers).into()
}

impl From<Resolved<'_>> for Believed {
    fn from(Resolved { ip, ips, proto, host }: Resolved<'_>) -> Self {
        Believed { ip, ips, proto, host: host.map(str::to_owned) }
    }
}

/// A parsed query string: see [`RequestHeadExt::query`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// At most this many pairs are kept (Node's `querystring` default).
    const MAX_PAIRS: usize = 1000;

    /// Parses a query string (without `?`).
    pub fn parse(query: &str) -> Query {
        let decode = |s: &str| -> String {
            let plus = s.replace('+', " ");
            percent_decode_str(&plus).decode_utf8_lossy().into_owned()
        };
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .take(Self::MAX_PAIRS)
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect();
        Query { pairs }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.pairs.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl IntoIterator for Query {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.pairs.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn accepts_short_names_and_wildcards() {
        let req = get("/", &[("accept", "application/json;q=0.8, text/html")]);
        assert_eq!(req.accepts(&["json", "html"]), Some("html"));
        assert_eq!(req.accepts(&["json", "text/plain"]), Some("json"));
        assert_eq!(req.accepts(&["png"]), None);
        let none = get("/", &[]);
        assert_eq!(none.accepts(&["json", "html"]), Some("json"));
        assert_eq!(none.accepts(&["nonsense", "html"]), Some("html"));
        assert_eq!(none.accepts(&["nonsense", "other"]), None);
        assert_eq!(none.accepts(&[]), None);
        let star = get("/", &[("accept", "*/*;q=0.1, image/*")]);
        assert_eq!(star.accepts(&["json", "png"]), Some("png"));
    }

    // Found by the `negotiate` fuzz target: without an Accept header, an unknown
    // name in front made every offer unacceptable, though `json` alone (or the same
    // list under `Accept: */*`) was acceptable.
    #[test]
    fn without_accept_the_first_known_offer_wins() {
        let none = get("/", &[]);
        assert_eq!(none.accepts(&["iso-8859-1", "json"]), Some("json"));
        assert_eq!(none.accepts(&["json"]), Some("json"));
        let star = get("/", &[("accept", "*/*")]);
        assert_eq!(star.accepts(&["iso-8859-1", "json"]), Some("json"));
    }

    #[test]
    fn malformed_and_absurd_accept_headers() {
        let req = get("/", &[("accept", ";;;, /, text/, application/json;q=xyz, text/plain;q=9e99")]);
        assert_eq!(req.accepts(&["json", "text"]), Some("text"));
        let req = get("/", &[("accept", "text/html;q=-3")]);
        assert_eq!(req.accepts(&["html"]), None);
        let mut map = HeaderMap::new();
        map.insert(header::ACCEPT, HeaderValue::from_bytes(b"text/html\xff").unwrap());
        assert_eq!(map.accepts(&["html"]), None);
    }

    #[test]
    fn repeated_header_lines_are_joined() {
        let mut map = HeaderMap::new();
        map.append(header::ACCEPT, HeaderValue::from_static("text/plain;q=0.1"));
        map.append(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(map.accepts(&["text", "json"]), Some("json"));
    }

    #[test]
    fn encodings_charsets_languages() {
        let req = get(
            "/",
            &[("accept-encoding", "gzip, identity;q=0"), ("accept-charset", "utf-8, iso-8859-1;q=0.2")],
        );
        assert_eq!(req.accepts_encodings(&["identity", "gzip"]), Some("gzip"));
        assert_eq!(req.accepts_encodings(&["identity"]), None);
        assert_eq!(req.accepts_charsets(&["ISO-8859-1", "UTF-8"]), Some("UTF-8"));
        let star = get("/", &[("accept-encoding", "*;q=0")]);
        assert_eq!(star.accepts_encodings(&["identity", "br"]), None);
        let empty = get("/", &[("accept-encoding", "")]);
        assert_eq!(empty.accepts_encodings(&["br", "identity"]), Some("identity"));
        let lang = get("/", &[("accept-language", "en-GB, *;q=0.1")]);
        assert_eq!(lang.accepts_languages(&["de", "en"]), Some("en"));
        assert_eq!(lang.accepts_languages(&["de"]), Some("de"));
    }

    #[test]
    fn is_matches_content_types() {
        let form =
            Request::post("/").header("content-type", "application/x-www-form-urlencoded").body(()).unwrap();
        assert_eq!(form.is(&["json", "urlencoded"]).as_deref(), Some("urlencoded"));
        let multi =
            Request::post("/").header("content-type", "multipart/form-data; boundary=x").body(()).unwrap();
        assert_eq!(multi.is(&["json", "multipart/*"]).as_deref(), Some("multipart/form-data"));
        assert_eq!(multi.is(&["multipart"]).as_deref(), Some("multipart"));
        let ld = Request::post("/").header("content-type", "Application/LD+JSON").body(()).unwrap();
        assert_eq!(ld.is(&["json", "+json"]).as_deref(), Some("application/ld+json"));
        assert_eq!(ld.is(&["*/*"]).as_deref(), Some("application/ld+json"));
        assert_eq!(ld.is(&["application/LD+json"]).as_deref(), Some("application/LD+json"));
        assert_eq!(ld.is(&[]).as_deref(), Some("application/ld+json"));
        let bad = Request::post("/").header("content-type", "not a type").body(()).unwrap();
        assert_eq!(bad.is(&["*/*", "json"]), None);
        assert_eq!(bad.is(&[]), None);
        let pattern = Request::post("/").header("content-type", "text/*").body(()).unwrap();
        assert_eq!(pattern.is(&["text/*"]), None);
        assert_eq!(get("/", &[]).is(&["*/*"]), None);
        assert_eq!(get("/", &[]).is(&[]), None);
    }

    #[test]
    fn a_given_name_is_borrowed_and_a_family_match_is_the_actual_type() {
        let req = get("/", &[("content-type", "text/plain")]);
        assert!(matches!(req.is(&["text"]), Some(Cow::Borrowed("text"))));
        assert!(matches!(req.is(&["text/*"]), Some(Cow::Owned(t)) if t == "text/plain"));
    }

    #[test]
    fn content_type_charset_and_length() {
        let req = get("/", &[("content-type", "Text/Plain; Charset=\"ISO-8859-1\"; format=flowed")]);
        assert_eq!(req.content_type().as_deref(), Some("text/plain"));
        assert_eq!(req.charset().as_deref(), Some("iso-8859-1"));
        let req = get("/", &[("content-type", "application/json")]);
        assert_eq!(req.charset(), None);
        for malformed in ["json", "text/", "*/*", "text/plain; charset=\"open", "a b/c"] {
            let req = get("/", &[("content-type", malformed)]);
            assert_eq!((req.content_type(), req.charset()), (None, None), "{malformed}");
        }
        assert_eq!(get("/", &[]).content_type(), None);

        assert_eq!(get("/", &[("content-length", "0")]).content_length(), Some(0));
        assert_eq!(get("/", &[("content-length", "18446744073709551615")]).content_length(), Some(u64::MAX));
        for bad in ["", "+5", "-5", "5.0", "0x10", "18446744073709551616", "5 5", "5,", "abc"] {
            assert_eq!(get("/", &[("content-length", bad)]).content_length(), None, "{bad:?}");
        }
        assert_eq!(get("/", &[]).content_length(), None);
        let mut map = HeaderMap::new();
        map.append(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        map.append(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        assert_eq!(map.content_length(), Some(7));
        map.append(header::CONTENT_LENGTH, HeaderValue::from_static("8"));
        assert_eq!(map.content_length(), None);
    }

    #[test]
    fn without_accept_encoding_only_identity() {
        let none = get("/", &[]);
        assert_eq!(none.accepts_encodings(&["gzip", "identity"]), Some("identity"));
        assert_eq!(none.accepts_encodings(&["gzip"]), None);
        assert_eq!(none.accepts_encodings(&["IDENTITY"]), Some("IDENTITY"));
        assert_eq!(none.accepted_encodings(), ["identity"]);
        // identity sits at the lowest q the header gives, after the rest in a tie.
        let low = get("/", &[("accept-encoding", "gzip;q=0.4, br;q=0")]);
        assert_eq!(low.accepted_encodings(), ["gzip", "identity"]);
        assert_eq!(low.accepts_encodings(&["identity", "gzip"]), Some("identity"));
        assert_eq!(low.accepts_encodings(&["br", "identity"]), Some("identity"));
        let star = get("/", &[("accept-encoding", "*;q=0.5, gzip")]);
        assert_eq!(star.accepted_encodings(), ["gzip", "*"]);
        assert_eq!(star.accepts_encodings(&["identity"]), Some("identity"));
        let mut map = HeaderMap::new();
        map.insert(header::ACCEPT_ENCODING, HeaderValue::from_bytes(b"gzip\xff").unwrap());
        assert_eq!(map.accepts_encodings(&["gzip", "identity"]), Some("identity"));
        assert_eq!(map.accepted_encodings(), ["identity"]);
    }

    #[test]
    fn accepted_lists_in_q_order() {
        let req = get(
            "/",
            &[
                ("accept", "text/html;q=0.5, application/json;q=0.9, */*;q=0.1, image/png, text/plain;q=0"),
                ("accept-charset", "utf-8, iso-8859-1;q=0.5, *;q=0.1"),
                ("accept-language", "de;q=0.5, en-US, en;q=0.9, fr;q=0.5"),
            ],
        );
        assert_eq!(req.accepted_types(), ["image/png", "application/json", "text/html", "*/*"]);
        assert_eq!(req.accepted_charsets(), ["utf-8", "iso-8859-1", "*"]);
        assert_eq!(req.accepted_languages(), ["en-US", "en", "de", "fr"]);
        let none = get("/", &[]);
        assert_eq!(none.accepted_types(), ["*/*"]);
        assert_eq!(none.accepted_charsets(), ["*"]);
        assert_eq!(none.accepted_languages(), ["*"]);
        let empty = get("/", &[("accept", ""), ("accept-language", " , ;q=1")]);
        assert!(empty.accepted_types().is_empty());
        assert!(empty.accepted_languages().is_empty());
    }

    #[test]
    fn accepted_lists_skip_malformed_entries() {
        let req =
            get("/", &[("accept", "text/html;q=abc, /json, text/, a b/c, json, application/json;q=1e9")]);
        assert_eq!(req.accepted_types(), ["application/json"]);
        let req = get("/", &[("accept-language", "en US, fr;q=NaN, de")]);
        assert_eq!(req.accepted_languages(), ["de"]);
        let mut map = HeaderMap::new();
        map.insert(header::ACCEPT, HeaderValue::from_bytes(b"text/html\xff").unwrap());
        assert!(map.accepted_types().is_empty());
        let many = "a/b;q=0.5, ".repeat(1000);
        let req = get("/", &[("accept", many.as_str())]);
        assert!(req.accepted_types().len() <= 64);
    }

    #[test]
    fn header_aliases_referrer() {
        let req = get("/", &[("referer", "https://a.example/")]);
        assert_eq!(req.header("Referrer").unwrap(), "https://a.example/");
        assert_eq!(HeaderExt::header(&req, "referer").unwrap(), "https://a.example/");
        assert!(req.header("bad name\n").is_none());
    }

    #[test]
    fn hosts() {
        let req = get("/", &[("host", "[::1]:8080")]);
        assert_eq!(req.host().as_deref(), Some("[::1]:8080"));
        assert_eq!(req.hostname().as_deref(), Some("[::1]"));
        assert!(req.subdomains(0).is_empty());
        let req = get("/", &[("host", ":8080")]);
        assert_eq!(req.host(), None);
        assert_eq!(req.origin(), None);
        let req = get("/", &[("host", "a b")]);
        assert_eq!(req.host(), None);
        let req = get("/", &[("host", "10.0.0.1:80")]);
        assert_eq!(req.hostname().as_deref(), Some("10.0.0.1"));
        assert!(req.subdomains(2).is_empty());
        let abs = get("https://user@api.example:8443/x?y=1", &[("host", "ignored.example")]);
        assert_eq!(abs.host().as_deref(), Some("api.example:8443"));
        // The scheme of an absolute-form request line is the client's word: over a
        // transport that is not TLS the request is http.
        assert_eq!(abs.protocol(), "http");
        assert!(!abs.secure());
        let mut over_tls = get("https://api.example/x", &[]);
        over_tls.extensions_mut().insert(crate::connection::Tls);
        assert_eq!(over_tls.protocol(), "https");
        assert_eq!(abs.href().as_deref(), Some("https://user@api.example:8443/x?y=1"));
        let sub = get("/", &[("host", "tobi.ferrets.example.com")]);
        assert_eq!(sub.subdomains(2), ["ferrets", "tobi"]);
        assert!(sub.subdomains(9).is_empty());
    }

    #[test]
    fn url_parts() {
        let req = get("/a%20b/c?x=1&x=2&y=%E2%9C%93&z=%ZZ&&=v", &[("host", "h.example")]);
        assert_eq!(req.path(), "/a%20b/c");
        assert_eq!(req.querystring(), "x=1&x=2&y=%E2%9C%93&z=%ZZ&&=v");
        assert_eq!(req.search(), "?x=1&x=2&y=%E2%9C%93&z=%ZZ&&=v");
        let query = req.query();
        assert_eq!(query.get_all("x").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(query.get("y"), Some("✓"));
        assert_eq!(query.get("z"), Some("%ZZ"));
        assert_eq!(query.get(""), Some("v"));
        assert_eq!(query.len(), 5);
        assert_eq!(get("/", &[]).search(), "");
        assert!(get("/", &[]).query().is_empty());
        assert!(req.idempotent());
        assert!(!Request::post("/").body(()).unwrap().idempotent());
    }

    #[test]
    fn untrusted_proxy_headers_are_ignored_without_a_context() {
        let req = get(
            "/",
            &[
                ("host", "real.example"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-for", "6.6.6.6"),
            ],
        );
        assert_eq!(req.host().as_deref(), Some("real.example"));
        assert_eq!(req.protocol(), "http");
        assert_eq!(req.ip(), None);
        assert!(req.ips().is_empty());
    }
}
