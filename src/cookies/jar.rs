//! The jar's storage: the request's cookies, parsed as far as reads need, and the
//! response's changes, at most one per name.

use std::collections::HashSet;

use cookie::{Cookie, SameSite};
use http::header::{HeaderMap, HeaderValue, SET_COOKIE};

pub(super) struct Jar {
    header: Header,
    /// Where the request's pairs lie in the header, found so far.
    index: Index,
    /// What goes out as `Set-Cookie`, in the order names were first changed.
    changes: Vec<Change>,
}

/// The `Cookie` header as text.
enum Header {
    None,
    /// Valid UTF-8 (checked once): the header's own bytes, shared, not copied.
    Valid(HeaderValue),
    /// Had invalid UTF-8: the pairs that are valid, joined (made once).
    Cleaned(Box<str>),
}

/// The header parsed as far as reads have needed: a read looks through the pairs
/// found so far, then parses on only until it finds its name. Each pair is parsed
/// once however many reads there are, and a read of an early cookie does not parse
/// the ones after it.
///
/// At most `limit` pairs are read (16 bytes each kept): a hostile header of a hundred
/// thousand tiny pairs costs no more time or memory than a browser's largest. Pairs
/// past the limit read as absent, and `truncated` says so.
struct Index {
    /// Name and value of each well-formed pair, in request order.
    pairs: Pairs,
    /// Where the part of the header not in `pairs` starts.
    rest: usize,
    limit: usize,
    /// A pair past the limit was found: the jar did not read the whole header.
    truncated: bool,
}

/// The default limit: browsers keep at most about 180 cookies per domain.
pub(crate) const MAX_PAIRS: usize = 256;

/// Where a pair's name and value lie in the header.
#[derive(Clone, Copy, Default)]
struct Pair {
    name: (u32, u32),
    value: (u32, u32),
}

/// How many pairs the index keeps without a heap allocation.
const INLINE_PAIRS: usize = 8;

/// The pairs found so far: the first few in place (a read usually finds its cookie
/// among them, and a small header has no more), the rest on the heap.
#[derive(Default)]
struct Pairs {
    inline: [Pair; INLINE_PAIRS],
    /// How many of `inline` are pairs found.
    used: usize,
    more: Vec<Pair>,
}

impl Pairs {
    fn len(&self) -> usize {
        self.used + self.more.len()
    }

    fn push(&mut self, pair: Pair) {
        match self.inline.get_mut(self.used) {
            Some(slot) => {
                *slot = pair;
                self.used += 1;
            }
            None => self.more.push(pair),
        }
    }

    fn iter(&self) -> impl Iterator<Item = Pair> + '_ {
        self.inline.iter().take(self.used).chain(&self.more).copied()
    }
}

struct Change {
    cookie: Cookie<'static>,
    removed: bool,
}

impl Header {
    fn new(header: Option<HeaderValue>) -> Header {
        let Some(header) = header else { return Header::None };
        if std::str::from_utf8(header.as_bytes()).is_ok() {
            return Header::Valid(header);
        }
        // Keep every pair that is valid UTF-8 and drop the others, rather than turning
        // bad bytes into U+FFFD and handing out values that were never sent.
        let cleaned = header
            .as_bytes()
            .split(|b| *b == b';')
            .filter_map(|pair| std::str::from_utf8(pair).ok())
            .collect::<Vec<_>>()
            .join(";");
        Header::Cleaned(cleaned.into_boxed_str())
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Header::None => b"",
            Header::Valid(value) => value.as_bytes(),
            Header::Cleaned(text) => text.as_bytes(),
        }
    }

    /// A stretch of the header, as bytes.
    fn raw(&self, (start, end): (u32, u32)) -> &[u8] {
        let range = usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(usize::MAX);
        self.bytes().get(range).unwrap_or_default()
    }

    /// A stretch of the header, as text. The header is valid UTF-8 and is only cut at
    /// `;`, `=` and trimmed edges, all of them character boundaries, so this checks
    /// the stretch itself, no more.
    fn slice(&self, span: (u32, u32)) -> &str {
        std::str::from_utf8(self.raw(span)).unwrap_or_default()
    }

    /// The next well-formed pair from byte `at` on, moving `at` past it: `None` at the
    /// end of the header. A `;`-separated segment that is not a cookie (no `=`, or
    /// no name) is skipped, as the cookie crate's `split_parse` skips it. The pair is
    /// read by the cookie crate's rule, on bytes: split at the first `=`, both sides
    /// trimmed (a test holds the two to the same answers).
    fn next_pair(&self, at: &mut usize) -> Option<Pair> {
        let bytes = self.bytes();
        while *at < bytes.len() {
            let start = *at;
            let end = bytes[start..].iter().position(|b| *b == b';').map_or(bytes.len(), |i| start + i);
            *at = end + 1;
            let Some(eq) = bytes[start..end].iter().position(|b| *b == b'=').map(|i| start + i) else {
                continue;
            };
            let (Some(name), Some(value)) = (trimmed(bytes, start, eq), trimmed(bytes, eq + 1, end)) else {
                // Offsets fit in 32 bits: a header of 4 GiB is refused long before
                // here (and one that did not fit would end the pairs, not panic).
                return None;
            };
            if name.0 < name.1 {
                return Some(Pair { name, value });
            }
        }
        None
    }
}

