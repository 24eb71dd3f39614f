//! [`Keys`]: the secrets that sign and encrypt cookies, newest first.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha512;

use super::CookieError;
use super::signed::{self, SigningMac};

/// The label that turns a secret of any length into a 64-byte `cookie::Key`. Changing
/// it would invalidate every cookie signed in the cookie crate's format.
const DERIVE_LABEL: &[u8] = b"tower-context/cookies/v1";

/// Cookie signing and encryption keys, newest first (Keygrip's key list).
///
/// Cookies are signed and encrypted with the first key and verified or decrypted with
/// any of them. A cookie that only an older key verifies is re-signed with the first
/// key on the same response, so keys rotate without logging anyone out: put the new
/// key first, keep the old one second until the cookies it signed have expired.
///
/// A secret is any byte string: a Keygrip string key shared with a Koa or Toa app, or
/// random bytes. Keygrip signatures use it as it is; the cookie crate's format (and
/// private cookies) use a 64-byte [`cookie::Key`] derived from it with HMAC-SHA512, so
/// short secrets work in both formats. Use long random secrets: a signature is only as
/// strong as the secret behind it.
///
/// ```
/// use tower_context::ContextLayer;
/// use tower_context::cookies::Keys;
///
/// let layer = ContextLayer::new().keys(Keys::new(["new secret", "old secret"]));
/// ```
///
/// Cloning is cheap (one `Arc`). `Debug` shows how many keys there are, never the keys.
#[derive(Clone)]
pub struct Keys {
    keys: Arc<[Secret]>,
}

/// One key: the key derived from the secret (cookie crate) and the secret's keyed
/// HMAC states (Keygrip).
pub(crate) struct Secret {
    pub(crate) key: cookie::Key,
    /// The cookie crate's signing HMAC, keyed with `key`'s signing half.
    pub(crate) signing: SigningMac,
    /// Keygrip's HMACs with the key already absorbed: HMAC hashes the padded key
    /// before any data, and that half of the work is the same for every signature.
    pub(crate) keygrip: KeyedMacs,
}

/// HMAC states keyed with one secret, one per Keygrip hash; cloned for each signature.
#[derive(Clone)]
pub(crate) struct KeyedMacs {
    pub(crate) sha1: Hmac<sha1::Sha1>,
    pub(crate) sha256: Hmac<sha2::Sha256>,
    pub(crate) sha512: Hmac<Sha512>,
}

impl KeyedMacs {
    /// HMAC accepts a key of any length, so this is `None` only if that ever changes.
    fn new(secret: &[u8]) -> Option<KeyedMacs> {
        Some(KeyedMacs {
            sha1: <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).ok()?,
            sha256: <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).ok()?,
            sha512: <Hmac<Sha512> as Mac>::new_from_slice(secret).ok()?,
        })
    }
}

impl Keys {
    /// Keys from secrets, newest first. Empty secrets are skipped (an empty HMAC key
    /// signs nothing worth trusting); if none is left, reading or setting a signed or
    /// private cookie is [`CookieError::NoKeys`]. Use [`Keys::try_new`] to get the
    /// error here instead.
    pub fn new<I, K>(secrets: I) -> Keys
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let keys: Vec<Secret> = secrets.into_iter().filter_map(|s| Secret::from_secret(s.as_ref())).collect();
        Keys { keys: keys.into() }
    }

    /// Like [`Keys::new`], but an empty list or an empty secret is an error.
    ///
    /// ```
    /// use tower_context::cookies::{CookieError, Keys};
    ///
    /// assert!(Keys::try_new(["secret"]).is_ok());
    /// assert_eq!(Keys::try_new(["new", ""]).unwrap_err(), CookieError::EmptyKey { index: 1 });
    /// ```
    pub fn try_new<I, K>(secrets: I) -> Result<Keys, CookieError>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let mut keys = Vec::new();
        for (index, secret) in secrets.into_iter().enumerate() {
            keys.push(Secret::from_secret(secret.as_ref()).ok_or(CookieError::EmptyKey { index })?);
        }
        if keys.is_empty() {
            return Err(CookieError::EmptyKey { index: 0 });
        }
        Ok(Keys { keys: keys.into() })
    }

    /// One random 64-byte key. Cookies signed with it do not survive a restart and are
    /// not valid on other instances; for production, load secrets with [`Keys::new`].
    ///
    /// # Panics
    ///
    /// When the operating system cannot provide randomness, as
    /// [`cookie::Key::generate`] does.
    pub fn generate() -> Keys {
        Keys::new([cookie::Key::generate().master()])
    }

    /// Keys that are already [`cookie::Key`]s, newest first: the keys of an app that
    /// used axum-extra's `SignedCookieJar`/`PrivateCookieJar` or tower-cookies, whose
    /// cookies this jar then reads and rotates as they are. For Keygrip signatures the
    /// key's 64 master bytes are the secret.
    pub fn from_cookie_keys(keys: impl IntoIterator<Item = cookie::Key>) -> Keys {
        let keys: Vec<Secret> = keys
            .into_iter()
            .filter_map(|key| {
                let keygrip = KeyedMacs::new(key.master())?;
                Secret::with(key, keygrip)
            })
            .collect();
        Keys { keys: keys.into() }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn secrets(&self) -> &[Secret] {
        &self.keys
    }
}

