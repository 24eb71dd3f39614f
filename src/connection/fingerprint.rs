//! Client fingerprints: a random id the client keeps in a cookie, so its requests
//! can be told apart from other clients' across connections (Actionhero's
//! `fingerprint`).

use std::fmt;
use std::sync::Arc;

use super::Connection;

/// Shorter values are too easy to guess or collide; longer ones are not ours.
const MIN_LEN: usize = 16;
pub(crate) const MAX_LEN: usize = 128;

/// A client's fingerprint: the value of its `sessionID` cookie (or `x-sessionid`
/// header), or a new random one that [`serve`](crate::serve) sends back with
/// `Set-Cookie`.
///
/// [`serve`](crate::serve) inserts the request's own fingerprint into every
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
    pub(crate) fn parse(value: &str) -> Option<Fingerprint> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
