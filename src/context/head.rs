//! The request's identity and captured head: its id, and the few request headers
//! the crate reads, kept compactly so a handle can answer for the request after the
//! request itself has moved on.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};

use http::header::{HeaderMap, HeaderValue};

/// The request id: one adopted from tower-http, or a number from this process,
/// written out (inline, no allocation) the first time someone asks for it.
pub(crate) enum Id {
    Made { n: u64, text: OnceLock<IdText> },
    Adopted(HeaderValue),
}

pub(crate) struct IdText {
    buf: [u8; 26],
    len: u8,
}

static PREFIX: LazyLock<u32> = LazyLock::new(|| {
    // Random per process, so ids from two runs of a server do not collide in logs.
    #[allow(clippy::cast_possible_truncation)]
    let bits = RandomState::new().build_hasher().finish() as u32;
    bits
});
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Ids are handed to threads in blocks, so making one touches no shared cache line.
const ID_BLOCK: u64 = 1024;

thread_local! {
    static ID_RANGE: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

#[inline]
fn next_id() -> u64 {
    ID_RANGE.with(|range| {
        let (mut next, mut end) = range.get();
        if next == end {
            next = NEXT.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        range.set((next + 1, end));
        next
    })
}

impl Id {
    #[inline]
    pub(crate) fn adopt(value: &HeaderValue) -> Option<Id> {
        value.to_str().ok().filter(|s| !s.is_empty()).map(|_| Id::Adopted(value.clone()))
    }

    #[inline]
    pub(crate) fn generate() -> Id {
        Id::Made { n: next_id(), text: OnceLock::new() }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Id::Made { n, text } => {
                let text = text.get_or_init(|| IdText::write(*n));
                std::str::from_utf8(&text.buf[..usize::from(text.len)]).unwrap_or_default()
            }
            Id::Adopted(value) => value.to_str().unwrap_or_default(),
        }
    }
}

impl IdText {
    /// `<process prefix, 8 hex digits>-<n in hex>`.
    fn write(n: u64) -> IdText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0_u8; 26];
        let prefix = *PREFIX;
        for (i, slot) in buf[..8].iter_mut().enumerate() {
            *slot = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        buf[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            buf[9 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        #[allow(clippy::cast_possible_truncation)]
        let len = (9 + digits) as u8;
        IdText { buf, len }
    }
}

/// The request headers the crate reads, captured in one pass over the header map.
///
/// Compact on purpose: the context is made for every request, and most requests
/// carry only a few of these headers. Each name has a one-byte slot; values sit
/// inline up to `INLINE`, then in a vector that is allocated only past that.
pub(crate) struct Captured {
    /// Per name this build keeps: 0 when absent, else 1 + the value's index.
    slots: [u8; KEPT],
    inline: [Option<HeaderValue>; INLINE],
    more: Vec<HeaderValue>,
    len: u8,
}

const INLINE: usize = 6;

/// Every name the crate may keep; a build keeps the first `KEPT` of them.
const CAPTURED: [&str; 23] = [
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-length",
    "content-type",
    "cookie",
    "forwarded",
    "host",
    "if-modified-since",
    "if-none-match",
    "origin",
    "referer",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-sessionid",
    // `send_file` (feature "files") hands these to tower-http's file serving.
    "if-match",
    "if-range",
    "if-unmodified-since",
    "range",
];

/// How many of `CAPTURED` this build keeps: the range and precondition headers only
/// when `send_file` exists to read them.
const KEPT: usize = if cfg!(feature = "files") { CAPTURED.len() } else { 19 };

/// The slots of the headers the crate reads on its own paths, for [`Captured::at`].
pub(crate) const ACCEPT: usize = 0;
pub(crate) const COOKIE: usize = 7;

/// The slot of a lowercase header name (as `HeaderName::as_str` gives it).
#[inline]
fn slot(name: &str) -> Option<usize> {
    // A match on the string compiles to a switch on length, then a compare or two:
    // cheaper than walking the list for every request header.
    Some(match name {
        "accept" => 0,
        "accept-charset" => 1,
        "accept-encoding" => 2,
        "accept-language" => 3,
        "cache-control" => 4,
        "content-length" => 5,
        "content-type" => 6,
        "cookie" => 7,
        "forwarded" => 8,
        "host" => 9,
        "if-modified-since" => 10,
        "if-none-match" => 11,
        "origin" => 12,
        "referer" => 13,
        "user-agent" => 14,
        "x-forwarded-for" => 15,
        "x-forwarded-host" => 16,
        "x-forwarded-proto" => 17,
        "x-sessionid" => 18,
        #[cfg(feature = "files")]
        "if-match" => 19,
        #[cfg(feature = "files")]
        "if-range" => 20,
        #[cfg(feature = "files")]
        "if-unmodified-since" => 21,
        #[cfg(feature = "files")]
        "range" => 22,
        _ => return None,
    })
}

impl Captured {
    /// The headers of a test request, captured.
    #[cfg(test)]
    pub(crate) fn capture(headers: &HeaderMap) -> Captured {
        let mut captured = Captured::empty();
        captured.fill(headers);
        captured
    }

    /// Nothing captured yet: the context is built with this, then [`fill`](Self::fill)ed.
    #[inline]
    pub(crate) fn empty() -> Captured {
        Captured { slots: [0; KEPT], inline: Default::default(), more: Vec::new(), len: 0 }
    }

    /// Captures the headers this build keeps. Filled in place, where the context is
    /// being built: a `Captured` returned by value was copied once more on the stack
    /// before the context was copied into its allocation (288 bytes, about 90
    /// instructions a request).
    #[inline]
    pub(crate) fn fill(&mut self, headers: &HeaderMap) {
        for (name, value) in headers {
            let Some(index) = slot(name.as_str()) else {
                continue;
            };
            match self.slots[index] {
                0 => {
                    let at = usize::from(self.len);
                    if at < INLINE {
                        self.inline[at] = Some(value.clone());
                    } else {
                        self.more.push(value.clone());
                    }
                    // At most 23 names, so the count always fits in a byte.
                    self.len += 1;
                    self.slots[index] = self.len;
                }
                stored => {
                    let separator: &[u8] = if index == COOKIE { b"; " } else { b", " };
                    if let Some(first) = self.value_mut(usize::from(stored) - 1) {
                        let mut joined = Vec::with_capacity(first.len() + 2 + value.len());
                        joined.extend_from_slice(first.as_bytes());
                        joined.extend_from_slice(separator);
                        joined.extend_from_slice(value.as_bytes());
                        // Two valid values joined by a visible separator stay valid.
                        if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                            *first = joined;
                        }
                    }
                }
            }
        }
    }

    fn value_mut(&mut self, at: usize) -> Option<&mut HeaderValue> {
        match at.checked_sub(INLINE) {
            None => self.inline[at].as_mut(),
            Some(beyond) => self.more.get_mut(beyond),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&HeaderValue> {
        // Referrer is the spelling the header's name should have had.
        let name = if name.eq_ignore_ascii_case("referrer") { "referer" } else { name };
        let index = match slot(name) {
            Some(index) => index,
            None => CAPTURED[..KEPT].iter().position(|c| c.eq_ignore_ascii_case(name))?,
        };
        self.at(index)
    }

    /// The value in one slot ([`ACCEPT`], [`COOKIE`]): the crate's own reads, which
    /// know the slot and need not find it from the name.
    pub(crate) fn at(&self, index: usize) -> Option<&HeaderValue> {
        let at = usize::from(*self.slots.get(index)?).checked_sub(1)?;
        match at.checked_sub(INLINE) {
            None => self.inline[at].as_ref(),
            Some(beyond) => self.more.get(beyond),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_unique_and_well_formed() {
        let a = Id::generate();
        let b = Id::generate();
        assert_ne!(a.as_str(), b.as_str());
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        assert_eq!(a.as_str().as_bytes()[8], b'-');
    }

    #[test]
    fn slots_match_the_list() {
        assert_eq!(CAPTURED[COOKIE], "cookie");
        assert_eq!(CAPTURED[ACCEPT], "accept");
        for (index, name) in CAPTURED[..KEPT].iter().enumerate() {
            assert_eq!(slot(name), Some(index), "{name}");
        }
        for name in &CAPTURED[KEPT..] {
            assert_eq!(slot(name), None, "{name} is kept only with the files feature");
        }
        assert_eq!(slot("x-other"), None);
    }

    #[test]
    fn ids_from_one_thread_are_consecutive_within_a_block() {
        let a = next_id();
        let b = next_id();
        assert!(b == a + 1 || b % ID_BLOCK == 1 || a.is_multiple_of(ID_BLOCK), "{a} {b}");
    }

    #[test]
    fn capture_joins_repeated_headers() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        headers.append("accept", HeaderValue::from_static("text/html"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        headers.append("x-other", HeaderValue::from_static("x"));
        headers.append("content-length", HeaderValue::from_static("12"));
        let captured = Captured::capture(&headers);
        assert_eq!(captured.get("Cookie").unwrap(), "a=1; b=2");
        assert_eq!(captured.get("Content-Length").unwrap(), "12");
        assert_eq!(captured.get("accept").unwrap(), "text/html, */*");
        assert!(captured.get("x-other").is_none());
        let mut headers = HeaderMap::new();
        headers.insert("referer", HeaderValue::from_static("/from"));
        assert_eq!(Captured::capture(&headers).get("Referrer").unwrap(), "/from");
    }

    #[test]
    fn every_captured_header_is_kept_past_the_inline_ones() {
        let mut headers = HeaderMap::new();
        for (i, name) in CAPTURED.iter().enumerate() {
            headers.insert(*name, HeaderValue::from(i));
        }
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let captured = Captured::capture(&headers);
        for name in &CAPTURED[KEPT..] {
            assert!(captured.get(name).is_none(), "{name}");
        }
        for (i, name) in CAPTURED[..KEPT].iter().enumerate() {
            let want = if *name == "x-forwarded-for" { format!("{i}, 10.0.0.1") } else { i.to_string() };
            assert_eq!(captured.get(name).unwrap(), want.as_str(), "{name}");
        }
    }
}
