//! The one rendering every error takes: status, negotiated body, filtered headers.

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use super::{HttpError, reason};
use crate::body::Body;
use crate::negotiate::{self, MediaOffer};

/// How [`ContextLayer`](crate::ContextLayer) writes the body of an error response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorFormat {
    /// Chosen from the request's `Accept` header among JSON, problem+json and plain
    /// text; JSON when the header is absent or accepts anything.
    #[default]
    Negotiate,
    /// `application/json`: `{"status":404,"error":"Not Found","message":"…",…properties}`.
    Json,
    /// `application/problem+json` (RFC 9457): `{"type":"about:blank","title":"Not
    /// Found","status":404,"detail":"…",…properties}`.
    ProblemJson,
    /// `text/plain; charset=utf-8`: the message alone.
    Text,
}

/// The most bytes of an error's message a rendered body carries.
pub const MAX_RENDERED_MESSAGE: usize = 8 * 1024;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

impl ErrorFormat {
    /// The concrete format for a request with this `Accept` header.
    pub(crate) fn resolve(self, accept: Option<&HeaderValue>) -> ErrorFormat {
        if self != ErrorFormat::Negotiate {
            return self;
        }
        const fn offer(kind: &'static str, subtype: &'static str) -> MediaOffer<'static> {
            MediaOffer { kind, subtype, params: "" }
        }
        const OFFERS: [(MediaOffer<'static>, ErrorFormat); 4] = [
            (offer("application", "json"), ErrorFormat::Json),
            (offer("application", "problem+json"), ErrorFormat::ProblemJson),
            (offer("text", "plain"), ErrorFormat::Text),
            (offer("text", "html"), ErrorFormat::Text),
        ];
        negotiate::best(accept, &OFFERS, |entry, (offer, _)| negotiate::media_match_offer(entry, offer))
            .map_or(ErrorFormat::Json, |index| OFFERS[index].1)
    }
}

/// The message as the client may see it: the reason phrase unless exposed, cut to
/// [`MAX_RENDERED_MESSAGE`] bytes.
fn visible_message(err: &HttpError) -> std::borrow::Cow<'_, str> {
    if !err.is_exposed() {
        return reason(err.status()).into();
    }
    let message = err.message_str();
    if message.len() <= MAX_RENDERED_MESSAGE {
        return message.into();
    }
    let mut end = MAX_RENDERED_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end]).into()
}

fn json_body(err: &HttpError, problem: bool) -> Bytes {
    let status = err.status();
    let message = visible_message(err);
    let reserved: &[&str] =
        if problem { &["type", "title", "status", "detail"] } else { &["status", "error", "message"] };
    let mut out = Vec::with_capacity(96 + message.len());
    let mut ser = serde_json::Serializer::new(&mut out);
    // Writing JSON into a Vec cannot fail: every key is a string and every value a
    // serde_json value.
    let written = (|| {
        let mut map = ser.serialize_map(None)?;
        if problem {
            map.serialize_entry("type", "about:blank")?;
            map.serialize_entry("title", reason(status))?;
            map.serialize_entry("status", &status.as_u16())?;
            if err.is_exposed() && err.0.message.is_some() {
                map.serialize_entry("detail", &message)?;
            }
        } else {
            map.serialize_entry("status", &status.as_u16())?;
            map.serialize_entry("error", reason(status))?;
            map.serialize_entry("message", &message)?;
        }
        if err.is_exposed() {
            for (key, value) in err.properties() {
                if !reserved.contains(&key.as_str()) {
                    map.serialize_entry(key, value)?;
                }
            }
        }
        map.end()
    })();
    debug_assert!(written.is_ok());
    if written.is_err() {
        return Bytes::from(Value::Null.to_string());
    }
    Bytes::from(out)
}