/// Where `bytes[from..to]` lies once trimmed as `str::trim` trims it. Header bytes
/// are visible ASCII, tabs and (rarely) UTF-8 beyond ASCII: ASCII whitespace is
/// trimmed on bytes, and only an edge outside ASCII, which could be other Unicode
/// whitespace, is trimmed as text.
fn trimmed(bytes: &[u8], from: usize, to: usize) -> Option<(u32, u32)> {
    let slice = bytes.get(from..to)?;
    let kept = slice.trim_ascii();
    let lead = kept.as_ptr() as usize - slice.as_ptr() as usize;
    let (mut from, mut to) = (from + lead, from + lead + kept.len());
    if kept.first().is_some_and(|b| !b.is_ascii()) || kept.last().is_some_and(|b| !b.is_ascii()) {
        let text = std::str::from_utf8(kept).ok()?;
        let trimmed = text.trim();
        from += trimmed.as_ptr() as usize - text.as_ptr() as usize;
        to = from + trimmed.len();
    }
    Some((u32::try_from(from).ok()?, u32::try_from(to).ok()?))
}

impl Index {
    /// Parses the next pair into the index, if one is left within the limit.
    fn grow(&mut self, header: &Header) -> Option<Pair> {
        if self.pairs.len() >= self.limit {
            if !self.truncated {
                let mut at = self.rest;
                self.truncated = header.next_pair(&mut at).is_some();
            }
            return None;
        }
        let pair = header.next_pair(&mut self.rest)?;
        self.pairs.push(pair);
        Some(pair)
    }
}

impl Jar {
    #[inline]
    pub(super) fn new(header: Option<HeaderValue>, limit: usize) -> Jar {
        let index = Index { pairs: Pairs::default(), rest: 0, limit, truncated: false };
        Jar { header: Header::new(header), index, changes: Vec::new() }
    }

    /// Whether the request had more pairs than the jar reads (known once a read went
    /// that far).
    pub(super) fn truncated(&self) -> bool {
        self.index.truncated
    }

    /// The value a client would send next: this response's change if there is one
    /// (none when removed), else the request's first cookie of that name (browsers
    /// send the most specific one first).
    #[inline]
    pub(super) fn get(&mut self, name: &str) -> Option<&str> {
        self.get_by(|n| n == name.as_bytes())
    }

    /// [`get`](Self::get) for the first name that `is` accepts (all of one name).
    /// Names are compared as bytes: only the value found is checked as text.
    pub(super) fn get_by(&mut self, is: impl Fn(&[u8]) -> bool) -> Option<&str> {
        if let Some(at) = self.changes.iter().position(|c| is(c.cookie.name().as_bytes())) {
            let change = &self.changes[at];
            return (!change.removed).then(|| change.cookie.value());
        }
        let header = &self.header;
        let index = &mut self.index;
        let found = index.pairs.iter().find(|pair| is(header.raw(pair.name)));
        let found = found
            .or_else(|| std::iter::from_fn(|| index.grow(header)).find(|pair| is(header.raw(pair.name))));
        found.map(|pair| header.slice(pair.value))
    }

