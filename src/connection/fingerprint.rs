//! Client fingerprints: a random id the client keeps in a cookie, so its requests
//! can be told apart from other clients' across connections (Actionhero's
//! `fingerprint`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};

use super::Connection;

/// The header a client without cookies may send its fingerprint in.
const HEADER: &str = "x-sessionid";
/// Shorter values are too easy to guess or collide; longer ones are not ours.
const MIN_LEN: usize = 16;
const MAX_LEN: usize = 128;

/// A client's fingerprint: the value of its `sessionID` cookie (or `x-sessionid`
/// header), or a new random one that [`serve`](super::serve) sends back with
/// `Set-Cookie`.
///
/// [`serve`](super::serve) inserts the request's own fingerprint into every
/// request's extensions (in axum: `Extension<Fingerprint>`).
/// [`Connection::fingerprint`] holds the latest request's, which is the same thing
/// unless a proxy sends several clients' requests over one connection.
///
/// A presented value is trusted only if it is 16 to 128 characters of
/// `A-Z a-z 0-9 - _ .`; anything else is replaced by a new one. New ones are 128
/// bits from the operating system's random source, as 32 hex digits, never derived
/// from the request.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(Arc<str>);

impl Fingerprint {
    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A presented value, if it can be trusted as a fingerprint.
    fn parse(value: &str) -> Option<Fingerprint> {
        let well_formed = (MIN_LEN..=MAX_LEN).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        well_formed.then(|| Fingerprint(Arc::from(value)))
    }

    /// A new random fingerprint.
    pub(crate) fn generate() -> Fingerprint {
        let mut bytes = [0_u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            fallback_random(&mut bytes);
        }
        let mut text = String::with_capacity(32);
        for byte in bytes {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Fingerprint(Arc::from(text))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// When the OS source fails (it practically never does): std's per-map random keys,
/// a counter and the clock. Still not derived from the request.
fn fallback_random(bytes: &mut [u8; 16]) {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    for half in bytes.chunks_mut(8) {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(nanos);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fingerprint").field(&self.as_str()).finish()
    }
}

impl AsRef<str> for Fingerprint {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Connection {
    /// The fingerprint of the latest request on the connection (Actionhero's
    /// `fingerprint`): the client's identity across connections. `None` before the
    /// first request, and always under axum's server.
    ///
    /// Behind a proxy that carries several clients over one connection, read the
    /// request's own [`Fingerprint`] from its extensions instead.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.inner.fingerprint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn set_fingerprint(&self, fingerprint: Fingerprint) {
        *self.inner.fingerprint.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fingerprint);
    }
}

/// Where fingerprints are read from and how the cookie is written.
#[derive(Clone, Debug)]
pub(crate) struct FingerprintConfig {
    pub(crate) cookie: String,
    pub(crate) max_age: Option<Duration>,
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        FingerprintConfig { cookie: String::from("sessionID"), max_age: Some(Duration::from_secs(3600)) }
    }
}

/// A request's fingerprint, and the `Set-Cookie` to send when the client's cookie
/// does not already hold it.
pub(crate) struct Resolved {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) set_cookie: Option<HeaderValue>,
}

impl FingerprintConfig {
    /// The request's fingerprint: its valid cookie, else its valid header, else a
    /// new one.
    pub(crate) fn resolve(&self, headers: &HeaderMap) -> Resolved {
        let cookie = self.read_cookie(headers);
        if let Some(fingerprint) = cookie {
            return Resolved { fingerprint, set_cookie: None };
        }
        let fingerprint = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Fingerprint::parse(v.trim()))
            .unwrap_or_else(Fingerprint::generate);
        let set_cookie = self.set_cookie(&fingerprint);
        Resolved { fingerprint, set_cookie }
    }

    /// The first cookie with the configured name, if its value can be trusted.
    fn read_cookie(&self, headers: &HeaderMap) -> Option<Fingerprint> {
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|line| line.to_str().ok())
            .flat_map(cookie::Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|c| c.name() == self.cookie)?;
        Fingerprint::parse(value.value())
    }

    fn set_cookie(&self, fingerprint: &Fingerprint) -> Option<HeaderValue> {
        let mut cookie = cookie::Cookie::build((self.cookie.as_str(), fingerprint.as_str()))
            .path("/")
            .http_only(true)
            .same_site(cookie::SameSite::Lax)
            .build();
        if let Some(max_age) = self.max_age {
            let max_age = cookie::time::Duration::try_from(max_age).unwrap_or(cookie::time::Duration::MAX);
            cookie.set_max_age(max_age);
            if let Some(expires) = cookie::time::OffsetDateTime::now_utc().checked_add(max_age) {
                cookie.set_expires(expires);
            }
        }
        HeaderValue::from_str(&cookie.encoded().to_string()).ok()
    }
}

/// Whether `name` can be a cookie name (an HTTP token).
pub(crate) fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn generated_ones_are_random_hex() {
        let a = Fingerprint::generate();
        let b = Fingerprint::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(Fingerprint::parse(a.as_str()).is_some());
    }

    #[test]
    fn fallback_is_not_constant() {
        let mut a = [0; 16];
        let mut b = [0; 16];
        fallback_random(&mut a);
        fallback_random(&mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn cookie_wins_over_header() {
        let config = FingerprintConfig::default();
        let r = config.resolve(&headers(&[
            ("cookie", "a=1; sessionID=0123456789abcdef0123"),
            ("x-sessionid", "ffffffffffffffffffff"),
        ]));
        assert_eq!(r.fingerprint.as_str(), "0123456789abcdef0123");
        assert!(r.set_cookie.is_none());
    }

    #[test]
    fn header_is_used_and_then_set_as_cookie() {
        let config = FingerprintConfig::default();
        let r = config.resolve(&headers(&[("x-sessionid", "ffffffffffffffffffff")]));
        assert_eq!(r.fingerprint.as_str(), "ffffffffffffffffffff");
        let cookie = r.set_cookie.unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.starts_with("sessionID=ffffffffffffffffffff"), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("Path=/") && cookie.contains("Max-Age=3600"));
        assert!(cookie.contains("Expires="));
    }

    #[test]
    fn bad_values_are_replaced() {
        let config = FingerprintConfig::default();
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            "short",
            "has space in it 123",
            "quote\"quote\"quote\"quote",
            long.as_str(),
            "ünïcödé-ünïcödé-ünïcödé",
        ] {
            let cookie = format!("sessionID={bad}");
            let Ok(value) = HeaderValue::from_bytes(cookie.as_bytes()) else { continue };
            let mut map = HeaderMap::new();
            map.insert(header::COOKIE, value);
            let r = config.resolve(&map);
            assert_ne!(r.fingerprint.as_str(), bad);
            assert_eq!(r.fingerprint.as_str().len(), 32);
            assert!(r.set_cookie.is_some());
        }
    }

    #[test]
    fn no_expiry_when_max_age_is_none() {
        let config = FingerprintConfig { cookie: "sid".into(), max_age: None };
        let r = config.resolve(&HeaderMap::new());
        let cookie = r.set_cookie.unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.starts_with("sid="));
        assert!(!cookie.contains("Max-Age") && !cookie.contains("Expires"));
    }

    #[test]
    fn cookie_names() {
        assert!(valid_cookie_name("sessionID"));
        assert!(!valid_cookie_name(""));
        assert!(!valid_cookie_name("a b"));
        assert!(!valid_cookie_name("a=b"));
    }
}
