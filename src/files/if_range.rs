//! `If-Range` (RFC 9110 §13.1.5), which tower-http's file serving does not read: a
//! client that resumes a download says which version its first part came from, and
//! gets the rest only if the file is still that version; otherwise the whole file.
//!
//! The validator is compared with the one the response carries: an entity tag
//! strongly with `ETag` (a weak tag never matches), a date exactly with
//! `Last-Modified`. Anything else (a malformed value) never matches, so the client
//! gets the whole file rather than a part it cannot trust.

use http::header::{ETAG, HeaderMap, HeaderValue, LAST_MODIFIED};

/// Whether the `If-Range` validator `given` names the version whose validators are
/// in `current` (the response's headers).
pub(super) fn matches(given: &HeaderValue, current: &HeaderMap) -> bool {
    let given = trim(given.as_bytes());
    if given.first() == Some(&b'"') {
        return is_entity_tag(given) && current.get(ETAG).is_some_and(|etag| etag.as_bytes() == given);
    }
    let Some(date) = std::str::from_utf8(given).ok().and_then(|s| httpdate::parse_http_date(s).ok()) else {
        // A weak tag (`W/"..."`) or anything unreadable.
        return false;
    };
    // A date is a weak validator: it counts only for a file last changed at least a
    // second before now (RFC 9110 §8.8.2.2), else two versions written within the
    // same second would share it.
    let settled = |modified: std::time::SystemTime| {
        modified + std::time::Duration::from_secs(1) <= std::time::SystemTime::now()
    };
    current
        .get(LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|modified| modified == date && settled(modified))
}

/// A strong entity tag: `"`, then no `"`, then `"`.
fn is_entity_tag(tag: &[u8]) -> bool {
    tag.len() >= 2 && tag.ends_with(b"\"") && !tag[1..tag.len() - 1].contains(&b'"')
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"67a1b2c3.0000beef-400\""));
        headers.insert(LAST_MODIFIED, HeaderValue::from_static("Tue, 04 Feb 2025 10:00:00 GMT"));
        headers
    }

    fn check(given: &'static str) -> bool {
        matches(&HeaderValue::from_static(given), &current())
    }

    #[test]
    fn the_current_tag_or_date_matches() {
        assert!(check("\"67a1b2c3.0000beef-400\""));
        assert!(check("  \"67a1b2c3.0000beef-400\" "));
        assert!(check("Tue, 04 Feb 2025 10:00:00 GMT"));
    }

    #[test]
    fn stale_weak_and_malformed_validators_do_not() {
        for given in [
            "\"an-older-version\"",
            "W/\"67a1b2c3.0000beef-400\"",
            "Tue, 04 Feb 2025 09:59:59 GMT",
            "Wed, 05 Feb 2025 10:00:00 GMT",
            "yesterday",
            "\"unterminated",
            "\"a\"b\"",
            "\"",
            "",
            "Tue, 04 Feb 2025 10:00:00",
        ] {
            assert!(!check(given), "{given}");
        }
    }

    #[test]
    fn a_response_without_validators_matches_nothing() {
        let empty = HeaderMap::new();
        assert!(!matches(&HeaderValue::from_static("\"x\""), &empty));
        assert!(!matches(&HeaderValue::from_static("Tue, 04 Feb 2025 10:00:00 GMT"), &empty));
    }
}