    /// Records a cookie to send; it replaces an earlier change of the same name.
    pub(super) fn put(&mut self, cookie: Cookie<'static>, removed: bool) {
        let change = Change { cookie, removed };
        match self.changes.iter_mut().find(|c| c.cookie.name() == change.cookie.name()) {
            Some(slot) => *slot = change,
            None => self.changes.push(change),
        }
    }

    /// Every cookie [`get`](Self::get) would find, request order first.
    pub(super) fn snapshot(&mut self) -> Vec<(String, String)> {
        while self.index.grow(&self.header).is_some() {}
        let header = &self.header;
        let changes = &self.changes;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for pair in self.index.pairs.iter() {
            let (name, value) = (header.slice(pair.name), header.slice(pair.value));
            if !seen.insert(name) {
                continue;
            }
            match changes.iter().find(|c| c.cookie.name() == name) {
                Some(change) if change.removed => {}
                Some(change) => out.push((name.to_owned(), change.cookie.value().to_owned())),
                None => out.push((name.to_owned(), value.to_owned())),
            }
        }
        for change in changes {
            if !change.removed && !seen.contains(change.cookie.name()) {
                out.push((change.cookie.name().to_owned(), change.cookie.value().to_owned()));
            }
        }
        out
    }

    /// Appends one `Set-Cookie` per change. Every cookie was checked when it was put,
    /// so none is dropped here; one that still failed to make a header would be.
    #[inline]
    pub(super) fn write(&self, headers: &mut HeaderMap) {
        if self.changes.is_empty() {
            return;
        }
        // One buffer for every line, on the stack: each line is copied once, into
        // its header value, which is the only allocation it makes.
        let mut line = Line::new();
        for change in &self.changes {
            line.clear();
            if set_cookie_line(&change.cookie, &mut line).is_ok()
                && let Some(value) = line.header_value()
            {
                headers.append(SET_COOKIE, value);
            }
        }
    }
}

/// A `Set-Cookie` line being written: in a stack buffer that holds nearly every
/// line, and on the heap past it.
struct Line {
    stack: [u8; Line::STACK],
    len: usize,
    /// The whole line, once it outgrew the stack buffer.
    heap: String,
}

impl Line {
    const STACK: usize = 256;

    fn new() -> Line {
        Line { stack: [0; Line::STACK], len: 0, heap: String::new() }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.heap.clear();
    }

    fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            self.stack.get(..self.len).unwrap_or_default()
        } else {
            self.heap.as_bytes()
        }
    }

    /// The line as a header value, if it is one. `from_bytes` admits what
    /// `from_str` admits of the same text (a test holds the two together), without
    /// asking for the text as `str` again.
    fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }

    /// Goes on in `heap`, moving what the stack buffer holds there first.
    #[cold]
    fn spill(&mut self, text: &str) -> std::fmt::Result {
        if self.heap.is_empty() {
            // Everything written so far was `str`, so the bytes are text.
            let written = std::str::from_utf8(self.stack.get(..self.len).unwrap_or_default())
                .map_err(|_| std::fmt::Error)?;
            self.heap.reserve(self.len + text.len());
            self.heap.push_str(written);
        }
        self.heap.push_str(text);
        Ok(())
    }
}

impl std::fmt::Write for Line {
    #[inline]
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        if self.heap.is_empty()
            && let Some(room) = self.stack.get_mut(self.len..end)
        {
            room.copy_from_slice(text.as_bytes());
            self.len = end;
            return Ok(());
        }
        self.spill(text)
    }
}