impl Secret {
    fn with(key: cookie::Key, keygrip: KeyedMacs) -> Option<Secret> {
        Some(Secret { signing: signed::keyed(&key)?, key, keygrip })
    }

    fn from_secret(secret: &[u8]) -> Option<Secret> {
        if secret.is_empty() {
            return None;
        }
        let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(secret).ok()?;
        mac.update(DERIVE_LABEL);
        let key = cookie::Key::try_from(mac.finalize().into_bytes().as_slice()).ok()?;
        let keygrip = KeyedMacs::new(secret)?;
        Secret::with(key, keygrip)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").field("len", &self.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_secrets_are_skipped_or_refused() {
        assert_eq!(Keys::new(["", "a", ""]).len(), 1);
        assert!(Keys::new(Vec::<String>::new()).is_empty());
        assert_eq!(Keys::try_new(Vec::<&str>::new()).unwrap_err(), CookieError::EmptyKey { index: 0 });
        assert_eq!(Keys::try_new(["a", "b", ""]).unwrap_err(), CookieError::EmptyKey { index: 2 });
    }

    /// A Keygrip signature of "x" with a secret's keyed state.
    fn keyed_sig(secret: &Secret) -> Vec<u8> {
        secret.keygrip.sha1.clone().chain_update(b"x").finalize().into_bytes().to_vec()
    }

    /// The same signature, keyed from scratch.
    fn sig_with(raw: &[u8]) -> Vec<u8> {
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(raw)
            .unwrap()
            .chain_update(b"x")
            .finalize()
            .into_bytes()
            .to_vec()
    }

    #[test]
    fn derivation_is_deterministic_and_distinct() {
        let a = Keys::new(["short"]);
        let b = Keys::new([b"short".to_vec()]);
        let c = Keys::new(["other"]);
        assert_eq!(a.secrets()[0].key.master(), b.secrets()[0].key.master());
        assert_ne!(a.secrets()[0].key.master(), c.secrets()[0].key.master());
        assert_eq!(keyed_sig(&a.secrets()[0]), sig_with(b"short"));
    }

    #[test]
    fn generated_keys_differ_and_debug_hides_them() {
        let a = Keys::generate();
        let b = Keys::generate();
        assert_eq!(a.len(), 1);
        assert_ne!(a.secrets()[0].key.master(), b.secrets()[0].key.master());
        assert_ne!(keyed_sig(&a.secrets()[0]), keyed_sig(&b.secrets()[0]));
        assert_eq!(format!("{a:?}"), "Keys { len: 1, .. }");
    }

    #[test]
    fn cookie_keys_are_kept_as_they_are() {
        let key = cookie::Key::generate();
        let keys = Keys::from_cookie_keys([key.clone()]);
        assert_eq!(keys.secrets()[0].key.master(), key.master());
        assert_eq!(keyed_sig(&keys.secrets()[0]), sig_with(key.master()));
    }
}