/// The status, content type and body of an error, in a resolved format.
pub(crate) fn render_body(err: &HttpError, format: ErrorFormat) -> Response<Body> {
    let (content_type, body) = match format {
        ErrorFormat::ProblemJson => (PROBLEM_JSON, json_body(err, true)),
        ErrorFormat::Text => (TEXT, Bytes::from(visible_message(err).into_owned())),
        ErrorFormat::Json | ErrorFormat::Negotiate => (JSON, json_body(err, false)),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = err.status();
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

/// Whether a header set before the error survives it (Toa's list, matched as a prefix
/// the way Toa's pattern does).
pub(crate) fn kept(name: &header::HeaderName) -> bool {
    const KEPT: [&str; 9] = [
        "accept",
        "allow",
        "retry-after",
        "warning",
        "vary",
        "server",
        "x-powered-by",
        "access-control-allow-",
        "x-ratelimit-",
    ];
    let name = name.as_str();
    // Most names go on their first letter (content-*, cache-control, etag, ...).
    matches!(name.as_bytes().first(), Some(b'a' | b'r' | b'w' | b'v' | b's' | b'x'))
        && KEPT.iter().any(|prefix| name.starts_with(prefix))
}

/// Applies the header rules to a rendered error response: the kept headers of
/// `prior`, then the error's own headers, then `nosniff`.
pub(crate) fn apply_headers(response: &mut Response<Body>, err: &HttpError, prior: Option<&HeaderMap>) {
    let headers = response.headers_mut();
    if let Some(prior) = prior {
        for (name, value) in prior {
            if kept(name) && name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                headers.append(name, value.clone());
            }
        }
    }
    let mut last = None;
    for (name, value) in err.headers() {
        // The body is the rendered one: its framing and type are not the error's to
        // set (as in Koa, which sets the length and type after `err.headers`).
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::CONTENT_TYPE
        {
            continue;
        }
        // The error's own values replace what came before; several values of one
        // name all go out.
        if last != Some(name) {
            headers.remove(name);
            last = Some(name);
        }
        headers.append(name, value.clone());
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
}

/// The response an `HttpError` becomes without a layer around it: JSON.
pub(crate) fn render_default(err: &HttpError) -> Response<Body> {
    let mut response = render_body(err, ErrorFormat::Json);
    apply_headers(&mut response, err, None);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpError;
    use http_body_util::BodyExt;

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn accept(value: &'static str) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(value))
    }

    #[test]
    fn negotiation_picks_a_format() {
        let n = ErrorFormat::Negotiate;
        assert_eq!(n.resolve(None), ErrorFormat::Json);
        assert_eq!(n.resolve(accept("*/*").as_ref()), ErrorFormat::Json);
        assert_eq!(n.resolve(accept("text/html,*/*;q=0.8").as_ref()), ErrorFormat::Text);
        assert_eq!(n.resolve(accept("application/problem+json").as_ref()), ErrorFormat::ProblemJson);
        assert_eq!(n.resolve(accept("image/png").as_ref()), ErrorFormat::Json);
        // Each offer by its own type, in any case, with spaces and parameters around it.
        assert_eq!(n.resolve(accept("Text/Plain").as_ref()), ErrorFormat::Text);
        assert_eq!(n.resolve(accept("application/json;q=0.5, text/plain").as_ref()), ErrorFormat::Text);
        assert_eq!(n.resolve(accept(" APPLICATION/JSON ;q=1, text/*;q=0.9").as_ref()), ErrorFormat::Json);
        assert_eq!(
            n.resolve(accept("application/*;q=0.2, application/problem+json;q=0.3").as_ref()),
            ErrorFormat::ProblemJson
        );
        assert_eq!(n.resolve(accept("text/html;level=1").as_ref()), ErrorFormat::Json);
        assert_eq!(ErrorFormat::Text.resolve(accept("application/json").as_ref()), ErrorFormat::Text);
    }

    #[tokio::test]
    async fn json_body_has_fields_in_order_and_properties_cannot_override_them() {
        let err = HttpError::new(400)
            .message("name required")
            .property("status", 200)
            .property("message", "x")
            .property("field", "name");
        let response = render_body(&err, ErrorFormat::Json);
        assert_eq!(response.status(), 400);
        assert_eq!(
            text(response).await,
            r#"{"status":400,"error":"Bad Request","message":"name required","field":"name"}"#
        );
    }

    #[tokio::test]
    async fn hidden_errors_show_only_the_reason() {
        let err = HttpError::new(500).message("db password is hunter2").property("sql", "select");
        assert_eq!(
            text(render_body(&err, ErrorFormat::Json)).await,
            r#"{"status":500,"error":"Internal Server Error","message":"Internal Server Error"}"#
        );
        assert_eq!(
            text(render_body(&err, ErrorFormat::ProblemJson)).await,
            r#"{"type":"about:blank","title":"Internal Server Error","status":500}"#
        );
        assert_eq!(text(render_body(&err, ErrorFormat::Text)).await, "Internal Server Error");
    }

    #[tokio::test]
    async fn problem_json() {
        let err = HttpError::new(403).message("no access").property("title", "x").property("user", 3);
        assert_eq!(
            text(render_body(&err, ErrorFormat::ProblemJson)).await,
            r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"no access","user":3}"#
        );
    }

    #[tokio::test]
    async fn huge_messages_are_cut_at_a_char_boundary() {
        let err = HttpError::new(400).message("é".repeat(MAX_RENDERED_MESSAGE));
        let body = text(render_body(&err, ErrorFormat::Text)).await;
        assert!(body.ends_with('…'));
        assert!(body.len() <= MAX_RENDERED_MESSAGE + '…'.len_utf8());
        assert_eq!(err.message_str().len(), 2 * MAX_RENDERED_MESSAGE);
    }

    // Found by the `error_render` fuzz target: an error header `content-length: ""`
    // went out with a body of another length.
    #[tokio::test]
    async fn error_headers_cannot_set_the_framing() {
        let err = HttpError::new(400)
            .header("content-length", "")
            .header("content-length", "3")
            .header("transfer-encoding", "chunked")
            .header("content-type", "text/html")
            .header("x-kept", "1");
        let mut response = render_body(&err, ErrorFormat::Json);
        apply_headers(&mut response, &err, None);
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
        assert!(response.headers().get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()["x-kept"], "1");
        let mut response = render_default(&err);
        assert!(response.headers_mut().remove(header::CONTENT_LENGTH).is_none());
        assert!(text(response).await.starts_with(r#"{"status":400"#));
    }

    #[test]
    fn whitelisted_headers_survive_and_error_headers_replace() {
        let mut prior = HeaderMap::new();
        prior.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        prior.insert("vary", HeaderValue::from_static("origin"));
        prior.insert("x-secret", HeaderValue::from_static("1"));
        prior.insert("retry-after", HeaderValue::from_static("5"));
        let err = HttpError::new(429).header("retry-after", "10").header("x-a", "1").header("x-a", "2");
        let mut response = render_body(&err, ErrorFormat::Json);
        apply_headers(&mut response, &err, Some(&prior));
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["vary"], "origin");
        assert!(h.get("x-secret").is_none());
        assert_eq!(h.get_all("retry-after").iter().collect::<Vec<_>>(), ["10"]);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-type"], "application/json");
    }
}
