//! Accept / Accept-Language / Accept-Encoding / Accept-Charset negotiation, the
//! `accepted_*` lists, and Content-Type matching (`is`, `content_type`, `charset`),
//! through `HeaderExt` on a `HeaderMap`, a `Request` and a `Context` inside the layer.
//!
//! Checked:
//! - nothing panics, whatever the headers (several lines, obs-text bytes) or offers;
//! - an answer is one of the offers (for `is`, or the request's type);
//! - the header map, the request and the context agree;
//! - the answer over a list is acceptable alone, and a list with any offer acceptable
//!   alone has an answer;
//! - every charset, encoding and language an `accepted_*` list names is acceptable
//!   alone;
//! - `is` over a list answers with the first offer that `is` accepts alone, and `is`
//!   with no offers is `content_type`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::borrow::Cow;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

use http::header::{ACCEPT, ACCEPT_CHARSET, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, Request};
use tower_context::ContextLayer;
use tower_context::request::HeaderExt;

/// Offers worth mixing in: arbitrary strings rarely name a known type.
const KNOWN: &[&str] = &[
    "json", "html", "text", "png", ".csv", "multipart", "urlencoded", "form", "+json", "+xml",
    "text/plain", "text/html", "application/json", "application/problem+json", "image/*", "*/*",
    "text/*", "multipart/*", "multipart/form-data", "text/html;level=1", "en", "en-US", "fr",
    "fr-CH", "*", "gzip", "br", "deflate", "identity", "utf-8", "iso-8859-1",
];

#[derive(Arbitrary, Debug)]
struct Input {
    accept: Vec<Vec<u8>>,
    accept_language: Vec<Vec<u8>>,
    accept_encoding: Vec<Vec<u8>>,
    accept_charset: Vec<Vec<u8>>,
    content_type: Vec<Vec<u8>>,
    offers: Vec<Offer>,
}

#[derive(Arbitrary, Debug)]
enum Offer {
    Known(u8),
    Any(String),
}

/// The answers of every helper for one set of offers.
#[derive(Debug, PartialEq, Eq)]
struct Answers<'t> {
    accepts: Option<&'t str>,
    languages: Option<&'t str>,
    encodings: Option<&'t str>,
    charsets: Option<&'t str>,
    is: Option<Cow<'t, str>>,
}

fn answers<'t, H: HeaderExt + ?Sized>(h: &H, offers: &[&'t str]) -> Answers<'t> {
    Answers {
        accepts: h.accepts(offers),
        languages: h.accepts_languages(offers),
        encodings: h.accepts_encodings(offers),
        charsets: h.accepts_charsets(offers),
        is: h.is(offers),
    }
}

/// What the helpers that take no offers say.
#[derive(Debug, PartialEq, Eq)]
struct Lists {
    types: Vec<String>,
    languages: Vec<String>,
    encodings: Vec<String>,
    charsets: Vec<String>,
    content_type: Option<String>,
    charset: Option<String>,
}

fn lists<H: HeaderExt + ?Sized>(h: &H) -> Lists {
    Lists {
        types: h.accepted_types(),
        languages: h.accepted_languages(),
        encodings: h.accepted_encodings(),
        charsets: h.accepted_charsets(),
        content_type: h.content_type(),
        charset: h.charset(),
    }
}

fn check_lists<H: HeaderExt + ?Sized>(h: &H) {
    let lists = lists(h);
    for language in &lists.languages {
        assert_eq!(h.accepts_languages(&[language.as_str()]), Some(language.as_str()), "listed language");
    }
    for encoding in &lists.encodings {
        assert_eq!(h.accepts_encodings(&[encoding.as_str()]), Some(encoding.as_str()), "listed encoding");
    }
    for charset in &lists.charsets {
        assert_eq!(h.accepts_charsets(&[charset.as_str()]), Some(charset.as_str()), "listed charset");
    }
    assert_eq!(h.is(&[]).map(Cow::into_owned), lists.content_type, "is(&[]) and content_type");
    assert!(lists.charset.is_none() || lists.content_type.is_some(), "a charset without a type");
}

