//! Cookies: the request's jar ([`Cookies`]), signing and encryption [`Keys`] that
//! rotate, and signatures a Koa or Toa app can read ([`SignedFormat::Keygrip`]).
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_context::cookies::{Cookie, Cookies, Keys, SameSite};
//! use tower_context::{ContextLayer, HttpError};
//!
//! async fn visit(cookies: Cookies) -> Result<String, HttpError> {
//!     // `?`: without keys on the layer this is an error (a 500), not "no visits yet".
//!     let visits: u32 = cookies.get_signed("visits")?.and_then(|v| v.parse().ok()).unwrap_or(0);
//!     cookies.set_signed(Cookie::build(("visits", (visits + 1).to_string())).same_site(SameSite::Lax))?;
//!     Ok(format!("visit number {}", visits + 1))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(visit))
//!     .layer(ContextLayer::new().keys(Keys::new(["newest secret", "older secret"])));
//! ```
//!
//! # The jar
//!
//! [`Context::cookies`](crate::Context::cookies) (or the [`Cookies`] extractor) gives
//! the request's jar. The `Cookie` header is parsed in place (no copy) and only as far
//! as reads need, each pair once; a request whose handlers never touch cookies costs
//! nothing. Every change becomes one `Set-Cookie`
//! on the response, whatever path it takes: a normal response, [`end`](crate::Context::end),
//! or an error. Changes can come from any layer inside [`ContextLayer`](crate::ContextLayer),
//! the handler, an after-hook or a [spawned](crate::Context::spawn) task, as long as
//! they are made before the response leaves the layer. Setting a name twice sends the
//! last one only.
//!
//! Cookies set through the jar get Koa's defaults: `Path=/`, `HttpOnly`, and `Secure`
//! when the request is secure (TLS, or https said by a trusted proxy). A `Secure`
//! cookie on a plain-http request is refused with [`CookieError::SecureOverHttp`]
//! unless [`ContextLayer::allow_secure_cookies_over_http`](crate::ContextLayer::allow_secure_cookies_over_http)
//! says otherwise. Any default can be overridden on the [`Cookie`] you pass; an empty
//! path (`.path("")`) sends no `Path` at all, as in Koa, so the browser scopes the
//! cookie to the request's directory.
//!
//! # Signed and private cookies
//!
//! Both need [`Keys`] on the layer: reading or setting one without keys is
//! [`CookieError::NoKeys`]. They sign (or encrypt) with the first key and verify (or
//! decrypt) with any; a cookie that only an older key verifies is sent again signed
//! with the first key on the same response, so rotating keys does not log anyone out.
//! A cookie that fails to verify reads as absent (`Ok(None)`). Signatures and
//! authentication tags are compared in constant time.
//!
//! [`Cookies::remove_signed`] deletes a signed cookie with its signature, and
//! [`Cookies::remove`] deletes a private one.
//!
//! Signed cookies come in two formats, chosen with
//! [`ContextLayer::signed_format`](crate::ContextLayer::signed_format):
//! - [`SignedFormat::Keygrip`] (the default, with SHA-1): the Node `cookies` +
//!   `keygrip` modules' (Koa, Toa, Express), a companion `name.sig` cookie holding the
//!   HMAC of `name=value`, so a signature is bound to its cookie's name. With the same
//!   keys, a Rust service and a Koa service read each other's signed cookies. A
//!   `name.sig` that does not match is cleared, as Koa does, and
//!   [`remove_signed`](Cookies::remove_signed) deletes `name` and `name.sig` together.
//! - [`SignedFormat::Cookie`]: the cookie crate's, a MAC inside the value, as
//!   axum-extra's `SignedCookieJar` and tower-cookies write it (they percent-encode
//!   it; both spellings are read). It signs the value only: a value signed under one
//!   name also verifies under another, so use it for interop, not by default.
//!
//! Private cookies are encrypted and authenticated (AES-256-GCM, the cookie crate's
//! format, which binds the name) and may hold any string.
//!
//! # Where this differs from Koa's `cookies`
//!
//! - [`Cookies::get`] sees this response's changes: a cookie just set reads back, a
//!   removed one reads as absent. Koa reads the request only.
//! - An empty value is a cookie with an empty value; [`Cookies::remove`] and
//!   [`Cookies::remove_signed`] delete. Koa deletes on an empty value
//!   (`set(name, null, { signed: true })` for a signed cookie).
//! - Reading a signed or private cookie without keys is [`CookieError::NoKeys`] on
//!   every read. Koa throws only once a request carries both the cookie and its
//!   `.sig`, so a layer that lost its keys looks like a visitor who is not logged in
//!   until then; failing on the first read shows the misconfiguration at once.
//! - [`Cookies::remove_signed`] needs no keys, where Koa throws without them:
//!   deleting uses no secret, and a logout should not fail because signing is
//!   misconfigured.
//! - A cookie re-signed or re-encrypted for key rotation is sent with the default
//!   attributes (Koa does the same for `name.sig`); set it again with your own
//!   attributes in the same response if it needs them: the last set wins.
//! - `Max-Age` is sent as `Max-Age` (Koa turns it into `Expires`); removals send both.
//! - A `SameSite=None` or `Partitioned` cookie is always sent `Secure` (browsers drop
//!   it otherwise), so setting one over plain HTTP is
//!   [`CookieError::SecureOverHttp`] unless the layer allows secure cookies there.
//!   Koa writes such a cookie as given.
//! - A removal keeps the given `SameSite`, `Partitioned` and `Secure` (a browser
//!   deletes a partitioned or cross-site cookie only with a removal that has them),
//!   as Koa's `set(name, null, options)` does.
//! - A `name.sig` sent empty is cleared, as any that does not match; Node's
//!   `cookies` leaves an empty one alone.
//!
//! As in Koa, values are sent and read as they are, neither percent-encoded nor
//! decoded (only a signed or private value in the cookie crate's format that fails as
//! sent is tried once more percent-decoded), and of two cookies with one name in a
//! request the first counts (browsers put the most specific path first).

