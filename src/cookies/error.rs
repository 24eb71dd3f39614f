//! [`CookieError`] and the rules a cookie must follow before it becomes a
//! `Set-Cookie` header.

use std::fmt;

use cookie::Cookie;

use crate::error::HttpError;

/// Why the jar refused a cookie, or why keys could not be made.
///
/// Converts into a 500 [`HttpError`] whose message is not shown to the client (a
/// refused cookie is a bug in the server, not in the request), so `?` works in
/// handlers:
///
/// ```
/// use tower_context::{Context, HttpError};
///
/// async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
///     ctx.cookies().set(("theme", "dark"))?;
///     Ok("saved")
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieError {
    /// The name is empty or has a character outside an HTTP token
    /// (letters, digits and ``!#$%&'*+-.^_`|~``).
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The value has a character that cannot go into `Set-Cookie` as it is: a control
    /// character (CR, LF, tab…), `;`, a byte outside ASCII, or a space at either end.
    /// Percent-encode such values, or use a private cookie, whose value is encrypted.
    InvalidValue {
        /// The cookie's name.
        name: String,
    },
    /// The `Path` or `Domain` has a control character or `;`.
    InvalidAttribute {
        /// The cookie's name.
        name: String,
        /// `"Path"` or `"Domain"`.
        attribute: &'static str,
    },
    /// A `Secure` cookie on a request that is not secure, refused as Koa does. Allow it
    /// with [`ContextLayer::allow_secure_cookies_over_http`](crate::ContextLayer::allow_secure_cookies_over_http).
    SecureOverHttp {
        /// The cookie's name.
        name: String,
    },
    /// A signed or private cookie was set or read, but the layer has no keys
    /// ([`ContextLayer::keys`](crate::ContextLayer::keys)): Toa's and Koa's
    /// "`.keys` required for signed cookies".
    NoKeys,
    /// [`Keys::try_new`](super::Keys::try_new) was given no keys, or an empty one.
    EmptyKey {
        /// The position of the empty key in the list (0 for an empty list).
        index: usize,
    },
}

impl fmt::Display for CookieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieError::InvalidName { name } => {
                write!(f, "invalid cookie name {name:?}: use letters, digits and !#$%&'*+-.^_`|~")
            }
            CookieError::InvalidValue { name } => write!(
                f,
                "invalid value for cookie {name:?}: no control characters, ';', non-ASCII bytes \
                 or surrounding spaces (percent-encode the value)"
            ),
            CookieError::InvalidAttribute { name, attribute } => {
                write!(f, "invalid {attribute} for cookie {name:?}: no control characters or ';'")
            }
            CookieError::SecureOverHttp { name } => {
                write!(f, "cannot send secure cookie {name:?} over unencrypted connection")
            }
            CookieError::NoKeys => {
                f.write_str("signed and private cookies need keys: ContextLayer::new().keys(Keys::new([..]))")
            }
            CookieError::EmptyKey { index } => write!(f, "cookie key {index} is empty"),
        }
    }
}

impl std::error::Error for CookieError {}

impl From<CookieError> for HttpError {
    fn from(err: CookieError) -> Self {
        HttpError::from_error(err)
    }
}

/// An HTTP token (RFC 9110 `tchar`), as RFC 6265 asks of a cookie name.
pub(super) fn check_name(name: &str) -> Result<(), CookieError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.is_empty() && name.bytes().all(tchar) {
        Ok(())
    } else {
        Err(CookieError::InvalidName { name: name.to_owned() })
    }
}

/// Visible ASCII and inner spaces, without `;`. Spaces at the ends are refused because
/// parsers trim them, so the value read back (and a signature over it) would differ.
pub(super) fn check_value(name: &str, value: &str) -> Result<(), CookieError> {
    let ok = value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if ok { Ok(()) } else { Err(CookieError::InvalidValue { name: name.to_owned() }) }
}

/// `Path` and `Domain` may hold anything printable but `;` (RFC 6265 `av-octet`).
pub(super) fn check_attributes(cookie: &Cookie<'_>) -> Result<(), CookieError> {
    let ok = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';');
    for (attribute, value) in [("Path", cookie.path()), ("Domain", cookie.domain())] {
        if value.is_some_and(|v| !ok(v)) {
            return Err(CookieError::InvalidAttribute { name: cookie.name().to_owned(), attribute });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_tokens() {
        assert!(check_name("sid").is_ok());
        assert!(check_name("__Host-a.b_c~1").is_ok());
        for bad in ["", "a b", "a=b", "a;b", "a\r\nb", "ä", "a,b", "a\"b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_cannot_inject_attributes() {
        assert!(check_value("a", "").is_ok());
        assert!(check_value("a", "dark mode").is_ok());
        assert!(check_value("a", "{\"json\":1,\"x\":[2]}").is_ok());
        for bad in ["x; Domain=evil", "x\r\nSet-Cookie: y=1", "x\n", "\t", " x", "x ", "é", "\u{7f}"] {
            assert_eq!(check_value("a", bad), Err(CookieError::InvalidValue { name: "a".into() }), "{bad:?}");
        }
    }

    #[test]
    fn attributes_cannot_inject() {
        let cookie = Cookie::build(("a", "1")).path("/x; Secure").build();
        assert_eq!(
            check_attributes(&cookie),
            Err(CookieError::InvalidAttribute { name: "a".into(), attribute: "Path" })
        );
        let cookie = Cookie::build(("a", "1")).domain("example.com\r\nx: y").build();
        assert!(check_attributes(&cookie).is_err());
        let cookie = Cookie::build(("a", "1")).path("/app").domain("example.com").build();
        assert!(check_attributes(&cookie).is_ok());
    }

    #[test]
    fn errors_become_hidden_500s() {
        let err = HttpError::from(CookieError::NoKeys);
        assert_eq!(err.status(), 500);
        assert!(!err.is_exposed());
    }
}
