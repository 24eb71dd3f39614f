//! Content negotiation over `Accept`-style headers: q-values, wildcards, specificity;
//! and media types: short names, and matching a `Content-Type` against types.
//!
//! One algorithm serves the error renderer and the request helpers. It follows the
//! `negotiator` module that Koa's `accepts` uses: each offered value takes the
//! q-value of the most specific header entry that matches it (of equally specific
//! ones, the highest); the offer with the highest q wins; ties go to the more
//! specific match, then to the earlier offer.
//! Type matching follows `type-is`, which Koa's `request.is` and `response.is` use.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};

/// One parsed entry of an `Accept`-style header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// The value before any `;` parameters, trimmed.
    pub(crate) value: &'a str,
    /// The entry's parameters other than q, as written (for media-type matching).
    pub(crate) params: &'a str,
    /// Quality in thousandths (0..=1000).
    pub(crate) q: u16,
    /// Where `value`'s first `/` is, found once while parsing: a media range is
    /// matched against every offer, and would otherwise be scanned for each.
    slash: Option<u32>,
}

impl<'a> Entry<'a> {
    /// An entry with no parameters, made by the caller rather than read.
    pub(crate) fn bare(value: &'a str, q: u16) -> Entry<'a> {
        Entry { value, params: "", q, slash: slash_in(value) }
    }

    /// The type and subtype of a media range (`text/html`, `text/*`, `*/*`).
    fn media_range(&self) -> Option<(&'a str, &'a str)> {
        let at = usize::try_from(self.slash?).ok()?;
        Some((self.value.get(..at)?, self.value.get(at + 1..)?))
    }
}

fn slash_in(value: &str) -> Option<u32> {
    value.bytes().position(|b| b == b'/').and_then(|at| u32::try_from(at).ok())
}

/// Parses a q-value; `None` when it is not a number. Values above 1 count as 1 and
/// values below 0 as 0.
fn parse_q(raw: &str) -> Option<u16> {
    let q: f64 = raw.trim_ascii().parse().ok()?;
    if q.is_nan() {
        return None;
    }
    // Clamped to 0..=1 first, so the product fits in u16.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((q.clamp(0.0, 1.0) * 1000.0).round() as u16)
}

/// `s` split at each `sep` (an ASCII byte), scanning bytes: headers are short, and
/// `str::split` with a `char` sets up a search per call that costs more than the
/// whole scan here.
#[derive(Clone)]
pub(crate) struct SplitByte<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

pub(crate) fn split_byte(s: &str, sep: u8) -> SplitByte<'_> {
    SplitByte { rest: Some(s), sep }
}

