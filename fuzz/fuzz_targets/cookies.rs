//! Cookie header parsing, and signed (both formats) and private cookies, through the
//! public API: a `ContextLayer` with keys around a service that reads and sets cookies.
//!
//! Request 1 carries arbitrary `Cookie` lines; the handler reads arbitrary names
//! plainly, signed and private, then sets, signs, encrypts and removes cookies, reading
//! each back at once. Checked:
//! - nothing panics, whatever the header, names, values, keys or attributes;
//! - `iter()` agrees with `get()`, one pair per name;
//! - a cookie just set (plain, signed, private) reads back as set, a removed one as
//!   absent (a signed one removed with `remove_signed`: its `name.sig` too); a
//!   Keygrip `get_signed` value is the raw value;
//! - signed and private reads are `Err(NoKeys)` exactly when no key is usable;
//! - every cookie the jar accepted leaves as a `Set-Cookie` line;
//! - request 2 sends those lines back as a browser would, to a layer whose key list has
//!   a new key in front: every signed and private cookie still reads back, and is sent
//!   again under the new key (when the new key is really new);
//! - request 3 sends the updated cookies to a layer with the new key alone: they read
//!   back.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

use http::Request;
use http::header::{COOKIE, SET_COOKIE};
use tower_context::ContextLayer;
use tower_context::cookies::{Cookie, CookieError, KeygripHash, Keys, SameSite, SignedFormat, time};

const NEW_KEY: &[u8] = b"fuzz rotation key";

#[derive(Arbitrary, Debug)]
struct Input {
    format: u8,
    keys: Vec<Vec<u8>>,
    https: bool,
    allow_secure_over_http: bool,
    cookie_lines: Vec<Vec<u8>>,
    reads: Vec<String>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone)]
struct Op {
    kind: Kind,
    name: String,
    value: String,
    attrs: Option<Attrs>,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Signed,
    Private,
    Remove,
    RemoveSigned,
}

#[derive(Arbitrary, Debug, Clone)]
struct Attrs {
    path: Option<String>,
    domain: Option<String>,
    max_age: Option<i32>,
    expires: Option<i32>,
    same_site: Option<u8>,
    secure: Option<bool>,
    http_only: Option<bool>,
    partitioned: Option<bool>,
}

impl Op {
    fn cookie(&self) -> Cookie<'static> {
        let mut cookie = Cookie::new(self.name.clone(), self.value.clone());
        if let Some(a) = &self.attrs {
            if let Some(path) = &a.path {
                cookie.set_path(path.clone());
            }
            if let Some(domain) = &a.domain {
                cookie.set_domain(domain.clone());
            }
            if let Some(max_age) = a.max_age {
                cookie.set_max_age(time::Duration::seconds(i64::from(max_age)));
            }
            if let Some(expires) = a.expires {
                if let Ok(at) = time::OffsetDateTime::from_unix_timestamp(i64::from(expires)) {
                    cookie.set_expires(at);
                }
            }
            if let Some(same_site) = a.same_site {
                cookie.set_same_site(match same_site % 3 {
                    0 => SameSite::Strict,
                    1 => SameSite::Lax,
                    _ => SameSite::None,
                });
            }
            if let Some(secure) = a.secure {
                cookie.set_secure(secure);
            }
            if let Some(http_only) = a.http_only {
                cookie.set_http_only(http_only);
            }
            if let Some(partitioned) = a.partitioned {
                cookie.set_partitioned(partitioned);
            }
        }
        cookie
    }
}

fn format_of(n: u8) -> SignedFormat {
    match n % 4 {
        0 => SignedFormat::Cookie,
        1 => SignedFormat::KEYGRIP,
        2 => SignedFormat::Keygrip(KeygripHash::Sha256),
        _ => SignedFormat::Keygrip(KeygripHash::Sha512),
    }
}

fn layer(format: SignedFormat, keys: &[Vec<u8>], allow: bool) -> ContextLayer {
    ContextLayer::new()
        .keys(Keys::new(keys))
        .signed_format(format)
        .allow_secure_cookies_over_http(allow)
}

