//! Keygrip signatures, byte-compatible with the Node `keygrip` module that the
//! `cookies` module (Koa, Toa, Express) uses for `name.sig` companion cookies.
//!
//! A signature is the HMAC of `name=value` under one key, in base64 with `+` → `-`,
//! `/` → `_` and no `=` padding: the URL-safe alphabet without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use subtle::ConstantTimeEq;

use super::KeygripHash;
use super::keys::{KeyedMacs, Keys};

/// The signature of the cookie `name=value` under one key (the text is hashed in
/// its three parts, never joined).
pub(super) fn sign(hash: KeygripHash, key: &KeyedMacs, name: &str, value: &str) -> String {
    let mut buf = [0_u8; ENCODED_MAX];
    // Base64 is ASCII: the check cannot fail.
    std::str::from_utf8(sign_into(hash, key, name, value, &mut buf)).map(str::to_owned).unwrap_or_default()
}

/// Keygrip's `index`: the position of the key whose signature of `name=value` is
/// `signature`, comparing in constant time.
pub(super) fn index(
    hash: KeygripHash,
    keys: &Keys,
    name: &str,
    value: &str,
    signature: &str,
) -> Option<usize> {
    let mut buf = [0_u8; ENCODED_MAX];
    keys.secrets().iter().position(|secret| {
        let expected = sign_into(hash, &secret.keygrip, name, value, &mut buf);
        !expected.is_empty() && bool::from(expected.ct_eq(signature.as_bytes()))
    })
}

/// The longest signature's text: a SHA-512 MAC (64 bytes) in unpadded base64.
const ENCODED_MAX: usize = 86;

/// The signature's text, written into a buffer on the stack: checking a signature
/// allocates nothing.
fn sign_into<'b>(
    hash: KeygripHash,
    key: &KeyedMacs,
    name: &str,
    value: &str,
    buf: &'b mut [u8; ENCODED_MAX],
) -> &'b [u8] {
    match hash {
        KeygripHash::Sha1 => encode_into(key.sha1.clone(), name, value, buf),
        KeygripHash::Sha256 => encode_into(key.sha256.clone(), name, value, buf),
        KeygripHash::Sha512 => encode_into(key.sha512.clone(), name, value, buf),
    }
}

fn encode_into<'b, M: Mac>(
    mut keyed: M,
    name: &str,
    value: &str,
    buf: &'b mut [u8; ENCODED_MAX],
) -> &'b [u8] {
    keyed.update(name.as_bytes());
    keyed.update(b"=");
    keyed.update(value.as_bytes());
    let written = URL_SAFE_NO_PAD.encode_slice(keyed.finalize().into_bytes(), buf).unwrap_or(0);
    &buf[..written]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from the reference algorithm (Node's keygrip), computed with:
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"keyboard cat",
    //   b"sid=abc123", hashlib.sha1).digest()).decode().replace("/","_").replace("+","-").replace("=",""))'
    fn keyed(secret: &str) -> KeyedMacs {
        Keys::new([secret]).secrets()[0].keygrip.clone()
    }

    #[test]
    fn matches_node_keygrip() {
        assert_eq!(
            sign(KeygripHash::Sha1, &keyed("keyboard cat"), "sid", "abc123"),
            "bDPldTuO4L189k44cqUSZURruS8"
        );
        assert_eq!(
            sign(KeygripHash::Sha256, &keyed("keyboard cat"), "sid", "abc123"),
            "Dn_cVD-uC6jmvTZ1X_i-ehcPWa2TeXNUx7TdlF1z-a8"
        );
        assert_eq!(
            sign(KeygripHash::Sha512, &keyed("keyboard cat"), "user", "ann"),
            "khKAD8gYpafgFpSeT2QIIT5aYz3ViJNCuawqnvoNJzm4Q-8n8cx4aAQDwRV1pikgMZFfmJkpD61SbE7nnWjNvA"
        );
    }

    #[test]
    fn index_finds_the_signing_key() {
        let keys = Keys::new(["new secret", "old secret"]);
        let old = sign(KeygripHash::Sha1, &keyed("old secret"), "sid", "abc123");
        assert_eq!(old, "HgpzBDoHrpbYT1kZUjJAfZzINsA");
        assert_eq!(index(KeygripHash::Sha1, &keys, "sid", "abc123", &old), Some(1));
        let new = sign(KeygripHash::Sha1, &keyed("new secret"), "sid", "abc123");
        assert_eq!(index(KeygripHash::Sha1, &keys, "sid", "abc123", &new), Some(0));
        assert_eq!(index(KeygripHash::Sha1, &keys, "sid", "abc124", &new), None);
        assert_eq!(index(KeygripHash::Sha256, &keys, "sid", "abc123", &new), None);
        assert_eq!(index(KeygripHash::Sha1, &keys, "sid", "abc123", ""), None);
        assert_eq!(index(KeygripHash::Sha1, &Keys::new([""]), "sid", "abc123", &new), None);
    }
}