impl<'a> Iterator for SplitByte<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().position(|b| b == self.sep) {
            // An ASCII byte is always a char boundary.
            Some(at) => {
                self.rest = rest.get(at + 1..);
                rest.get(..at)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Equal ignoring ASCII case. Headers are mostly written in the case offered, so the
/// byte comparison (a `memcmp`) usually decides alone; only a mismatch goes on to
/// the case-folding loop.
#[inline]
fn same(a: &str, b: &str) -> bool {
    a == b || a.eq_ignore_ascii_case(b)
}

/// [`str::split_once`] at an ASCII byte, scanning bytes.
pub(crate) fn split_once_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    let at = s.bytes().position(|b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// The entries of a header, skipping malformed ones (empty, or a q that is not a
/// number). At most `MAX_ENTRIES` entries are read: a longer header is hostile.
/// Every caller passes a header's `to_str`, which is visible ASCII and tabs, so
/// trimming ASCII whitespace is all the trimming there is to do.
pub(crate) fn entries(header: &str) -> impl Iterator<Item = Entry<'_>> + Clone {
    const MAX_ENTRIES: usize = 64;
    split_byte(header, b',').take(MAX_ENTRIES).filter_map(|part| {
        let mut pieces = split_byte(part, b';');
        let head = pieces.next()?;
        let value = head.trim_ascii();
        if value.is_empty() {
            return None;
        }
        let mut q = 1000;
        // Just past the first `;` (the head is the part up to it), or the end.
        let params_start = (head.len() + 1).min(part.len());
        let mut params_end = part.len();
        let mut offset = params_start;
        for piece in pieces {
            let (name, val) = split_once_byte(piece, b'=').unwrap_or((piece, ""));
            if same(name.trim_ascii(), "q") {
                q = parse_q(val)?;
                // Parameters after q are accept-extensions, not media-type parameters.
                params_end = offset.saturating_sub(1).max(params_start);
                break;
            }
            offset += piece.len() + 1;
        }
        let params = part.get(params_start..params_end).unwrap_or("").trim_ascii();
        Some(Entry { value, params, q, slash: slash_in(value) })
    })
}

/// How specifically an entry matched an offer; higher is more specific.
pub(crate) type Specificity = u8;

/// The index into `offers` of the best offer, or `None` when none is acceptable.
///
/// `matches(entry, offer)` says whether an entry covers an offer and how specifically.
/// With no header at all, every offer is acceptable and the first wins.
pub(crate) fn best<T>(
    header: Option<&HeaderValue>,
    offers: &[T],
    matches: impl Fn(&Entry<'_>, &T) -> Option<Specificity>,
) -> Option<usize> {
    let Some(header) = header else {
        return if offers.is_empty() { None } else { Some(0) };
    };
    // A header that is not visible ASCII accepts nothing we could match.
    let header = header.to_str().ok()?;
    best_among(entries(header), offers, matches)
}

/// [`best`] over entries already read, so a caller can add entries the header
/// implies (see [`encoding_entries`]).
pub(crate) fn best_among<'h, T>(
    entries: impl Iterator<Item = Entry<'h>> + Clone,
    offers: &[T],
    matches: impl Fn(&Entry<'_>, &T) -> Option<Specificity>,
) -> Option<usize> {
    // Every offer looks at every entry: parse the header once, on the stack, unless
    // it has more entries than a real client sends (then parse per offer).
    const ON_STACK: usize = 16;
    let mut parsed = [Entry::bare("", 0); ON_STACK];
    let mut len = 0;
    for entry in entries.clone() {
        if len == ON_STACK {
            return best_of(entries, offers, matches);
        }
        parsed[len] = entry;
        len += 1;
    }
    best_of(parsed[..len].iter().copied(), offers, matches)
}

fn best_of<'h, T>(
    entries: impl Iterator<Item = Entry<'h>> + Clone,
    offers: &[T],
    matches: impl Fn(&Entry<'_>, &T) -> Option<Specificity>,
) -> Option<usize> {
    let mut best: Option<(usize, u16, Specificity)> = None;
    for (index, offer) in offers.iter().enumerate() {
        let mut found: Option<(u16, Specificity)> = None;
        for entry in entries.clone() {
            if let Some(spec) = matches(&entry, offer) {
                // Between equally specific entries the higher q counts, as in
                // `negotiator`: `en;q=0, en` accepts `en`.
                if found.is_none_or(|(q, s)| spec > s || (spec == s && entry.q > q)) {
                    found = Some((entry.q, spec));
                }
            }
        }
        if let Some((q, spec)) = found {
            if q == 0 {
                continue;
            }
            if best.is_none_or(|(_, bq, bs)| q > bq || (q == bq && spec > bs)) {
                best = Some((index, q, spec));
            }
        }
    }
    best.map(|(index, _, _)| index)
}

/// The entries of an `Accept-Encoding` header (empty when there is none), plus
/// `identity` at the lowest non-zero q seen (1 when none) unless an entry names it
/// or `*`. This is `negotiator`'s reading: without a header only `identity` is
/// acceptable, so a server never compresses for a client that did not ask, and a
/// header that lists codings still leaves the uncompressed body as a last resort.
pub(crate) fn encoding_entries(header: &str) -> impl Iterator<Item = Entry<'_>> + Clone {
    let mut covered = false;
    let mut lowest = 1000;
    for entry in entries(header) {
        covered |= entry.value == "*" || entry.value.eq_ignore_ascii_case("identity");
        if entry.q > 0 {
            lowest = lowest.min(entry.q);
        }
    }
    let identity = (!covered).then_some(Entry::bare("identity", lowest));
    entries(header).chain(identity)
}

/// The values of the entries a header accepts (q above 0), highest q first and
/// ties in header order, as `negotiator` lists them when asked for no offer in
/// particular. Entries whose value is not `well_formed` are left out.
pub(crate) fn ranked<'h>(
    entries: impl Iterator<Item = Entry<'h>>,
    well_formed: fn(&str) -> bool,
) -> Vec<String> {
    let mut accepted: Vec<Entry<'h>> = entries.filter(|e| e.q > 0 && well_formed(e.value)).collect();
    // Stable, so equal q keeps the header's order.
    accepted.sort_by_key(|e| std::cmp::Reverse(e.q));
    accepted.into_iter().map(|e| e.value.to_owned()).collect()
}

