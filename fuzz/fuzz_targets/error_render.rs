//! Error rendering from an arbitrary status, message, `expose`, properties (arbitrary
//! JSON, or arbitrary bytes through `properties_from(serde_json::from_slice(..))`) and
//! headers, under an arbitrary `Accept` header, error format and method, taking each
//! of the layer's error paths (inner `Err`, `emit_error`, a handler's
//! `HttpError::into_response()`, a failing after-hook), plus `into_response()` alone.
//!
//! Checked:
//! - nothing panics;
//! - the status is the error's, and the error's status is in 400..=599 (500 for
//!   anything that is not an error status);
//! - no header value holds CR, LF or NUL; `x-content-type-options: nosniff` is set; a
//!   `content-length` matches the body;
//! - the content type is the format's (or the negotiated one's), even when the error
//!   carries a content-type header of its own;
//! - HEAD has no body;
//! - a hidden error (5xx by default) renders exactly as a bare error of its status:
//!   neither its message nor its properties reach the body;
//! - an exposed error's JSON body holds the status, the reason, the message (cut to
//!   `MAX_RENDERED_MESSAGE` bytes at a char boundary, with `…`) and every property not
//!   named like a field of its own; problem+json and text likewise.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Number, Value};
use tower_context::error::MAX_RENDERED_MESSAGE;
use tower_context::body::Body;
use tower_context::{ContextLayer, ErrorFormat, HttpError};

#[derive(Arbitrary, Debug)]
struct Input {
    status: Status,
    message: Option<Message>,
    expose: Option<bool>,
    properties: Vec<(String, Json)>,
    properties_json: Option<Vec<u8>>,
    headers: Vec<(HeaderNameIn, Vec<u8>)>,
    prior: Vec<(u8, Vec<u8>)>,
    accept: Vec<Vec<u8>>,
    format: u8,
    head: bool,
    path: u8,
}

#[derive(Arbitrary, Debug)]
enum Status {
    U16(u16),
    U32(u32),
    U64(u64),
    I32(i32),
    I64(i64),
    Code(u16),
}

#[derive(Arbitrary, Debug)]
enum Message {
    Text(String),
    /// A long message of one repeated character, to cross the rendering limit.
    Long(char, u16, String),
}

#[derive(Arbitrary, Debug)]
enum HeaderNameIn {
    Known(u8),
    Raw(Vec<u8>),
}

/// Error headers worth trying: framing and content headers, and the kept ones.
const HEADER_NAMES: &[&str] = &[
    "content-type", "content-length", "transfer-encoding", "x-content-type-options", "set-cookie",
    "retry-after", "www-authenticate", "vary", "allow", "x-ratelimit-remaining", "connection",
    "access-control-allow-origin", "location", "content-encoding",
];

/// Headers a handler may set before failing: kept ones and others.
const PRIOR_NAMES: &[&str] = &[
    "vary", "retry-after", "x-ratelimit-limit", "access-control-allow-origin", "x-secret",
    "content-type", "content-length", "server", "accept-ranges", "warning", "x-powered-by",
];

#[derive(Arbitrary, Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn value(&self, depth: usize) -> Value {
        if depth > 24 {
            return Value::Null;
        }
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().take(16).map(|j| j.value(depth + 1)).collect()),
            Json::Object(items) => Value::Object(
                items.iter().take(16).map(|(k, j)| (k.clone(), j.value(depth + 1))).collect::<Map<_, _>>(),
            ),
        }
    }
}