mod error;
mod jar;
mod keygrip;
mod keys;
mod signed;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cookie::CookieJar;
pub use cookie::{Cookie, CookieBuilder, Expiration, Key, SameSite, time};
use http::HeaderMap;
use http::header::HeaderValue;

pub use error::CookieError;
pub use keys::Keys;
use keys::Secret;

use jar::Jar;
#[cfg(feature = "server")]
pub(crate) use jar::MAX_PAIRS;

/// How signed cookies are written and read: see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignedFormat {
    /// The cookie crate's format: the value is prefixed with its base64 HMAC-SHA256.
    /// Readable by axum-extra's `SignedCookieJar` and tower-cookies with the same
    /// [`cookie::Key`] (see [`Keys::from_cookie_keys`]).
    ///
    /// **It signs the value only, not the name** (that is the cookie crate's design):
    /// a value signed for one cookie also verifies when a client sends it under
    /// another name. Choose it to share cookies with axum-extra or tower-cookies, and
    /// never sign the same value under two names whose meaning differs.
    Cookie,
    /// The Node `keygrip` format, the default: the value as it is, and a companion
    /// `name.sig` cookie holding the HMAC of `name=value` (so a signature is bound to
    /// its cookie's name), base64url without padding. Byte-compatible with Koa, Toa
    /// and Express.
    Keygrip(KeygripHash),
}

/// Keygrip with HMAC-SHA1, as Koa signs by default: it binds each signature to its
/// cookie's name, which the cookie crate's format does not.
impl Default for SignedFormat {
    fn default() -> Self {
        SignedFormat::KEYGRIP
    }
}

impl SignedFormat {
    /// Keygrip with its default hash, HMAC-SHA1: what Koa and Toa use unless told
    /// otherwise.
    ///
    /// ```
    /// use tower_context::ContextLayer;
    /// use tower_context::cookies::{Keys, SignedFormat};
    ///
    /// let layer = ContextLayer::new()
    ///     .keys(Keys::new(["keyboard cat"]))
    ///     .signed_format(SignedFormat::KEYGRIP);
    /// ```
    pub const KEYGRIP: SignedFormat = SignedFormat::Keygrip(KeygripHash::Sha1);
}

/// The HMAC hash of [`SignedFormat::Keygrip`]: Keygrip's `algorithm` option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeygripHash {
    /// `sha1`, Keygrip's default.
    #[default]
    Sha1,
    /// `sha256`.
    Sha256,
    /// `sha512`.
    Sha512,
}

/// The layer's cookie settings.
#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) keys: Option<Keys>,
    pub(crate) format: SignedFormat,
    pub(crate) secure_over_http: bool,
    /// How many of the request's cookie pairs the jar reads at most.
    pub(crate) max_pairs: usize,
}