fn check<H: HeaderExt + ?Sized>(h: &H, offers: &[&str]) {
    let all = answers(h, offers);
    for answer in [all.accepts, all.languages, all.encodings, all.charsets].into_iter().flatten() {
        assert!(offers.contains(&answer), "{answer:?} is not an offer");
    }
    if let Some(answer) = &all.is {
        let own_type = h.is(&[]);
        assert!(offers.contains(&answer.as_ref()) || own_type.as_ref() == Some(answer), "{answer:?}");
    }
    type Helper = for<'a, 't> fn(&'a Answers<'t>) -> Option<&'t str>;
    let helpers: [(&str, Helper); 4] = [
        ("accepts", |a| a.accepts),
        ("languages", |a| a.languages),
        ("encodings", |a| a.encodings),
        ("charsets", |a| a.charsets),
    ];
    let alone: Vec<Answers<'_>> = offers.iter().map(|o| answers(h, std::slice::from_ref(o))).collect();
    for (what, get) in helpers {
        if let Some(best) = get(&all) {
            assert_eq!(get(&answers(h, &[best])), Some(best), "{what}: the best offer alone");
        }
        if alone.iter().any(|a| get(a).is_some()) {
            assert!(get(&all).is_some(), "{what}: an offer is acceptable alone but the list has no answer");
        }
    }
    if !offers.is_empty() {
        let first = alone.iter().find_map(|a| a.is.clone());
        assert_eq!(all.is, first, "is: the first offer that matches alone");
    }
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    let fields: [(HeaderName, &Vec<Vec<u8>>); 5] = [
        (ACCEPT, &input.accept),
        (ACCEPT_LANGUAGE, &input.accept_language),
        (ACCEPT_ENCODING, &input.accept_encoding),
        (ACCEPT_CHARSET, &input.accept_charset),
        (CONTENT_TYPE, &input.content_type),
    ];
    for (name, lines) in fields {
        for line in lines.iter().take(3) {
            headers.append(name.clone(), common::header_value(line));
        }
    }
    let owned: Vec<String> = input
        .offers
        .iter()
        .take(8)
        .map(|o| match o {
            Offer::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_owned(),
            Offer::Any(s) => s.clone(),
        })
        .collect();
    let offers: Vec<&str> = owned.iter().map(String::as_str).collect();

    check(&headers, &offers);
    check_lists(&headers);
    let mut request = Request::get("/").body(()).expect("a valid request");
    *request.headers_mut() = headers.clone();
    assert_eq!(answers(&request, &offers), answers(&headers, &offers), "request and header map");
    assert_eq!(lists(&request), lists(&headers), "request and header map");
    // A context joins the lines of a header; `is` on a map reads the first line only.
    let one_content_type = headers.get_all(CONTENT_TYPE).iter().count() <= 1;

    let owned_in = owned.clone();
    let done = common::run(&ContextLayer::new(), request, move |req, ctx| async move {
        let offers: Vec<&str> = owned_in.iter().map(String::as_str).collect();
        check(&ctx, &offers);
        check_lists(&ctx);
        let mut from_ctx = answers(&ctx, &offers);
        let mut from_req = answers(&req, &offers);
        let mut lists_ctx = lists(&ctx);
        let mut lists_req = lists(&req);
        if !one_content_type {
            from_ctx.is = None;
            from_req.is = None;
            for l in [&mut lists_ctx, &mut lists_req] {
                l.content_type = None;
                l.charset = None;
            }
        }
        assert_eq!(from_ctx, from_req, "context and request");
        assert_eq!(lists_ctx, lists_req, "context and request");
        common::ok()
    });
    common::assert_clean_headers(&done.head);
});
