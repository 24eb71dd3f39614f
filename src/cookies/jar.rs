//! The jar's storage: the request's cookies, parsed on the first read, and the
//! response's changes, at most one per name.

use std::collections::HashSet;
use std::ops::Range;

use cookie::Cookie;
use http::header::{HeaderMap, HeaderValue, SET_COOKIE};

pub(super) struct Jar {
    /// The `Cookie` header until the first read parses it.
    header: Option<HeaderValue>,
    parsed: Option<Parsed>,
    /// What goes out as `Set-Cookie`, in the order names were first changed.
    changes: Vec<Change>,
}

/// The `Cookie` header as text, and where each pair's name and value lie in it: one
/// string and one vector for any number of cookies.
struct Parsed {
    text: Box<str>,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

struct Change {
    cookie: Cookie<'static>,
    removed: bool,
}

impl Jar {
    pub(super) fn new(header: Option<HeaderValue>) -> Jar {
        Jar { header, parsed: None, changes: Vec::new() }
    }

    fn parsed(&mut self) -> &Parsed {
        self.parsed.get_or_insert_with(|| Parsed::parse(self.header.take()))
    }

    /// The value a client would send next: this response's change if there is one
    /// (none when removed), else the request's first cookie of that name.
    pub(super) fn get(&mut self, name: &str) -> Option<String> {
        if let Some(change) = self.changes.iter().find(|c| c.cookie.name() == name) {
            return (!change.removed).then(|| change.cookie.value().to_owned());
        }
        self.parsed().find(name).map(str::to_owned)
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
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let parsed = self.parsed.get_or_insert_with(|| Parsed::parse(self.header.take()));
        let changes = &self.changes;
        for (name, value) in parsed.iter() {
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
    pub(super) fn write(&self, headers: &mut HeaderMap) {
        for change in &self.changes {
            if let Ok(value) = HeaderValue::try_from(change.cookie.to_string()) {
                headers.append(SET_COOKIE, value);
            }
        }
    }
}

impl Parsed {
    fn parse(header: Option<HeaderValue>) -> Parsed {
        let Some(header) = header else {
            return Parsed { text: Box::default(), pairs: Vec::new() };
        };
        let bytes = header.as_bytes();
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            // Keep every pair that is valid UTF-8 and drop the others, rather than
            // turning bad bytes into U+FFFD and handing out values that were never sent.
            Err(_) => bytes
                .split(|b| *b == b';')
                .filter_map(|pair| std::str::from_utf8(pair).ok())
                .collect::<Vec<_>>()
                .join(";"),
        };
        let base = text.as_ptr() as usize;
        let span = |s: &str| {
            let start = (s.as_ptr() as usize).wrapping_sub(base);
            start..start + s.len()
        };
        let pairs = Cookie::split_parse(text.as_str())
            .filter_map(Result::ok)
            .filter_map(|c| Some((span(c.name_raw()?), span(c.value_raw()?))))
            .collect();
        Parsed { text: text.into_boxed_str(), pairs }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .filter_map(|(name, value)| Some((self.text.get(name.clone())?, self.text.get(value.clone())?)))
    }

    /// The first cookie of that name, as browsers send the most specific one first.
    fn find(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar(header: &[u8]) -> Jar {
        Jar::new(Some(HeaderValue::from_bytes(header).unwrap()))
    }

    #[test]
    fn nothing_is_parsed_before_the_first_read() {
        let mut jar = jar(b"a=1");
        jar.put(Cookie::new("b", "2"), false);
        assert!(jar.parsed.is_none());
        assert_eq!(jar.get("a").as_deref(), Some("1"));
        assert!(jar.parsed.is_some());
    }

    #[test]
    fn first_of_duplicate_names_wins() {
        let mut jar = jar(b"a=1; b=2; a=3");
        assert_eq!(jar.get("a").as_deref(), Some("1"));
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
        assert_eq!(jar.get("a").as_deref(), Some("1"));
        assert_eq!(jar.get("bad"), None);
        assert_eq!(jar.get("c").as_deref(), Some("é"));
        assert_eq!(jar.get("d").as_deref(), Some("4"));
    }

    #[test]
    fn changes_shadow_the_request_and_replace_each_other() {
        let mut jar = jar(b"a=1; b=2");
        jar.put(Cookie::new("a", "x"), false);
        jar.put(Cookie::new("a", "y"), false);
        jar.put(Cookie::new("b", ""), true);
        jar.put(Cookie::new("c", "3"), false);
        assert_eq!(jar.get("a").as_deref(), Some("y"));
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
        let mut jar = jar(&header);
        assert_eq!(jar.get("last").as_deref(), Some("yes"));
        assert!(jar.snapshot().len() > 5000);
    }

    #[test]
    fn no_header_reads_nothing() {
        let mut jar = Jar::new(None);
        assert_eq!(jar.get("a"), None);
        assert!(jar.snapshot().is_empty());
    }
}
