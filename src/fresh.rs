//! Koa's `fresh` (the `fresh` package), on header values: whether the client's cached
//! copy of a response is still good. Pure: the request helpers and the conditional
//! GET layer both build on it.
//!
//! The rules are those of the `fresh` package with one correction from RFC 9110
//! §13.2.2: when `If-None-Match` is present, `If-Modified-Since` is ignored.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

/// The request's cache validators, kept while the response is made.
#[derive(Clone, Debug, Default)]
pub(crate) struct Validators {
    pub(crate) if_none_match: Option<HeaderValue>,
    pub(crate) if_modified_since: Option<HeaderValue>,
    pub(crate) no_cache: bool,
}

/// A `Cache-Control` value with the `no-cache` directive: the client wants the
/// resource, not a 304.
pub(crate) fn says_no_cache(cache_control: &HeaderValue) -> bool {
    cache_control.to_str().is_ok_and(|cc| cc.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache")))
}

impl Validators {
    /// The validators of a request, or `None` when it cannot be answered with 304
    /// (another method, or no validators at all). `if_none_match` is every line of
    /// the header joined (they form one list); `cache_control` is read only when
    /// there are validators.
    pub(crate) fn of<'a>(
        method: &Method,
        if_none_match: Option<Cow<'a, HeaderValue>>,
        if_modified_since: Option<&HeaderValue>,
        cache_control: impl FnOnce() -> Option<Cow<'a, HeaderValue>>,
    ) -> Option<Validators> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        if if_none_match.is_none() && if_modified_since.is_none() {
            return None;
        }
        let no_cache = cache_control().is_some_and(|v| says_no_cache(&v));
        Some(Validators {
            if_none_match: if_none_match.map(Cow::into_owned),
            if_modified_since: if_modified_since.cloned(),
            no_cache,
        })
    }

    /// Whether a response with this status and these headers is fresh for the
    /// request.
    pub(crate) fn fresh(&self, status: StatusCode, response: &HeaderMap) -> bool {
        if !(status.is_success() || status == StatusCode::NOT_MODIFIED) || self.no_cache {
            return false;
        }
        if let Some(if_none_match) = &self.if_none_match {
            let Ok(list) = if_none_match.to_str() else { return false };
            if list.trim() == "*" {
                return true;
            }
            let Some(etag) = response.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let etag = opaque(etag.trim());
            return entity_tags(list).any(|tag| opaque(tag) == etag);
        }
        let Some(since) = self.if_modified_since.as_ref().and_then(parse_date) else {
            return false;
        };
        response.get(header::LAST_MODIFIED).and_then(parse_date).is_some_and(|modified| modified <= since)
    }
}

fn parse_date(value: &HeaderValue) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// An entity tag without its weakness indicator, for weak comparison.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// The entity tags of an `If-None-Match` list. Commas inside a quoted tag do not
/// split it; an unquoted entry (not valid, but sent) is taken up to the next comma.
fn entity_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let start = if rest.starts_with("W/") { 2 } else { 0 };
        let end = if rest[start..].starts_with('"') {
            // The closing quote, or the end of a tag left open.
            rest[start + 1..].find('"').map_or(rest.len(), |i| start + i + 2)
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        let (tag, tail) = rest.split_at(end);
        rest = tail;
        Some(tag.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tag_lists_parse_tolerantly() {
        let tags: Vec<&str> = entity_tags(r#" "a,b", W/"c" ,, bare , "open"#).collect();
        assert_eq!(tags, [r#""a,b""#, r#"W/"c""#, "bare", r#""open"#]);
        assert_eq!(entity_tags(",,, ,").count(), 0);
        assert_eq!(entity_tags("W/").collect::<Vec<_>>(), ["W/"]);
    }
}
