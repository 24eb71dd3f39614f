//! The cookie crate's signed format, the one axum-extra's `SignedCookieJar` and
//! tower-cookies' `signed` write: the value is prefixed with the base64 (standard
//! alphabet, padded, so 44 characters) of its HMAC-SHA256 under the key's signing
//! half.
//!
//! Written here rather than through a `cookie::CookieJar` so that the HMAC is keyed
//! once per key (when [`Keys`](super::Keys) are made), not once per cookie: keying
//! hashes a whole block, as much work again as signing a short value. The bytes are
//! the cookie crate's; `tests.rs` checks both directions against it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 with a key's signing half already absorbed; cloned for each use.
pub(crate) type SigningMac = Hmac<Sha256>;

/// The digest's length in base64: 32 bytes, padded.
const DIGEST_LEN: usize = 44;

/// The state for `key`, keyed once.
pub(super) fn keyed(key: &cookie::Key) -> Option<SigningMac> {
    <SigningMac as Mac>::new_from_slice(key.signing()).ok()
}

/// `value` signed: its digest, then the value.
pub(super) fn sign(mac: &SigningMac, value: &str) -> String {
    let mut mac = mac.clone();
    mac.update(value.as_bytes());
    let mut signed = String::with_capacity(DIGEST_LEN + value.len());
    STANDARD.encode_string(mac.finalize().into_bytes(), &mut signed);
    signed.push_str(value);
    signed
}

/// The value inside `signed`, if its digest is `mac`'s (compared in constant time).
pub(super) fn verify<'v>(mac: &SigningMac, signed: &'v str) -> Option<&'v str> {
    if !signed.is_char_boundary(DIGEST_LEN) {
        return None;
    }
    let (digest, value) = signed.split_at(DIGEST_LEN);
    // 44 characters decode to at most 33 bytes; a tag that is not 32 fails below.
    let mut tag = [0_u8; 33];
    let len = STANDARD.decode_slice(digest, &mut tag).ok()?;
    let mut mac = mac.clone();
    mac.update(value.as_bytes());
    mac.verify_slice(&tag[..len]).ok()?;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cookie::{Cookie, CookieJar, Key};

    #[test]
    fn signs_and_verifies_as_the_cookie_crate_does() {
        let key = Key::from(&[9_u8; 64]);
        let mac = keyed(&key).unwrap();
        for value in ["", "ann", "a longer value, with spaces and ünïcode", &"x".repeat(300)] {
            let ours = sign(&mac, value);
            let mut jar = CookieJar::new();
            jar.signed_mut(&key).add(Cookie::new("n", value.to_owned()));
            assert_eq!(jar.get("n").unwrap().value(), ours, "{value:?}");
            assert_eq!(verify(&mac, &ours), Some(value));
            let theirs = jar.signed(&key).get("n").unwrap();
            assert_eq!(theirs.value(), value);
        }
    }

    #[test]
    fn refuses_what_it_did_not_sign() {
        let mac = keyed(&Key::from(&[9_u8; 64])).unwrap();
        let other = keyed(&Key::from(&[8_u8; 64])).unwrap();
        let signed = sign(&mac, "ann");
        assert_eq!(verify(&other, &signed), None);
        let mut tampered = signed.clone();
        tampered.push('!');
        assert_eq!(verify(&mac, &tampered), None);
        for bad in
            ["", "ann", &signed[..43], &format!("{}ann", "A".repeat(44)), &format!("é{}", &signed[2..])]
        {
            assert_eq!(verify(&mac, bad), None, "{bad:?}");
        }
        // A digest without its padding decodes to 33 bytes: not a tag.
        let unpadded = format!("{}A{}", &signed[..43], &signed[44..]);
        assert_eq!(verify(&mac, &unpadded), None);
    }
}