fn build_error(input: &Input) -> HttpError {
    let mut err = match input.status {
        Status::U16(s) => HttpError::new(s),
        Status::U32(s) => HttpError::new(s),
        Status::U64(s) => HttpError::new(s),
        Status::I32(s) => HttpError::new(s),
        Status::I64(s) => HttpError::new(s),
        Status::Code(s) => HttpError::new(StatusCode::from_u16(s).unwrap_or(StatusCode::IM_A_TEAPOT)),
    };
    match &input.message {
        None => {}
        Some(Message::Text(text)) => err = err.message(text.clone()),
        Some(Message::Long(c, n, tail)) => {
            let mut text: String = std::iter::repeat_n(*c, usize::from(*n) % (MAX_RENDERED_MESSAGE + 64)).collect();
            text.push_str(tail);
            err = err.message(text);
        }
    }
    if let Some(expose) = input.expose {
        err = err.expose(expose);
    }
    for (name, json) in input.properties.iter().take(8) {
        err = err.property(name.clone(), json.value(0));
    }
    if let Some(bytes) = &input.properties_json {
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            err = err.properties_from(value);
        }
    }
    for (name, value) in input.headers.iter().take(6) {
        err = match name {
            HeaderNameIn::Known(i) => err.header(HEADER_NAMES[usize::from(*i) % HEADER_NAMES.len()], value.as_slice()),
            HeaderNameIn::Raw(raw) => err.header(raw.as_slice(), value.as_slice()),
        };
    }
    err
}

/// The expected status for the input.
fn expected_status(status: &Status) -> u16 {
    let wide: i128 = match *status {
        Status::U16(s) | Status::Code(s) => i128::from(s),
        Status::U32(s) => i128::from(s),
        Status::U64(s) => i128::from(s),
        Status::I32(s) => i128::from(s),
        Status::I64(s) => i128::from(s),
    };
    if let Status::Code(s) = *status {
        if StatusCode::from_u16(s).is_err() {
            return 418;
        }
    }
    if (400..=599).contains(&wide) { u16::try_from(wide).unwrap_or(500) } else { 500 }
}

fn format_of(n: u8) -> ErrorFormat {
    match n % 4 {
        0 => ErrorFormat::Negotiate,
        1 => ErrorFormat::Json,
        2 => ErrorFormat::ProblemJson,
        _ => ErrorFormat::Text,
    }
}

/// Sends a request through the layer whose handler fails with `err` by path `path`.
fn render(input: &Input, err: HttpError) -> common::Collected {
    let format = format_of(input.format);
    let method = if input.head { Method::HEAD } else { Method::GET };
    let mut request = Request::builder().method(method).uri("/").body(()).expect("a valid request");
    for line in input.accept.iter().take(3) {
        request.headers_mut().append(ACCEPT, common::header_value(line));
    }
    let prior: Vec<(HeaderName, HeaderValue)> = input
        .prior
        .iter()
        .take(4)
        .map(|(i, v)| {
            let name = HeaderName::from_static(PRIOR_NAMES[usize::from(*i) % PRIOR_NAMES.len()]);
            (name, common::header_value(v))
        })
        .collect();
    let path = input.path % 4;
    let layer = ContextLayer::new().error_format(format);
    common::run(&layer, request, move |_req, ctx| async move {
        for (name, value) in prior {
            ctx.append_header(name, value);
        }
        match path {
            0 => Err(err),
            1 => {
                ctx.emit_error(err);
                common::ok()
            }
            2 => {
                let (parts, body) = err.into_response().into_parts();
                let _ = body;
                Ok(Response::from_parts(parts, Full::new(Bytes::from_static(b"ignored"))))
            }
            _ => {
                ctx.after(move |_res: Response<Body>| async move { Err::<Response<Body>, _>(err) })
                    .expect("hooks have not started");
                common::ok()
            }
        }
    })
}