impl CookieConfig {
    pub(crate) const DEFAULT: CookieConfig = CookieConfig {
        keys: None,
        format: SignedFormat::KEYGRIP,
        secure_over_http: false,
        max_pairs: jar::MAX_PAIRS,
    };
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig::DEFAULT
    }
}

/// The request's cookie jar: read the request's cookies, set and remove cookies on
/// the response (see the [module docs](self)).
///
/// Get it from [`Context::cookies`](crate::Context::cookies), or as an axum extractor.
/// It is a cheap handle (one `Arc`): clones share the jar, so a clone moved into a
/// task or hook changes the same response.
///
/// ```
/// use tower_context::{Context, HttpError};
/// use tower_context::cookies::{Cookie, SameSite, time::Duration};
///
/// async fn login(ctx: Context) -> Result<&'static str, HttpError> {
///     let cookies = ctx.cookies();
///     if cookies.get("theme").is_none() {
///         cookies.set(("theme", "dark"))?; // Path=/ and HttpOnly by default
///     }
///     cookies.set_private(
///         Cookie::build(("session", "user 42; admin"))
///             .same_site(SameSite::Strict)
///             .max_age(Duration::hours(8)),
///     )?;
///     cookies.remove("legacy")?;
///     Ok("welcome")
/// }
/// ```
#[derive(Clone)]
pub struct Cookies {
    inner: Arc<Inner>,
}

struct Inner {
    config: CookieConfig,
    secure: bool,
    /// Never held across an await or while user code runs.
    jar: Mutex<Jar>,
}

impl Cookies {
    /// The jar for a request with this `Cookie` header. Nothing is parsed here.
    pub(crate) fn new(header: Option<HeaderValue>, config: &CookieConfig, secure: bool) -> Self {
        Cookies {
            inner: Arc::new(Inner {
                config: config.clone(),
                secure,
                jar: Mutex::new(Jar::new(header, config.max_pairs)),
            }),
        }
    }