/// Writes `cookie` as a `Set-Cookie` value: the cookie crate's `Display`, byte for
/// byte (its attributes in its order), without the formatting machinery for the
/// plain text that most lines are. A cookie with `Expires` is left to `Display`,
/// which owns the date's format.
fn set_cookie_line(cookie: &Cookie<'_>, line: &mut impl std::fmt::Write) -> std::fmt::Result {
    if cookie.expires().is_some() {
        return write!(line, "{cookie}");
    }
    line.write_str(cookie.name())?;
    line.write_char('=')?;
    line.write_str(cookie.value())?;
    if cookie.http_only() == Some(true) {
        line.write_str("; HttpOnly")?;
    }
    if let Some(same_site) = cookie.same_site() {
        line.write_str(match same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        })?;
    }
    let partitioned = cookie.partitioned() == Some(true);
    if partitioned {
        line.write_str("; Partitioned")?;
    }
    if cookie.secure() == Some(true)
        || partitioned
        || (cookie.secure().is_none() && cookie.same_site() == Some(SameSite::None))
    {
        line.write_str("; Secure")?;
    }
    if let Some(path) = cookie.path() {
        line.write_str("; Path=")?;
        line.write_str(path)?;
    }
    if let Some(domain) = cookie.domain() {
        line.write_str("; Domain=")?;
        line.write_str(domain)?;
    }
    if let Some(max_age) = cookie.max_age() {
        write!(line, "; Max-Age={}", max_age.whole_seconds())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar(header: &[u8]) -> Jar {
        Jar::new(Some(HeaderValue::from_bytes(header).unwrap()), MAX_PAIRS)
    }

    #[test]
    fn a_valid_header_is_read_in_place_and_parsed_lazily() {
        // Valid UTF-8 is kept as the header itself, not copied, and indexed once.
        let header = HeaderValue::from_static("a=1");
        let mut jar = Jar::new(Some(header.clone()), MAX_PAIRS);
        assert!(
            matches!(&jar.header, Header::Valid(kept) if kept.as_bytes().as_ptr() == header.as_bytes().as_ptr())
        );
        jar.put(Cookie::new("b", "2"), false);
        assert_eq!(jar.index.rest, 0);
        assert_eq!(jar.get("a"), Some("1"));
        assert_eq!(jar.index.pairs.len(), 1);
    }

    #[test]
    fn first_of_duplicate_names_wins() {
        let mut jar = jar(b"a=1; b=2; a=3");
        assert_eq!(jar.get("a"), Some("1"));
        assert_eq!(jar.snapshot(), [("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn malformed_pairs_are_skipped() {
        let mut jar = jar(b";;novalue; =x; a=1 ;  ; b==2; c=\"q\"; d=");
        let all = jar.snapshot();
        let names: Vec<_> = all.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(names, ["a=1", "b==2", "c=\"q\"", "d="]);
    }

    #[test]
    fn pairs_with_bad_utf8_are_dropped_alone() {
        let mut jar = jar(b"a=1; bad=\xff\xfe; c=\xc3\xa9; d=4");
        assert_eq!(jar.get("a"), Some("1"));
        assert_eq!(jar.get("bad"), None);
        assert_eq!(jar.get("c"), Some("é"));
        assert_eq!(jar.get("d"), Some("4"));
    }

    #[test]
    fn pairs_are_read_as_the_cookie_crate_reads_them() {
        // Segments with spaces, tabs, `=` in values, quotes, no name, no `=`, and
        // Unicode whitespace (no-break space, ideographic space) around either side.
        let segments = [
            "a=1",
            " b = 2 ",
            "\tc\t=\t3\t",
            "d==4=",
            "e=\"q\"",
            "f=",
            "=g",
            " = ",
            "novalue",
            "",
            "   ",
            "\u{a0}h\u{a0}=\u{a0}5\u{a0}",
            "\u{3000}i=\u{3000}",
            "j\u{e9}=\u{e9}6",
            "k =\u{a0}",
        ];
        let header = segments.join(";");
        let mut jar = jar(header.as_bytes());
        while jar.index.grow(&jar.header).is_some() {}
        let ours: Vec<_> = jar
            .index
            .pairs
            .iter()
            .map(|pair| (jar.header.slice(pair.name), jar.header.slice(pair.value)))
            .collect();
        let theirs: Vec<_> = Cookie::split_parse(header.as_str())
            .filter_map(Result::ok)
            .map(|c| (c.name_raw().unwrap_or_default(), c.value_raw().unwrap_or_default()))
            .collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours.len(), 10);
    }

    #[test]
    fn names_match_whole_and_exact_in_any_script() {
        // Names are compared as bytes: a prefix, a longer name or another case is no
        // match, and a name outside ASCII is found as it was sent.
        let mut jar = jar("sess=1; session2=2; Session=3; \u{e9}t\u{e9}=4; session=5".as_bytes());
        assert_eq!(jar.get("session"), Some("5"));
        assert_eq!(jar.get("\u{e9}t\u{e9}"), Some("4"));
        assert_eq!(jar.get("sessio"), None);
        assert_eq!(jar.get("SESSION"), None);
    }

    #[test]
    fn changes_shadow_the_request_and_replace_each_other() {
        let mut jar = jar(b"a=1; b=2");
        jar.put(Cookie::new("a", "x"), false);
        jar.put(Cookie::new("a", "y"), false);
        jar.put(Cookie::new("b", ""), true);
        jar.put(Cookie::new("c", "3"), false);
        assert_eq!(jar.get("a"), Some("y"));
        assert_eq!(jar.get("b"), None);
        let all = jar.snapshot();
        assert_eq!(all, [("a".to_owned(), "y".to_owned()), ("c".to_owned(), "3".to_owned())]);
        let mut headers = HeaderMap::new();
        jar.write(&mut headers);
        let lines: Vec<_> = headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(lines, ["a=y", "b=", "c=3"]);
    }

    #[test]
    fn a_huge_header_parses() {
        let mut header = Vec::new();
        while header.len() < 64 * 1024 {
            header.extend_from_slice(format!("k{}=v; ", header.len()).as_bytes());
        }
        header.extend_from_slice(b"last=yes");
        // Within a limit that covers it, every pair is read.
        let mut all = Jar::new(Some(HeaderValue::from_bytes(&header).unwrap()), 10_000);
        assert_eq!(all.get("last"), Some("yes"));
        assert!(all.snapshot().len() > 5000);
        assert!(!all.truncated());
        // With the default limit, the pairs past it read as absent, and it says so.
        let mut jar = jar(&header);
        assert_eq!(jar.get("last"), None);
        assert!(jar.truncated());
    }

    #[test]
    fn reads_parse_only_as_far_as_they_need_and_each_pair_once() {
        let mut jar = jar(b"a=1; b=2; c=3");
        assert_eq!(jar.get("a"), Some("1"));
        assert_eq!(jar.index.pairs.len(), 1);
        assert_eq!(jar.get("c"), Some("3"));
        assert_eq!(jar.index.pairs.len(), 3);
        let rest = jar.index.rest;
        assert_eq!(jar.get("b"), Some("2"));
        assert_eq!(jar.get("zz"), None);
        assert_eq!((jar.index.pairs.len(), jar.index.rest), (3, rest));
    }

    #[test]
    fn pairs_past_the_ones_kept_in_place_read_in_request_order() {
        // More pairs than the index keeps in place: the rest go on the heap, and reads
        // and the snapshot see them all, in request order, a repeated name read as its
        // first.
        let count = INLINE_PAIRS + 4;
        let mut header: String = (0..count).map(|i| format!("k{i}=v{i}; ")).collect();
        header.push_str("k2=again");
        let mut jar = jar(header.as_bytes());
        assert_eq!(jar.get(&format!("k{}", count - 1)), Some(format!("v{}", count - 1).as_str()));
        assert_eq!(jar.index.pairs.len(), count);
        assert_eq!(jar.get("k0"), Some("v0"));
        assert_eq!(jar.get(&format!("k{INLINE_PAIRS}")), Some(format!("v{INLINE_PAIRS}").as_str()));
        assert_eq!(jar.get("k2"), Some("v2"));
        let names: Vec<String> = jar.snapshot().into_iter().map(|(name, _)| name).collect();
        let want: Vec<String> = (0..count).map(|i| format!("k{i}")).collect();
        assert_eq!(names, want);
        assert_eq!(jar.index.pairs.len(), count + 1);
    }

    #[test]
    fn pairs_are_the_cookie_crates_split_parse() {
        let headers: [&[u8]; 12] = [
            b"a=1;\tb=2\t; c= ;d =4",
            "a=\u{a0}x\u{a0}; \u{a0}b=2".as_bytes(),
            b"a=1;",
            b"a=1; b=2",
            b" a = 1 ;b=2;;",
            b";;novalue; =x; a=1 ;  ; b==2; c=\"q\"; d=",
            b"a=1;b=2;a=3",
            b"  ",
            b"=",
            b"x=y=z; \"q\"=1; sp ace=2",
            b"a=\xc3\xa9; b=\xe2\x82\xac",
            b"",
        ];
        for header in headers {
            let text = std::str::from_utf8(header).unwrap();
            let want: Vec<(String, String)> = Cookie::split_parse(text)
                .filter_map(Result::ok)
                .filter_map(|c| Some((c.name_raw()?.to_owned(), c.value_raw()?.to_owned())))
                .collect();
            let jar = jar(header);
            let mut at = 0;
            let got: Vec<(String, String)> = std::iter::from_fn(|| jar.header.next_pair(&mut at))
                .map(|pair| (jar.header.slice(pair.name).to_owned(), jar.header.slice(pair.value).to_owned()))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn a_header_of_many_pairs_is_read_up_to_the_limit() {
        let header: String = (0..1000).map(|i| format!("k{i}=v{i}; ")).collect();
        let mut jar = jar(header.as_bytes());
        assert_eq!(jar.get("k3"), Some("v3"));
        assert!(!jar.truncated(), "not known before a read goes that far");
        // Past the limit, reads are absent, and the jar says why.
        assert_eq!(jar.get("k999"), None);
        assert!(jar.truncated());
        assert_eq!(jar.index.pairs.len(), MAX_PAIRS);
        assert_eq!(jar.get(&format!("k{}", MAX_PAIRS - 1)), Some(format!("v{}", MAX_PAIRS - 1).as_str()));
        assert_eq!(jar.snapshot().len(), MAX_PAIRS);
        // A header within the limit is not truncated, whatever is read.
        let mut small = Jar::new(Some(HeaderValue::from_static("a=1; b=2")), 2);
        assert_eq!(small.get("missing"), None);
        assert!(!small.truncated());
        let mut over = Jar::new(Some(HeaderValue::from_static("a=1; b=2; c=3")), 2);
        assert_eq!(over.get("c"), None);
        assert!(over.truncated());
    }

    #[test]
    fn set_cookie_lines_are_the_cookie_crates_display() {
        use cookie::time::{Duration, OffsetDateTime};
        let mut cookies = vec![Cookie::new("a", "1"), Cookie::new("empty", "")];
        for same_site in [None, Some(SameSite::Strict), Some(SameSite::Lax), Some(SameSite::None)] {
            for secure in [None, Some(false), Some(true)] {
                for partitioned in [None, Some(false), Some(true)] {
                    for http_only in [None, Some(false), Some(true)] {
                        let mut cookie = Cookie::build(("sid", "v=1"))
                            .path("/app")
                            .domain("example.com")
                            .max_age(Duration::seconds(-5))
                            .build();
                        cookie.set_same_site(same_site);
                        cookie.set_secure(secure);
                        cookie.set_partitioned(partitioned);
                        cookie.set_http_only(http_only);
                        cookies.push(cookie);
                    }
                }
            }
        }
        cookies.push(Cookie::build(("x", "y")).max_age(Duration::hours(8)).build());
        cookies.push(Cookie::build(("x", "y")).path("").domain("").build());
        cookies.push(Cookie::build(("gone", "")).expires(OffsetDateTime::UNIX_EPOCH).path("/").build());
        // Longer than the stack buffer, from its first piece or from a later one.
        cookies.push(Cookie::new("long", "v".repeat(Line::STACK + 40)));
        cookies.push(Cookie::build(("late", "1")).path(format!("/{}", "p".repeat(Line::STACK))).build());
        let mut line = Line::new();
        for cookie in cookies {
            line.clear();
            set_cookie_line(&cookie, &mut line).unwrap();
            assert_eq!(line.as_bytes(), cookie.to_string().as_bytes());
            let value = line.header_value().unwrap();
            assert_eq!(value.as_bytes(), cookie.to_string().as_bytes());
        }
    }

    #[test]
    fn a_set_cookie_line_is_admitted_as_header_value_from_str_admits_it() {
        for text in ["a=1", "a=\tb", "a=é", "a=\u{7f}", "a=\r\n", "a=\u{1}"] {
            let mut line = Line::new();
            std::fmt::Write::write_str(&mut line, text).unwrap();
            assert_eq!(line.header_value(), HeaderValue::from_str(text).ok(), "{text:?}");
        }
    }

    #[test]
    fn no_header_reads_nothing() {
        let mut jar = Jar::new(None, MAX_PAIRS);
        assert_eq!(jar.get("a"), None);
        assert!(jar.snapshot().is_empty());
    }
}