fn truncated(message: &str) -> String {
    if message.len() <= MAX_RENDERED_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_RENDERED_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

fn check_response(out: &common::Collected, err: &HttpError, head: bool) {
    common::assert_clean_headers(&out.head);
    let headers = &out.head.headers;
    assert_eq!(out.head.status, err.status(), "rendered status");
    assert_eq!(headers.get("x-content-type-options").map(HeaderValue::as_bytes), Some(&b"nosniff"[..]));
    if head {
        assert!(out.body.is_empty(), "a HEAD response has no body");
    } else {
        for length in headers.get_all(CONTENT_LENGTH) {
            assert_eq!(
                length.to_str().ok().and_then(|l| l.parse::<usize>().ok()),
                Some(out.body.len()),
                "content-length {length:?} for a body of {} bytes",
                out.body.len()
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let err = build_error(&input);
    let status = err.status().as_u16();
    assert!((400..=599).contains(&status), "error status {status}");
    assert_eq!(status, expected_status(&input.status), "{:?}", input.status);

    // Without a layer: JSON.
    let alone = err.clone().into_response();
    let (parts, body) = alone.into_parts();
    let body = common::runtime().block_on(async {
        use http_body_util::BodyExt;
        body.collect().await.expect("an in-memory body").to_bytes()
    });
    let alone = common::Collected { head: parts, body };
    check_response(&alone, &err, false);

    let out = render(&input, err.clone());
    check_response(&out, &err, input.head);

    // The body must not depend on a hidden error's message or properties.
    let bare = HttpError::new(err.status()).expose(err.is_exposed());
    if !err.is_exposed() {
        let reference = render(&input, bare.clone());
        assert_eq!(out.body, reference.body, "a hidden error's body differs from a bare one's");
        assert_eq!(alone.body, bare.clone().into_response_body_bytes(), "hidden, without a layer");
    }
    if input.head {
        return;
    }

    let content_type = out.head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let rendered = match content_type {
        "application/json" => ErrorFormat::Json,
        "application/problem+json" => ErrorFormat::ProblemJson,
        "text/plain; charset=utf-8" => ErrorFormat::Text,
        other => panic!("unexpected content type {other:?}"),
    };
    let format = format_of(input.format);
    if format != ErrorFormat::Negotiate {
        assert_eq!(rendered, format, "the configured format");
    }
    let reason = err.status().canonical_reason().unwrap_or("Unknown Error");
    let visible = if err.is_exposed() { truncated(err.message_str()) } else { reason.to_owned() };
    let reserved: &[&str] = match rendered {
        ErrorFormat::ProblemJson => &["type", "title", "status", "detail"],
        _ => &["status", "error", "message"],
    };
    match rendered {
        ErrorFormat::Text => assert_eq!(out.body, visible.as_bytes(), "text body"),
        _ => {
            let json: Value = serde_json::from_slice(&out.body).expect("a JSON body parses");
            let object = json.as_object().expect("a JSON body is an object");
            assert_eq!(object.get("status").and_then(Value::as_u64), Some(u64::from(status)));
            if rendered == ErrorFormat::Json {
                assert_eq!(object.get("error").and_then(Value::as_str), Some(reason));
                assert_eq!(object.get("message").and_then(Value::as_str), Some(visible.as_str()));
            } else {
                assert_eq!(object.get("title").and_then(Value::as_str), Some(reason));
                assert_eq!(object.get("type").and_then(Value::as_str), Some("about:blank"));
                let detail = object.get("detail").and_then(Value::as_str);
                if err.is_exposed() && input.message.is_some() {
                    assert_eq!(detail, Some(visible.as_str()));
                } else {
                    assert_eq!(detail, None);
                }
            }
            if err.is_exposed() {
                let shown: Vec<&String> =
                    err.properties().keys().filter(|k| !reserved.contains(&k.as_str())).collect();
                for key in &shown {
                    assert!(object.contains_key(key.as_str()), "property {key:?} missing");
                }
                assert!(object.len() <= shown.len() + 4, "unexpected fields in {object:?}");
            } else {
                assert!(object.keys().all(|k| reserved.contains(&k.as_str())), "a hidden error shows {object:?}");
            }
        }
    }
});

/// The JSON body `into_response()` gives, for comparisons.
trait BodyBytes {
    fn into_response_body_bytes(self) -> Bytes;
}

impl BodyBytes for HttpError {
    fn into_response_body_bytes(self) -> Bytes {
        let body = self.into_response().into_body();
        common::runtime().block_on(async {
            use http_body_util::BodyExt;
            body.collect().await.expect("an in-memory body").to_bytes()
        })
    }
}