/// A value with no whitespace inside: a charset, coding or language tag.
pub(crate) fn is_token(value: &str) -> bool {
    !value.contains(|c: char| c.is_ascii_whitespace())
}

/// `type/subtype` with both parts present: an `Accept` entry's media range.
pub(crate) fn is_media_range(value: &str) -> bool {
    value.split_once('/').is_some_and(|(t, sub)| !t.is_empty() && !sub.is_empty()) && is_token(value)
}

/// A media type offered to [`media_match`], split once: `application/json` is type
/// `application`, subtype `json`, no parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MediaOffer<'a> {
    pub(crate) kind: &'a str,
    pub(crate) subtype: &'a str,
    /// The parameters after the first `;`, as written.
    pub(crate) params: &'a str,
}

impl<'a> MediaOffer<'a> {
    /// Splits a full media type such as `text/plain; charset=utf-8`. An offer comes
    /// from the app, not a header, so its subtype is trimmed as any text is.
    pub(crate) fn parse(offer: &'a str) -> Option<MediaOffer<'a>> {
        let (kind, rest) = split_once_byte(offer, b'/')?;
        let (subtype, params) = split_once_byte(rest, b';').unwrap_or((rest, ""));
        Some(MediaOffer { kind, subtype: subtype.trim(), params })
    }
}

/// Matches a media-type entry (`type/subtype`, `type/*`, `*/*`, with parameters)
/// against a full media type offer such as `application/json`.
pub(crate) fn media_match(entry: &Entry<'_>, offer: &str) -> Option<Specificity> {
    media_match_offer(entry, &MediaOffer::parse(offer)?)
}

/// [`media_match`] for an offer split beforehand (offers are matched against every
/// entry).
pub(crate) fn media_match_offer(entry: &Entry<'_>, offer: &MediaOffer<'_>) -> Option<Specificity> {
    let (etype, esub) = entry.media_range()?;
    let mut spec = 0;
    if etype != "*" {
        if !same(etype, offer.kind) {
            return None;
        }
        spec += 4;
    }
    if esub != "*" {
        if !same(esub.trim_ascii(), offer.subtype) {
            return None;
        }
        spec += 2;
    }
    if !entry.params.is_empty() {
        // Every parameter the entry names must be on the offer with the same value.
        for param in split_byte(entry.params, b';') {
            let param = param.trim_ascii();
            if param.is_empty() {
                continue;
            }
            let found = split_byte(offer.params, b';').any(|p| same(p.trim_ascii(), param));
            if !found {
                return None;
            }
        }
        spec += 1;
    }
    Some(spec)
}

/// Matches a token entry (`gzip`, `en-US`, `utf-8`, `*`) against a token offer.
/// With `prefix` (languages), `en` covers `en-US`, and `en-US` covers `en` less
/// specifically, as in `negotiator`.
pub(crate) fn token_match(entry: &Entry<'_>, offer: &str, prefix: bool) -> Option<Specificity> {
    if entry.value == "*" {
        return Some(0);
    }
    if same(entry.value, offer) {
        return Some(3);
    }
    if !prefix {
        return None;
    }
    fn head(tag: &str) -> Option<&str> {
        tag.split_once('-').map(|(head, _)| head)
    }
    if head(entry.value).is_some_and(|h| same(h, offer)) {
        return Some(2);
    }
    if head(offer).is_some_and(|h| same(h, entry.value)) {
        return Some(1);
    }
    None
}

/// Common file extensions and short names and their media types, sorted by name.
/// Text types carry their charset, as Koa's `type` setter adds it.
const TYPES: &[(&str, &str)] = &[
    ("avif", "image/avif"),
    ("bin", "application/octet-stream"),
    ("css", "text/css; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("form", "application/x-www-form-urlencoded"),
    ("gif", "image/gif"),
    ("gz", "application/gzip"),
    ("htm", "text/html; charset=utf-8"),
    ("html", "text/html; charset=utf-8"),
    ("ico", "image/vnd.microsoft.icon"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("js", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("md", "text/markdown; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("mp3", "audio/mpeg"),
    ("mp4", "video/mp4"),
    ("multipart", "multipart/*"),
    ("ogg", "audio/ogg"),
    ("otf", "font/otf"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("svg", "image/svg+xml"),
    ("tar", "application/x-tar"),
    ("text", "text/plain; charset=utf-8"),
    ("ttf", "font/ttf"),
    ("txt", "text/plain; charset=utf-8"),
    ("urlencoded", "application/x-www-form-urlencoded"),
    ("wasm", "application/wasm"),
    ("wav", "audio/wav"),
    ("webm", "video/webm"),
    ("webp", "image/webp"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("xml", "application/xml"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("zip", "application/zip"),
];

/// The media type for a short name or extension (`json`, `.png`, `urlencoded`,
/// `multipart`), or the name itself when it already is a valid media type
/// (`text/plain`, `image/*`). `None` for anything else.
pub(crate) fn media_type(name: &str) -> Option<Cow<'_, str>> {
    let name = name.trim();
    if name.contains('/') {
        let media = name.parse::<mime::Mime>().ok()?;
        let complete = !media.type_().as_str().is_empty() && !media.subtype().as_str().is_empty();
        return complete.then_some(Cow::Borrowed(name));
    }
    let ext = name.strip_prefix('.').unwrap_or(name).to_ascii_lowercase();
    let index = TYPES.binary_search_by(|(n, _)| (*n).cmp(ext.as_str())).ok()?;
    TYPES.get(index).map(|(_, media)| Cow::Borrowed(*media))
}

/// A `Content-Type` value as a media type (type, subtype and charset lowercased);
/// `None` when it is not one. A wildcard is a pattern, not a type a body can have.
pub(crate) fn parse_content_type(value: &HeaderValue) -> Option<mime::Mime> {
    let media: mime::Mime = value.to_str().ok()?.parse().ok()?;
    // The parser lets `text/` through with an empty subtype.
    let real = |part: mime::Name<'_>| !part.as_str().is_empty() && part != mime::STAR;
    (real(media.type_()) && real(media.subtype())).then_some(media)
}

/// The first of `types` that a `Content-Type` is, as the `type-is` module answers:
/// the type as given, except that a wildcard (`text/*`) or a suffix (`+json`) gives
/// the actual type, since it names a family and the caller wants to know which
/// member came. No `types` gives the actual type. The actual type is lowercase and
/// without parameters. `None` for a missing or malformed `Content-Type`, or when
/// nothing matches.
pub(crate) fn type_is<'t>(content_type: Option<&HeaderValue>, types: &[&'t str]) -> Option<Cow<'t, str>> {
    let actual = parse_content_type(content_type?)?;
    let essence = || Cow::Owned(actual.essence_str().to_owned());
    if types.is_empty() {
        return Some(essence());
    }
    let given = types.iter().copied().find(|t| type_matches(t, &actual))?;
    let family = given.trim_start().starts_with('+') || given.contains('*');
    Some(if family { essence() } else { Cow::Borrowed(given) })
}

/// Whether `actual` is of `given`: a media type with optional wildcards, a short
/// name or extension, or `+suffix`.
fn type_matches(given: &str, actual: &mime::Mime) -> bool {
    let given = given.trim();
    if let Some(suffix) = given.strip_prefix('+') {
        return actual.suffix().is_some_and(|s| s.as_str().eq_ignore_ascii_case(suffix));
    }
    let Some(wanted) = media_type(given).and_then(|m| m.parse::<mime::Mime>().ok()) else {
        return false;
    };
    let part = |want: mime::Name<'_>, have: mime::Name<'_>| {
        want == mime::STAR || want.as_str().eq_ignore_ascii_case(have.as_str())
    };
    part(wanted.type_(), actual.type_()) && part(wanted.subtype(), actual.subtype())
}

/// Adds `field` to a `Vary` header: merged with what is there, no duplicates
/// (case-insensitive), and `*` replaces everything. It lives here because `Vary`
/// names what negotiation looked at; `response::vary` is its public face, and the
/// context's deferred edits call it too.
pub(crate) fn vary(headers: &mut HeaderMap, field: &str) {
    let field = field.trim();
    if field.is_empty() {
        return;
    }
    let mut fields: Vec<&str> = Vec::new();
    let existing: Vec<HeaderValue> = headers.get_all(header::VARY).iter().cloned().collect();
    for value in &existing {
        // A value that is not visible ASCII is not a list of field names: dropped.
        let Ok(value) = value.to_str() else { continue };
        fields.extend(value.split(',').map(str::trim).filter(|f| !f.is_empty()));
    }
    if fields.contains(&"*") {
        headers.insert(header::VARY, HeaderValue::from_static("*"));
        return;
    }
    if field == "*" {
        headers.insert(header::VARY, HeaderValue::from_static("*"));
        return;
    }
    for new in field.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !fields.iter().any(|f| f.eq_ignore_ascii_case(new)) {
            fields.push(new);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&fields.join(", ")) {
        headers.insert(header::VARY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick<'a>(accept: &str, offers: &[&'a str]) -> Option<&'a str> {
        let header = HeaderValue::from_str(accept).ok();
        best(header.as_ref(), offers, |e, o| media_match(e, o)).map(|i| offers[i])
    }

    #[test]
    fn q_values_and_wildcards() {
        let offers = ["application/json", "text/plain"];
        assert_eq!(pick("text/plain, application/json;q=0.5", &offers), Some("text/plain"));
        assert_eq!(pick("*/*", &offers), Some("application/json"));
        assert_eq!(pick("text/*", &offers), Some("text/plain"));
        assert_eq!(pick("image/png", &offers), None);
        assert_eq!(pick("application/json;q=0, */*;q=0.1", &offers), Some("text/plain"));
        assert_eq!(pick("", &offers), None);
    }

    #[test]
    fn the_most_specific_entry_decides_an_offers_q() {
        let offers = ["text/html", "text/plain"];
        assert_eq!(pick("text/*;q=0.9, text/html;q=0.1", &offers), Some("text/plain"));
    }

    #[test]
    fn equally_specific_entries_give_the_higher_q() {
        let offers = ["text/html"];
        assert_eq!(pick("text/html;q=0, text/html", &offers), Some("text/html"));
        assert_eq!(pick("text/html, text/html;q=0", &offers), Some("text/html"));
        assert_eq!(pick("text/html;q=0, text/*", &offers), None);
    }

    #[test]
    fn malformed_entries_are_skipped() {
        let offers = ["application/json", "text/plain"];
        assert_eq!(pick("text/plain;q=abc, application/json", &offers), Some("application/json"));
        assert_eq!(pick(",,;;,garbage", &offers), None);
        assert_eq!(pick("text/plain;q=1e309", &offers), Some("text/plain"));
        assert_eq!(pick("text/plain;q=-4, application/json;q=NaN", &offers), None);
    }

    #[test]
    fn parameters_must_match() {
        let offers = ["text/html;level=1", "text/html"];
        assert_eq!(pick("text/html;level=1", &offers), Some("text/html;level=1"));
        assert_eq!(pick("text/html;level=2, text/html;q=0.5", &offers), Some("text/html;level=1"));
    }

    #[test]
    fn languages_match_by_prefix() {
        let header = HeaderValue::from_static("en;q=0.8, fr");
        let offers = ["en-US", "fr-CA"];
        let got = best(Some(&header), &offers, |e, o| token_match(e, o, true));
        assert_eq!(got, Some(1));
    }

    #[test]
    fn identity_joins_accept_encoding_at_the_lowest_q() {
        let values = |header| encoding_entries(header).map(|e| (e.value, e.q)).collect::<Vec<_>>();
        assert_eq!(values(""), [("identity", 1000)]);
        assert_eq!(values("br;q=0.2, gzip;q=0"), [("br", 200), ("gzip", 0), ("identity", 200)]);
        assert_eq!(values("gzip, IDENTITY;q=0"), [("gzip", 1000), ("IDENTITY", 0)]);
        assert_eq!(values("*;q=0.3"), [("*", 300)]);
    }

    #[test]
    fn ranked_is_q_order_then_header_order() {
        let header = "a;q=0.5, b, c;q=0, d;q=0.5, e;q=1, f g";
        assert_eq!(ranked(entries(header), is_token), ["b", "e", "a", "d"]);
        assert!(ranked(entries(""), is_token).is_empty());
        assert!(is_media_range("text/*"));
        for not in ["text", "/x", "x/", "a b/c", ""] {
            assert!(!is_media_range(not), "{not}");
        }
    }

    #[test]
    fn short_names_become_media_types() {
        assert!(TYPES.windows(2).all(|w| w[0].0 < w[1].0), "TYPES must stay sorted");
        assert_eq!(media_type("json").as_deref(), Some("application/json"));
        assert_eq!(media_type(".PNG").as_deref(), Some("image/png"));
        assert_eq!(media_type("urlencoded").as_deref(), Some("application/x-www-form-urlencoded"));
        assert_eq!(media_type("text/plain").as_deref(), Some("text/plain"));
        assert_eq!(media_type("multipart/*").as_deref(), Some("multipart/*"));
        assert_eq!(media_type("nope"), None);
        assert_eq!(media_type("a/b/c;;"), None);
        assert_eq!(media_type("nope/"), None);
        assert_eq!(media_type("/json"), None);
        assert_eq!(media_type(""), None);
    }
}