    /// Writes a `Set-Cookie` header for every change.
    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        self.jar().write(headers);
    }

    fn jar(&self) -> MutexGuard<'_, Jar> {
        // No user code runs under this lock, so a poisoned one still holds whole data.
        self.inner.jar.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keys(&self) -> Result<&Keys, CookieError> {
        self.inner.config.keys.as_ref().filter(|keys| !keys.is_empty()).ok_or(CookieError::NoKeys)
    }

    /// The value of a cookie: as this response has set it, else as the request sent
    /// it (the first of several with that name). `None` when absent or removed, or
    /// when it came after the first
    /// [`max_cookie_pairs`](crate::ContextLayer::max_cookie_pairs) pairs of the
    /// request (see [`truncated`](Self::truncated)).
    pub fn get(&self, name: &str) -> Option<String> {
        self.jar().get(name).map(str::to_owned)
    }

    /// Whether the request carried more cookie pairs than the jar reads
    /// ([`ContextLayer::max_cookie_pairs`](crate::ContextLayer::max_cookie_pairs), 256
    /// by default), so that a cookie past them reads as absent. Known once a read went
    /// that far (a read of a missing name, or [`iter`](Self::iter)).
    ///
    /// ```
    /// use tower_context::{Context, HttpError};
    ///
    /// async fn handler(ctx: Context) -> Result<String, HttpError> {
    ///     let theme = ctx.cookies().get("theme");
    ///     if theme.is_none() && ctx.cookies().truncated() {
    ///         tower_context::throw!(431, "too many cookies");
    ///     }
    ///     Ok(theme.unwrap_or_else(|| "light".into()))
    /// }
    /// ```
    pub fn truncated(&self) -> bool {
        self.jar().truncated()
    }

    /// Sets a cookie on the response, with the defaults `Path=/`, `HttpOnly` and
    /// `Secure` on a secure request for what the cookie leaves unset. An empty path
    /// (`.path("")`) sends no `Path`: the browser then scopes the cookie to the
    /// request's directory.
    ///
    /// Takes anything that makes a [`Cookie`]: a `(name, value)` pair, a `Cookie` or a
    /// [`CookieBuilder`].
    ///
    /// # Errors
    ///
    /// A name that is not an HTTP token, a value that is not visible ASCII (or has
    /// `;`, or spaces at its ends), a `Path` or `Domain` with `;` or control
    /// characters, or a `Secure` cookie on a request that is not secure (see
    /// [`CookieError`]). Nothing is set then.
    pub fn set(&self, cookie: impl Into<Cookie<'static>>) -> Result<(), CookieError> {
        let cookie = self.prepare(cookie.into(), true)?;
        self.jar().put(cookie, false);
        Ok(())
    }

    /// Deletes a cookie: sends it empty and expired, with the same `Path` (`/` when
    /// unset, none when empty) and `Domain` as the cookie given, since a browser only
    /// deletes a cookie that matches both. It deletes plain and private cookies; for
    /// signed ones use [`remove_signed`](Self::remove_signed). With
    /// [`SignedFormat::Keygrip`], a `name.sig` companion that the request sent (or this
    /// response set) is deleted too.
    ///
    /// ```
    /// # use tower_context::Context;
    /// use tower_context::cookies::Cookie;
    /// # fn f(ctx: Context) -> Result<(), tower_context::cookies::CookieError> {
    /// ctx.cookies().remove("theme")?;
    /// ctx.cookies().remove(Cookie::build("sid").path("/app").domain("example.com"))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// An invalid name, `Path` or `Domain`, as for [`set`](Self::set).
    pub fn remove(&self, cookie: impl Into<Cookie<'static>>) -> Result<(), CookieError> {
        let removal = self.removal(cookie.into())?;
        let companion = match self.inner.config.format {
            SignedFormat::Keygrip(_) => {
                let sig = companion_of(&removal);
                self.get(sig.name()).is_some().then_some(sig)
            }
            SignedFormat::Cookie => None,
        };
        self.put_removals(removal, companion);
        Ok(())
    }

    /// Deletes a signed cookie, as [`remove`](Self::remove) does, and with
    /// [`SignedFormat::Keygrip`] its `name.sig` companion too, whether or not the
    /// request sent one: Koa's `ctx.cookies.set(name, null, { signed: true })`. With
    /// [`SignedFormat::Cookie`] the signature is inside the value, so only `name` is
    /// deleted.
    ///
    /// Deleting uses no secret, so this works without [`Keys`] (Koa throws there).
    ///
    /// ```
    /// # use tower_context::Context;
    /// use tower_context::cookies::Cookie;
    /// # fn f(ctx: Context) -> Result<(), tower_context::cookies::CookieError> {
    /// // Sends `user=` and `user.sig=`, both expired.
    /// ctx.cookies().remove_signed("user")?;
    /// ctx.cookies().remove_signed(Cookie::build("sid").path("/app"))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// An invalid name, `Path` or `Domain`, as for [`set`](Self::set).
    pub fn remove_signed(&self, cookie: impl Into<Cookie<'static>>) -> Result<(), CookieError> {
        let removal = self.removal(cookie.into())?;
        let companion = match self.inner.config.format {
            SignedFormat::Keygrip(_) => Some(companion_of(&removal)),
            SignedFormat::Cookie => None,
        };
        self.put_removals(removal, companion);
        Ok(())
    }

    /// The value of a signed cookie, verified with any of the keys: `Ok(None)` when it
    /// is absent or fails to verify.
    ///
    /// A cookie verified with an older key is sent again, signed with the first key.
    /// With [`SignedFormat::Keygrip`], a `name.sig` that does not match is cleared.
    ///
    /// ```
    /// use tower_context::{Context, HttpError, throw};
    ///
    /// async fn me(ctx: Context) -> Result<String, HttpError> {
    ///     match ctx.cookies().get_signed("user")? {
    ///         Some(user) => Ok(format!("you are {user}")),
    ///         None => throw!(401, "not logged in"),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`CookieError::NoKeys`] when the layer has no keys, whether or not the cookie
    /// is there: nothing can verify, and reading that as "not logged in" would hide
    /// the misconfiguration.
    pub fn get_signed(&self, name: &str) -> Result<Option<String>, CookieError> {
        self.get_signed_as(self.inner.config.format, name)
    }

    /// [`get_signed`](Self::get_signed) in `format`.
    fn get_signed_as(&self, format: SignedFormat, name: &str) -> Result<Option<String>, CookieError> {
        let keys = self.keys()?;
        let Some(value) = self.get(name) else { return Ok(None) };
        Ok(match format {
            SignedFormat::Cookie => self.verify_sealed(keys, name, &value),
            SignedFormat::Keygrip(hash) => {
                self.verify_keygrip(hash, keys, name, value).map(|(value, _)| value)
            }
        })
    }

    /// [`get_signed`](Self::get_signed) in the cookie crate's format.
    fn verify_sealed(&self, keys: &Keys, name: &str, value: &str) -> Option<String> {
        let (index, plain) = open_with_any(keys, value, |secret, value| {
            signed::verify(&secret.signing, value).map(str::to_owned)
        })?;
        if index > 0 {
            // Best effort: a value from the request that the jar would not set (it has
            // a space at an end, say) stays as it was.
            let _ = self.set_signed((name.to_owned(), plain.clone()));
        }
        Some(plain)
    }

    /// [`get_signed`](Self::get_signed) in Keygrip's format: the value is `value`
    /// itself, if `name.sig` signs it; with whether an older key did (`name.sig` is
    /// then sent again, signed with the first).
    fn verify_keygrip(
        &self,
        hash: KeygripHash,
        keys: &Keys,
        name: &str,
        value: String,
    ) -> Option<(String, bool)> {
        let matched = {
            let mut jar = self.jar();
            let signature = jar.get_by(|n| is_companion(n, name))?;
            keygrip::index(hash, keys, name, &value, signature)
        };
        match matched {
            None => {
                if let Ok(removal) = self.removal(Cookie::new(companion_name(name), "")) {
                    self.jar().put(removal, true);
                }
                None
            }
            Some(index) => {
                if index > 0 {
                    let sig = sign_keygrip(hash, keys, name, &value);
                    if let Ok(cookie) = self.prepare(Cookie::new(companion_name(name), sig), false) {
                        self.jar().put(cookie, false);
                    }
                }
                Some((value, index > 0))
            }
        }
    }

    /// Sets a signed cookie, signed with the first key in the layer's
    /// [`SignedFormat`]: the value stays readable by the client but cannot be changed.
    ///
    /// # Errors
    ///
    /// [`CookieError::NoKeys`] when the layer has no keys, and the errors of
    /// [`set`](Self::set).
    pub fn set_signed(&self, cookie: impl Into<Cookie<'static>>) -> Result<(), CookieError> {
        self.set_signed_as(self.inner.config.format, cookie.into())
    }

    /// [`set_signed`](Self::set_signed) in `format`.
    fn set_signed_as(&self, format: SignedFormat, cookie: Cookie<'static>) -> Result<(), CookieError> {
        let keys = self.keys()?;
        let cookie = self.prepare(cookie, true)?;
        match format {
            SignedFormat::Cookie => {
                let secret = keys.secrets().first().ok_or(CookieError::NoKeys)?;
                let mut cookie = cookie;
                cookie.set_value(signed::sign(&secret.signing, cookie.value()));
                self.jar().put(cookie, false);
            }
            SignedFormat::Keygrip(hash) => {
                let mut sig = cookie.clone();
                sig.set_name(companion_name(cookie.name()));
                sig.set_value(sign_keygrip(hash, keys, cookie.name(), cookie.value()));
                let mut jar = self.jar();
                jar.put(cookie, false);
                jar.put(sig, false);
            }
        }
        Ok(())
    }

    /// Keygrip's hash: the layer's (SHA-1, Koa's default, when the layer
    /// signs in the cookie crate's format): for a cookie whose value must stay as it
    /// is (the session id, which is also the client's fingerprint).
    #[cfg_attr(not(feature = "sessions"), allow(dead_code))]
    fn keygrip_hash(&self) -> KeygripHash {
        match self.inner.config.format {
            SignedFormat::Keygrip(hash) => hash,
            SignedFormat::Cookie => KeygripHash::Sha1,
        }
    }

    /// [`get_signed`](Self::get_signed) in Keygrip's format whatever the layer's,
    /// with whether the value was signed with an older key: its `.sig` is then sent
    /// again with the default attributes, which the caller may want to set again with
    /// its own.
    #[cfg_attr(not(feature = "sessions"), allow(dead_code))]
    pub(crate) fn get_keygrip(&self, name: &str) -> Result<Option<(String, bool)>, CookieError> {
        let keys = self.keys()?;
        let Some(value) = self.get(name) else { return Ok(None) };
        Ok(self.verify_keygrip(self.keygrip_hash(), keys, name, value))
    }

    /// [`set_signed`](Self::set_signed) in Keygrip's format whatever the layer's.
    #[cfg_attr(not(feature = "sessions"), allow(dead_code))]
    pub(crate) fn set_keygrip(&self, cookie: Cookie<'static>) -> Result<(), CookieError> {
        self.set_signed_as(SignedFormat::Keygrip(self.keygrip_hash()), cookie)
    }

    /// The value of a private cookie, decrypted with any of the keys: `Ok(None)` when
    /// it is absent or fails to decrypt. A cookie decrypted with an older key is sent
    /// again, encrypted with the first key.
    ///
    /// # Errors
    ///
    /// [`CookieError::NoKeys`] when the layer has no keys, whether or not the cookie
    /// is there, as for [`get_signed`](Self::get_signed).
    pub fn get_private(&self, name: &str) -> Result<Option<String>, CookieError> {
        let keys = self.keys()?;
        let Some(value) = self.get(name) else { return Ok(None) };
        let jar = CookieJar::new();
        let opened = open_with_any(keys, &value, |secret, value| {
            let cookie = jar.private(&secret.key).decrypt(Cookie::new(name.to_owned(), value.to_owned()))?;
            Some(cookie.value().to_owned())
        });
        let Some((index, plain)) = opened else { return Ok(None) };
        if index > 0 {
            let _ = self.set_private((name.to_owned(), plain.clone()));
        }
        Ok(Some(plain))
    }

    /// Sets a private cookie: its value is encrypted and authenticated with the first
    /// key, so the client can neither read nor change it. The value may be any string.
    ///
    /// # Errors
    ///
    /// [`CookieError::NoKeys`] when the layer has no keys, and the errors of
    /// [`set`](Self::set) except those about the value.
    pub fn set_private(&self, cookie: impl Into<Cookie<'static>>) -> Result<(), CookieError> {
        let keys = self.keys()?;
        let cookie = self.prepare(cookie.into(), false)?;
        let sealed = seal(keys, cookie)?;
        self.jar().put(sealed, false);
        Ok(())
    }

    /// Every cookie as `(name, value)`, the way [`get`](Self::get) reads them: the
    /// request's (one per name), with this response's changes applied. Values are
    /// raw: signed and private cookies as sent, `name.sig` companions included.
    pub fn iter(&self) -> Iter {
        Iter { inner: self.jar().snapshot().into_iter() }
    }

    /// Checks a cookie and fills in the defaults.
    fn prepare(
        &self,
        mut cookie: Cookie<'static>,
        check_value: bool,
    ) -> Result<Cookie<'static>, CookieError> {
        error::check_name(cookie.name())?;
        if check_value {
            error::check_value(cookie.name(), cookie.value())?;
        }
        error::check_attributes(&cookie)?;
        match cookie.path() {
            None => cookie.set_path("/"),
            // The cookie crate would write an empty `Path=`; Koa writes no `Path`.
            Some("") => cookie.unset_path(),
            Some(_) => {}
        }
        // Likewise `Domain=` (also what `.domain(".")` becomes): Koa sends no domain.
        if cookie.domain() == Some("") {
            cookie.unset_domain();
        }
        if cookie.http_only().is_none() {
            cookie.set_http_only(true);
        }
        // Browsers drop SameSite=None and Partitioned cookies that are not Secure, and
        // the cookie crate writes `Secure` for them anyway.
        let partitioned = cookie.partitioned() == Some(true);
        let needs_secure = cookie.same_site() == Some(SameSite::None) || partitioned;
        let secure = cookie.secure().unwrap_or(self.inner.secure || needs_secure) || partitioned;
        if secure && !self.inner.secure && !self.inner.config.secure_over_http {
            return Err(CookieError::SecureOverHttp { name: cookie.name().to_owned() });
        }
        cookie.set_secure(secure);
        Ok(cookie)
    }

    /// The expired, empty cookie that deletes `given` in a browser.
    fn removal(&self, given: Cookie<'static>) -> Result<Cookie<'static>, CookieError> {
        error::check_name(given.name())?;
        error::check_attributes(&given)?;
        let mut removal = Cookie::new(given.name().to_owned(), "");
        // The same path rule as `prepare`, so a removal matches what `set` sent.
        match given.path() {
            None => removal.set_path("/"),
            Some("") => {}
            Some(path) => removal.set_path(path.to_owned()),
        }
        if let Some(domain) = given.domain().filter(|domain| !domain.is_empty()) {
            removal.set_domain(domain.to_owned());
        }
        removal.set_http_only(true);
        // The attributes a browser keys or filters the cookie by, as given: a
        // partitioned cookie is deleted only by a partitioned removal, and one a
        // cross-site frame set (`SameSite=None`) only by one it is sent in.
        if let Some(same_site) = given.same_site() {
            removal.set_same_site(same_site);
        }
        let partitioned = given.partitioned() == Some(true);
        if partitioned {
            removal.set_partitioned(true);
        }
        let needs_secure = given.same_site() == Some(SameSite::None) || partitioned;
        removal.set_secure(given.secure().unwrap_or(self.inner.secure || needs_secure) || partitioned);
        removal.set_max_age(time::Duration::ZERO);
        removal.set_expires(time::OffsetDateTime::UNIX_EPOCH);
        Ok(removal)
    }

    /// Records a removal and, when there is one, the removal of its `name.sig`, under
    /// one lock so no reader sees one without the other.
    fn put_removals(&self, removal: Cookie<'static>, companion: Option<Cookie<'static>>) {
        let mut jar = self.jar();
        jar.put(removal, true);
        if let Some(sig) = companion {
            jar.put(sig, true);
        }
    }
}