fn request(https: bool, cookie_lines: &[http::HeaderValue]) -> Request<()> {
    let uri = if https { "https://fuzz.example/" } else { "/" };
    let mut request = Request::get(uri).body(()).expect("a valid request");
    for line in cookie_lines {
        request.headers_mut().append(COOKIE, line.clone());
    }
    request
}

/// The `name=value` part of each `Set-Cookie` line.
fn set_cookie_pairs(head: &http::response::Parts) -> Vec<(String, String)> {
    head.headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|line| {
            let line = line.to_str().expect("Set-Cookie lines are visible ASCII");
            let pair = line.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').expect("a Set-Cookie line has name=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// What a browser holds: one value per name, updated by `Set-Cookie`.
#[derive(Default)]
struct Browser(Vec<(String, String)>);

impl Browser {
    fn apply(&mut self, pairs: Vec<(String, String)>) {
        for (name, value) in pairs {
            match self.0.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => self.0.push((name, value)),
            }
        }
    }

    fn header(&self) -> Vec<http::HeaderValue> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let joined = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        vec![http::HeaderValue::from_str(&joined).expect("Set-Cookie pairs make a valid Cookie header")]
    }
}

fuzz_target!(|input: Input| {
    let format = format_of(input.format);
    let keys: Vec<Vec<u8>> = input.keys.into_iter().take(4).collect();
    let lines: Vec<_> = input.cookie_lines.iter().take(4).map(|l| common::header_value(l)).collect();
    let reads: Vec<String> = input.reads.into_iter().take(8).collect();
    let ops: Vec<Op> = input.ops.into_iter().take(6).collect();
    let https = input.https;
    let allow = input.allow_secure_over_http;
    // `Keys::new` skips empty secrets.
    let no_keys = keys.iter().all(|k| k.is_empty());

    // Request 1: arbitrary cookies in, arbitrary operations.
    let ops_in = ops.clone();
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let outcome_in = outcome.clone();
    let done = common::run(&layer(format, &keys, allow), request(https, &lines), move |_req, ctx| async move {
        let cookies = ctx.cookies();
        for name in &reads {
            let plain = cookies.get(name);
            let signed = cookies.get_signed(name);
            let private = cookies.get_private(name);
            if no_keys {
                assert_eq!(signed, Err(CookieError::NoKeys), "{name:?}");
                assert_eq!(private, Err(CookieError::NoKeys), "{name:?}");
                continue;
            }
            assert!(private.is_ok(), "{name:?}: {private:?}");
            match (format, signed) {
                (SignedFormat::Keygrip(_), Ok(Some(signed))) => {
                    assert_eq!(Some(signed), plain, "a Keygrip signed value is the raw value");
                }
                (_, signed) => assert!(signed.is_ok(), "{name:?}: {signed:?}"),
            }
        }
        let all: Vec<(String, String)> = cookies.iter().collect();
        for (i, (name, value)) in all.iter().enumerate() {
            assert!(all[..i].iter().all(|(n, _)| n != name), "iter gives {name:?} twice");
            assert_eq!(cookies.get(name).as_ref(), Some(value), "iter and get disagree on {name:?}");
        }
        let mut accepted = outcome_in.lock().expect("not poisoned");
        for op in &ops_in {
            let result = match op.kind {
                Kind::Plain => cookies.set(op.cookie()).map(|()| {
                    assert_eq!(cookies.get(&op.name).as_deref(), Some(op.value.as_str()), "{op:?}");
                }),
                Kind::Signed => cookies.set_signed(op.cookie()).map(|()| {
                    assert_eq!(cookies.get_signed(&op.name), Ok(Some(op.value.clone())), "{op:?}");
                }),
                Kind::Private => cookies.set_private(op.cookie()).map(|()| {
                    assert_eq!(cookies.get_private(&op.name), Ok(Some(op.value.clone())), "{op:?}");
                }),
                Kind::Remove => cookies.remove(op.cookie()).map(|()| {
                    assert_eq!(cookies.get(&op.name), None, "{op:?}");
                }),
                Kind::RemoveSigned => cookies.remove_signed(op.cookie()).map(|()| {
                    assert_eq!(cookies.get(&op.name), None, "{op:?}");
                    if let SignedFormat::Keygrip(_) = format {
                        assert_eq!(cookies.get(&format!("{}.sig", op.name)), None, "{op:?}");
                    }
                    if !no_keys {
                        assert_eq!(cookies.get_signed(&op.name), Ok(None), "{op:?}");
                    }
                }),
            };
            accepted.push(result.is_ok());
        }
        drop(accepted);
        let _ = cookies.iter().count();
        common::ok()
    });
    common::assert_clean_headers(&done.head);
    let sent = set_cookie_pairs(&done.head);

    // The operations whose outcome no other operation touched.
    let related = |a: &str, b: &str| a == b || format!("{a}.sig") == b || format!("{b}.sig") == a;
    let alone: Vec<&Op> = ops
        .iter()
        .enumerate()
        .filter(|(i, op)| ops.iter().enumerate().all(|(j, other)| j == *i || !related(&op.name, &other.name)))
        .map(|(_, op)| op)
        .collect();
    // Which of them the jar accepted: each must have left the layer.
    let outcome = outcome.lock().expect("not poisoned").clone();
    let accepted: Vec<&Op> = ops
        .iter()
        .zip(&outcome)
        .filter(|(op, ok)| {
            **ok
                && !matches!(op.kind, Kind::Remove | Kind::RemoveSigned)
                && alone.iter().any(|a| std::ptr::eq(*a, *op))
        })
        .map(|(op, _)| op)
        .collect();
    for op in &accepted {
        assert!(sent.iter().any(|(n, _)| *n == op.name), "{op:?} accepted but not sent: {sent:?}");
        if op.kind == Kind::Plain {
            assert!(sent.iter().any(|(n, v)| *n == op.name && *v == op.value), "{op:?} sent as {sent:?}");
        }
    }
    let sealed: Vec<Op> = accepted.into_iter().filter(|op| op.kind != Kind::Plain).cloned().collect();
    if sealed.is_empty() {
        return;
    }

    // Request 2: the cookies come back to a layer with a new key in front.
    let mut browser = Browser::default();
    browser.apply(sent);
    let mut rotated = vec![NEW_KEY.to_vec()];
    rotated.extend(keys.iter().cloned());
    let first = keys.iter().find(|k| !k.is_empty()).cloned();
    let resign = first.as_deref() != Some(NEW_KEY);
    let expected = sealed.clone();
    let done = common::run(&layer(format, &rotated, allow), request(https, &browser.header()), move |_req, ctx| async move {
        let cookies = ctx.cookies();
        for op in &expected {
            let got = match op.kind {
                Kind::Signed => cookies.get_signed(&op.name),
                _ => cookies.get_private(&op.name),
            };
            assert_eq!(got, Ok(Some(op.value.clone())), "after rotation: {op:?}");
        }
        common::ok()
    });
    common::assert_clean_headers(&done.head);
    let resent = set_cookie_pairs(&done.head);
    if resign {
        for op in &sealed {
            let name = match (op.kind, format) {
                (Kind::Signed, SignedFormat::Keygrip(_)) => format!("{}.sig", op.name),
                _ => op.name.clone(),
            };
            assert!(resent.iter().any(|(n, _)| *n == name), "{op:?} not re-signed: {resent:?}");
        }
    }

    // Request 3: the new key alone reads what request 2 re-signed.
    browser.apply(resent);
    let only_new = vec![NEW_KEY.to_vec()];
    let done = common::run(&layer(format, &only_new, allow), request(https, &browser.header()), move |_req, ctx| async move {
        let cookies = ctx.cookies();
        for op in &sealed {
            let got = match op.kind {
                Kind::Signed => cookies.get_signed(&op.name),
                _ => cookies.get_private(&op.name),
            };
            assert_eq!(got, Ok(Some(op.value.clone())), "with the new key alone: {op:?}");
        }
        common::ok()
    });
    common::assert_clean_headers(&done.head);
});
