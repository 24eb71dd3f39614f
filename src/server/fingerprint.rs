//! Where a client's fingerprint is read from, and the cookie that gives it one
//! (Actionhero's `fingerprint`, resolved by [`serve`](crate::serve) per request).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};

use crate::connection::Fingerprint;

/// The header a client without cookies may send its fingerprint in.
const HEADER: &str = "x-sessionid";

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
    ///
    /// Every request pays for this, so it scans for the name (as Node's `cookies`
    /// module does) instead of parsing each pair, and looks at no more pairs than the
    /// jar reads: a header of tens of thousands of pairs costs no more than a
    /// browser's largest.
    fn read_cookie(&self, headers: &HeaderMap) -> Option<Fingerprint> {
        let name = self.cookie.as_bytes();
        // On bytes, pair by pair: one pair that is not UTF-8 (a cookie of another app
        // on the domain, say) hides no other; and only pairs with a name and an `=`
        // count towards the limit. (The jar also leaves out pairs that are not UTF-8:
        // the two can differ only at the limit.)
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|line| line.as_bytes().split(|b| *b == b';'))
            .filter_map(|pair| {
                let eq = pair.iter().position(|b| *b == b'=')?;
                let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
                (!key.is_empty()).then_some((key, value))
            })
            .take(crate::cookies::MAX_PAIRS)
            .find_map(|(key, value)| (key == name).then_some(value))?;
        let value = std::str::from_utf8(value).ok()?;
        Fingerprint::parse(value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value))
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
        let long = "a".repeat(crate::connection::fingerprint::MAX_LEN + 1);
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
    fn only_the_first_pairs_are_scanned() {
        let config = FingerprintConfig::default();
        let filler: String = (0..30_000).map(|i| format!("k{i}=v; ")).collect();
        // Early in a huge header: found.
        let early = format!("sessionID=0123456789abcdef0123; {filler}");
        let r = config.resolve(&headers(&[("cookie", &early)]));
        assert_eq!(r.fingerprint.as_str(), "0123456789abcdef0123");
        // Past the pairs the jar reads: not looked for, a new one is made.
        let late = format!("{filler}sessionID=0123456789abcdef0123");
        let r = config.resolve(&headers(&[("cookie", &late)]));
        assert_ne!(r.fingerprint.as_str(), "0123456789abcdef0123");
        assert!(r.set_cookie.is_some());
        // A name that only ends like ours is another cookie; spaces and quotes are
        // as browsers and Node's `cookies` module allow.
        let r = config.resolve(&headers(&[(
            "cookie",
            "xsessionID=ffffffffffffffffffff; sessionID = \"0123456789abcdef0123\"",
        )]));
        assert_eq!(r.fingerprint.as_str(), "0123456789abcdef0123");
    }

    /// A pair that is not UTF-8 elsewhere in the header (another app's cookie)
    /// hides nothing: the fingerprint is read, and no new one is set over it.
    #[test]
    fn a_pair_outside_utf8_hides_no_other() {
        let config = FingerprintConfig::default();
        for line in [
            &b"sessionID=0123456789abcdef0123; pref=caf\xC3\xA9; x=\xFF"[..],
            b"x=\xFF; sessionID=0123456789abcdef0123",
        ] {
            let mut map = HeaderMap::new();
            map.append(header::COOKIE, HeaderValue::from_bytes(line).unwrap());
            let r = config.resolve(&map);
            assert_eq!(r.fingerprint.as_str(), "0123456789abcdef0123", "{line:?}");
            assert!(r.set_cookie.is_none());
        }
        // Segments that are not pairs do not count towards the pairs read.
        let empty = format!("{}sessionID=0123456789abcdef0123", ";".repeat(1000));
        assert_eq!(
            config.resolve(&headers(&[("cookie", &empty)])).fingerprint.as_str(),
            "0123456789abcdef0123"
        );
    }

    #[test]
    fn cookie_names() {
        assert!(valid_cookie_name("sessionID"));
        assert!(!valid_cookie_name(""));
        assert!(!valid_cookie_name("a b"));
        assert!(!valid_cookie_name("a=b"));
    }
}