/// The removal of `name.sig` that goes with a removal of `name`: same attributes.
fn companion_of(removal: &Cookie<'static>) -> Cookie<'static> {
    let mut sig = removal.clone();
    sig.set_name(companion_name(removal.name()));
    sig
}

/// Opens a value in the cookie crate's format (`open` verifies or decrypts it with
/// one key) with each key in turn: the index of the key that opened it, and the
/// plain value.
///
/// A value this jar wrote is tried as it is. axum-extra and tower-cookies
/// percent-encode what they write (base64's `/` and `=` become `%2F` and `%3D`), so a
/// value that opens with no key is tried once more percent-decoded.
fn open_with_any(
    keys: &Keys,
    value: &str,
    open: impl Fn(&Secret, &str) -> Option<String>,
) -> Option<(usize, String)> {
    let try_all = |value: &str| {
        keys.secrets().iter().enumerate().find_map(|(index, secret)| Some((index, open(secret, value)?)))
    };
    try_all(value).or_else(|| {
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8().ok()?;
        if decoded == value { None } else { try_all(&decoded) }
    })
}

/// Encrypts a checked cookie with the first key, in the cookie crate's format.
fn seal(keys: &Keys, cookie: Cookie<'static>) -> Result<Cookie<'static>, CookieError> {
    let secret = keys.secrets().first().ok_or(CookieError::NoKeys)?;
    let mut jar = CookieJar::new();
    jar.private_mut(&secret.key).add(cookie);
    // `add` has just put the sealed cookie in the empty jar: it is its only change.
    // (Its name was checked before, so the error below cannot happen.)
    jar.delta().next().cloned().ok_or_else(|| CookieError::InvalidName { name: String::new() })
}

fn sign_keygrip(hash: KeygripHash, keys: &Keys, name: &str, value: &str) -> String {
    keys.secrets().first().map(|secret| keygrip::sign(hash, &secret.keygrip, name, value)).unwrap_or_default()
}

/// `name.sig`, the name of `name`'s Keygrip companion.
fn companion_name(name: &str) -> String {
    let mut companion = String::with_capacity(name.len() + 4);
    companion.push_str(name);
    companion.push_str(".sig");
    companion
}

/// Whether `candidate` is `name.sig`, the Keygrip companion of `name`.
fn is_companion(candidate: &[u8], name: &str) -> bool {
    candidate.strip_suffix(b".sig") == Some(name.as_bytes())
}

impl fmt::Debug for Cookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cookies")
            .field("secure", &self.inner.secure)
            .field("format", &self.inner.config.format)
            .finish_non_exhaustive()
    }
}

/// The cookies of a jar, from [`Cookies::iter`]: `(name, value)` pairs taken when the
/// iterator was made.
#[derive(Debug)]
pub struct Iter {
    inner: std::vec::IntoIter<(String, String)>,
}

impl Iterator for Iter {
    type Item = (String, String);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Iter {}

impl IntoIterator for &Cookies {
    type Item = (String, String);
    type IntoIter = Iter;

    fn into_iter(self) -> Iter {
        self.iter()
    }
}

#[cfg(test)]
mod tests;
