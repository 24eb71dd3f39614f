//! Request and response helpers and conditional GET, driven through `ContextLayer`
//! with real header values.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tower::{Layer, ServiceExt, service_fn};
use tower_context::body::Body;
use tower_context::conditional::{ConditionalGetLayer, conditional_get};
use tower_context::request::{HeaderExt, RequestHeadExt};
use tower_context::response::{attachment, content_type, etag, is, last_modified, redirect, redirect_back};
use tower_context::{Context, ContextLayer, HttpError};

use crate::common::body_string;

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<axum::body::Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

async fn call(app: &Router, req: Request<axum::body::Body>) -> (StatusCode, HeaderMap, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, body_string(res).await)
}

fn negotiation_app() -> Router {
    Router::new()
        .route(
            "/accepts",
            get(|ctx: Context| async move {
                format!(
                    "type={:?} enc={:?} charset={:?} lang={:?}",
                    ctx.accepts(&["json", "html", "text/plain"]),
                    ctx.accepts_encodings(&["br", "gzip", "identity"]),
                    ctx.accepts_charsets(&["utf-8", "iso-8859-1"]),
                    ctx.accepts_languages(&["en", "de-DE", "fr"]),
                )
            }),
        )
        .route(
            "/accepted",
            get(|ctx: Context| async move {
                serde_json::json!({
                    "types": ctx.accepted_types(),
                    "encodings": ctx.accepted_encodings(),
                    "charsets": ctx.accepted_charsets(),
                    "languages": ctx.accepted_languages(),
                })
                .to_string()
            }),
        )
        .route(
            "/is",
            post(
                |ctx: Context| async move { format!("{:?}", ctx.is(&["json", "urlencoded", "multipart/*"])) },
            ),
        )
        .route(
            "/body",
            post(|ctx: Context| async move {
                serde_json::json!({
                    "type": ctx.content_type(),
                    "charset": ctx.charset(),
                    "length": ctx.content_length(),
                    "is": ctx.is(&[]),
                    "is_text": ctx.is(&["text/*", "json"]),
                })
                .to_string()
            }),
        )
        .layer(ContextLayer::new())
}

#[tokio::test]
async fn accepts_family_with_q_values_and_wildcards() {
    let app = negotiation_app();
    let req = request(
        "GET",
        "/accepts",
        &[
            ("accept", "text/html;q=0.8, application/*;q=0.9, */*;q=0.1"),
            ("accept-encoding", "gzip, br;q=0.5, *;q=0"),
            ("accept-charset", "iso-8859-1, utf-8;q=0.7"),
            ("accept-language", "de, fr;q=0.9, *;q=0.1"),
        ],
    );
    let (_, _, body) = call(&app, req).await;
    assert_eq!(body, r#"type=Some("json") enc=Some("gzip") charset=Some("iso-8859-1") lang=Some("de-DE")"#);

    let req = request("GET", "/accepts", &[("accept", "image/png"), ("accept-encoding", "zstd")]);
    let (_, _, body) = call(&app, req).await;
    assert_eq!(body, r#"type=None enc=Some("identity") charset=Some("utf-8") lang=Some("en")"#);

    // No headers at all: the first offer of each, except that only identity is an
    // acceptable encoding.
    let (_, _, body) = call(&app, request("GET", "/accepts", &[])).await;
    assert_eq!(body, r#"type=Some("json") enc=Some("identity") charset=Some("utf-8") lang=Some("en")"#);
}

#[tokio::test]
async fn without_accept_encoding_nothing_is_compressed() {
    let app = Router::new()
        .route(
            "/",
            get(|ctx: Context| async move {
                format!(
                    "{:?} {:?} {:?}",
                    ctx.accepts_encodings(&["gzip", "br"]),
                    ctx.accepts_encodings(&["br", "identity"]),
                    ctx.accepts_encodings(&["identity", "br"]),
                )
            }),
        )
        .layer(ContextLayer::new());
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("accept-encoding", "br")],
        &[("accept-encoding", "br;q=0.5")],
        &[("accept-encoding", "gzip;q=0.5, br")],
        &[("accept-encoding", "*;q=0")],
    ];
    let answers = [
        r#"None Some("identity") Some("identity")"#,
        // identity comes in at the lowest q the client gave: a tie that the earlier
        // offer wins.
        r#"Some("br") Some("br") Some("identity")"#,
        r#"Some("br") Some("br") Some("identity")"#,
        r#"Some("br") Some("br") Some("br")"#,
        "None None None",
    ];
    for (headers, want) in cases.into_iter().zip(answers) {
        let (_, _, body) = call(&app, request("GET", "/", headers)).await;
        assert_eq!(body, want, "{headers:?}");
    }
}

async fn accepted(headers: &[(&str, &str)]) -> serde_json::Value {
    let (status, _, body) = call(&negotiation_app(), request("GET", "/accepted", headers)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn accepted_lists_best_first() {
    let got = accepted(&[
        ("accept", "text/html;q=0.8, application/json, text/plain;q=0, image/*;q=0.8, */*;q=0.1"),
        ("accept-encoding", "gzip;q=0.6, br, zstd;q=0.6"),
        ("accept-charset", "iso-8859-1;q=0.4, utf-8"),
        ("accept-language", "fr;q=0.9, de-CH, de;q=0.9, en;q=0.5, *;q=0"),
    ])
    .await;
    assert_eq!(
        got,
        serde_json::json!({
            "types": ["application/json", "text/html", "image/*", "*/*"],
            "encodings": ["br", "gzip", "zstd", "identity"],
            "charsets": ["utf-8", "iso-8859-1"],
            "languages": ["de-CH", "fr", "de", "en"],
        })
    );
    // No headers: anything, except that the only encoding is identity.
    let got = accepted(&[]).await;
    assert_eq!(
        got,
        serde_json::json!({ "types": ["*/*"], "encodings": ["identity"], "charsets": ["*"], "languages": ["*"] })
    );
    // Empty headers accept nothing (an empty Accept-Encoding still leaves identity).
    let got =
        accepted(&[("accept", ""), ("accept-encoding", ""), ("accept-charset", ""), ("accept-language", "")])
            .await;
    assert_eq!(
        got,
        serde_json::json!({ "types": [], "encodings": ["identity"], "charsets": [], "languages": [] })
    );
    let got = accepted(&[("accept-encoding", "gzip, identity;q=0")]).await;
    assert_eq!(got["encodings"], serde_json::json!(["gzip"]));
}

#[tokio::test]
async fn accepted_lists_skip_what_they_cannot_read() {
    let got = accepted(&[
        ("accept", ";;, text/html;q=nope, json, /x, a b/c, application/xml;q=7, text/csv;q=-1"),
        ("accept-language", "en-US;q=0.5, e n, ,fr"),
    ])
    .await;
    assert_eq!(got["types"], serde_json::json!(["application/xml"]));
    assert_eq!(got["languages"], serde_json::json!(["fr", "en-US"]));
}

#[tokio::test]
async fn malformed_and_absurd_accept_headers_do_not_panic() {
    let app = negotiation_app();
    let cases = [
        ("text/plain;q=1e400, application/json;q=0.5", r#"Some("text/plain")"#),
        ("application/json;q=-7, text/html;q=NaN", "None"),
        (";;;,,,/,*/,q=1", "None"),
        ("text/html;q=0.999999999999999999999, application/json;q=1.0000001", r#"Some("json")"#),
        ("*/*;q=abc, text/*", r#"Some("html")"#),
    ];
    for (accept, expected) in cases {
        let req = request("GET", "/accepts", &[("accept", accept)]);
        let (status, _, body) = call(&app, req).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(&format!("type={expected} ")), "{accept}: {body}");
    }
}

#[tokio::test]
async fn is_on_the_content_type() {
    let app = negotiation_app();
    let cases = [
        ("application/json; charset=utf-8", r#"Some("json")"#),
        ("application/x-www-form-urlencoded", r#"Some("urlencoded")"#),
        // A wildcard answers with the type that came.
        ("multipart/form-data; boundary=----x", r#"Some("multipart/form-data")"#),
        ("Multipart/Mixed", r#"Some("multipart/mixed")"#),
        ("text/plain", "None"),
        ("json", "None"),
        ("application/json; charset=\"unterminated", "None"),
        ("//", "None"),
    ];
    for (content_type, expected) in cases {
        let req = request("POST", "/is", &[("content-type", content_type)]);
        let (_, _, body) = call(&app, req).await;
        assert_eq!(body, expected, "{content_type}");
    }
    let (_, _, body) = call(&app, request("POST", "/is", &[])).await;
    assert_eq!(body, "None");
}

async fn body_facts(headers: &[(&str, &str)]) -> serde_json::Value {
    let (status, _, body) = call(&negotiation_app(), request("POST", "/body", headers)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn content_type_charset_and_length_on_a_context() {
    let got =
        body_facts(&[("content-type", "text/HTML; Charset=\"UTF-8\""), ("content-length", "1024")]).await;
    assert_eq!(
        got,
        serde_json::json!({
            "type": "text/html",
            "charset": "utf-8",
            "length": 1024,
            "is": "text/html",
            "is_text": "text/html",
        })
    );
    let got = body_facts(&[("content-type", "application/json"), ("content-length", "0")]).await;
    assert_eq!(
        got,
        serde_json::json!({
            "type": "application/json",
            "charset": null,
            "length": 0,
            "is": "application/json",
            "is_text": "json",
        })
    );
    let none =
        serde_json::json!({ "type": null, "charset": null, "length": null, "is": null, "is_text": null });
    assert_eq!(body_facts(&[]).await, none);
    for (content_type, length) in [("json", "12abc"), ("text/", "+3"), ("text/*", "-1"), ("a/b; c=\"", "1e3")]
    {
        let got = body_facts(&[("content-type", content_type), ("content-length", length)]).await;
        assert_eq!(got, none, "{content_type} {length}");
    }
    // Repeated Content-Length lines: one length when they agree, none when not.
    let got = body_facts(&[("content-length", "5"), ("content-length", "5")]).await;
    assert_eq!(got["length"], 5);
    let got = body_facts(&[("content-length", "5"), ("content-length", "6")]).await;
    assert_eq!(got["length"], serde_json::Value::Null);
}

#[tokio::test]
async fn response_is_in_an_after_hook() {
    let app = Router::new()
        .route(
            "/{kind}",
            get(|ctx: Context, axum::extract::Path(kind): axum::extract::Path<String>| async move {
                ctx.after(|mut res| async move {
                    let answer = format!("{:?}", is(res.headers(), &["json", "text/*"]));
                    res.headers_mut().insert("x-is", HeaderValue::from_str(&answer).unwrap());
                    Ok::<_, HttpError>(res)
                })?;
                let mut headers = HeaderMap::new();
                content_type(&mut headers, &kind).map_err(HttpError::from)?;
                Ok::<_, HttpError>((headers, "body"))
            }),
        )
        .layer(ContextLayer::new());
    for (kind, want) in [
        ("json", r#"Some("json")"#),
        ("html", r#"Some("text/html")"#),
        ("text%2Fcsv", r#"Some("text/csv")"#),
        ("png", "None"),
    ] {
        let (status, headers, _) = call(&app, request("GET", &format!("/{kind}"), &[])).await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        assert_eq!(headers["x-is"], want, "{kind}");
    }
}

fn facts_app() -> Router {
    Router::new()
        .route(
            "/{*rest}",
            get(|ctx: Context| async move {
                serde_json::json!({
                    "protocol": ctx.protocol(),
                    "secure": ctx.secure(),
                    "host": ctx.host(),
                    "hostname": ctx.hostname(),
                    "origin": ctx.origin(),
                    "href": ctx.href(),
                    "path": ctx.path(),
                    "querystring": ctx.querystring(),
                    "search": ctx.search(),
                    "query": ctx.query().iter().map(|(k, v)| [k.to_owned(), v.to_owned()]).collect::<Vec<_>>(),
                    "subdomains": ctx.subdomains(2),
                    "idempotent": ctx.idempotent(),
                    "referrer": HeaderExt::header(&ctx, "Referrer").and_then(|v| v.to_str().ok()),
                })
                .to_string()
            })
            .post(|ctx: Context| async move { ctx.idempotent().to_string() }),
        )
        .layer(ContextLayer::new())
}

async fn facts(req: Request<axum::body::Body>) -> serde_json::Value {
    let (status, _, body) = call(&facts_app(), req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn request_facts() {
    let req = request(
        "GET",
        "/shop/a%20b?tag=x&tag=y&q=rust+tower&e=%E2%9C%93",
        &[("host", "tobi.ferrets.example.com:8080"), ("referer", "http://tobi.ferrets.example.com:8080/")],
    );
    let got = facts(req).await;
    assert_eq!(
        got,
        serde_json::json!({
            "protocol": "http",
            "secure": false,
            "host": "tobi.ferrets.example.com:8080",
            "hostname": "tobi.ferrets.example.com",
            "origin": "http://tobi.ferrets.example.com:8080",
            "href": "http://tobi.ferrets.example.com:8080/shop/a%20b?tag=x&tag=y&q=rust+tower&e=%E2%9C%93",
            "path": "/shop/a%20b",
            "querystring": "tag=x&tag=y&q=rust+tower&e=%E2%9C%93",
            "search": "?tag=x&tag=y&q=rust+tower&e=%E2%9C%93",
            "query": [["tag", "x"], ["tag", "y"], ["q", "rust tower"], ["e", "✓"]],
            "subdomains": ["ferrets", "tobi"],
            "idempotent": true,
            "referrer": "http://tobi.ferrets.example.com:8080/",
        })
    );
    let (_, _, body) = call(&facts_app(), request("POST", "/x", &[])).await;
    assert_eq!(body, "false");
}

#[tokio::test]
async fn ipv6_and_ip_hosts() {
    let got = facts(request("GET", "/p", &[("host", "[2001:db8::1]:8443")])).await;
    assert_eq!(got["host"], "[2001:db8::1]:8443");
    assert_eq!(got["hostname"], "[2001:db8::1]");
    assert_eq!(got["subdomains"], serde_json::json!([]));
    let got = facts(request("GET", "/p", &[("host", "192.168.0.10")])).await;
    assert_eq!(got["hostname"], "192.168.0.10");
    assert_eq!(got["subdomains"], serde_json::json!([]));
}

#[tokio::test]
async fn bad_hosts_are_absent_not_errors() {
    for host in [":8080", "user@evil.example", "a b", "[::1", ""] {
        let got = facts(request("GET", "/p", &[("host", host)])).await;
        assert_eq!(got["host"], serde_json::Value::Null, "{host}");
        assert_eq!(got["hostname"], serde_json::Value::Null, "{host}");
        assert_eq!(got["origin"], serde_json::Value::Null, "{host}");
        assert_eq!(got["subdomains"], serde_json::json!([]), "{host}");
    }
}

#[tokio::test]
async fn helpers_work_on_plain_requests_and_parts() {
    let req = request(
        "GET",
        "/x?a=1",
        &[
            ("host", "h.example"),
            ("accept", "text/html"),
            ("content-type", "text/plain; charset=latin1"),
            ("content-length", "3"),
        ],
    );
    assert_eq!(req.accepts(&["json", "html"]), Some("html"));
    assert_eq!(req.accepted_types(), ["text/html"]);
    assert_eq!(req.is(&["text/*"]).as_deref(), Some("text/plain"));
    assert_eq!(req.charset().as_deref(), Some("latin1"));
    let (parts, _) = req.into_parts();
    assert_eq!(parts.href().as_deref(), Some("http://h.example/x?a=1"));
    assert_eq!(parts.content_type().as_deref(), Some("text/plain"));
    assert_eq!(parts.content_length(), Some(3));
    assert_eq!(parts.headers.accepts(&["html"]), Some("html"));
    assert_eq!(parts.headers.accepted_encodings(), ["identity"]);
}

fn page_app() -> Router {
    async fn page() -> (HeaderMap, &'static str) {
        let mut headers = HeaderMap::new();
        etag(&mut headers, "v1").unwrap();
        last_modified(&mut headers, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        (headers, "the full page")
    }
    async fn missing() -> (StatusCode, HeaderMap, &'static str) {
        let mut headers = HeaderMap::new();
        etag(&mut headers, "v1").unwrap();
        (StatusCode::NOT_FOUND, headers, "gone")
    }
    Router::new()
        .route("/", get(page).post(page))
        .route("/missing", get(missing))
        .layer(ConditionalGetLayer::new())
        .layer(ContextLayer::new())
}

#[tokio::test]
async fn conditional_get_layer_answers_fresh_requests_with_304() {
    let app = page_app();
    let fresh = [
        ("if-none-match", "\"v1\""),
        ("if-none-match", "W/\"v1\""),
        ("if-none-match", "\"v0\", W/\"v1\""),
        ("if-none-match", "*"),
        ("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT"),
    ];
    for (name, value) in fresh {
        let (status, headers, body) = call(&app, request("GET", "/", &[(name, value)])).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{name}: {value}");
        assert_eq!(body, "");
        assert_eq!(headers["etag"], "\"v1\"");
        assert!(headers.get(header::CONTENT_TYPE).is_none());
        assert!(headers.get(header::CONTENT_LENGTH).is_none_or(|l| l == "0"));
    }
    let (status, _, body) = call(&app, request("HEAD", "/", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));

    let stale = [
        ("GET", "/", "if-none-match", "\"v2\""),
        ("GET", "/", "if-modified-since", "Mon, 13 Nov 2023 00:00:00 GMT"),
        ("GET", "/", "if-modified-since", "not a date"),
        ("POST", "/", "if-none-match", "\"v1\""),
    ];
    for (method, uri, name, value) in stale {
        let (status, _, body) = call(&app, request(method, uri, &[(name, value)])).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "the full page"), "{method} {name}: {value}");
    }
    let (status, _, body) = call(&app, request("GET", "/missing", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "gone"));
    // If-None-Match decides alone when present.
    let both = [("if-none-match", "\"v2\""), ("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")];
    let (status, _, _) = call(&app, request("GET", "/", &both)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn conditional_get_layer_works_without_context_layer() {
    let svc = ConditionalGetLayer::new().layer(service_fn(|_req: Request<Empty<Bytes>>| async {
        let mut res = Response::new(http_body_util::Full::new(Bytes::from_static(b"body")));
        etag(res.headers_mut(), "W/\"x\"").unwrap();
        Ok::<_, std::convert::Infallible>(res)
    }));
    let req = Request::get("/").header("if-none-match", "\"x\"").body(Empty::new()).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(body_string(res).await, "");
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_string(res).await, "body");
}

#[tokio::test]
async fn conditional_get_hook_and_fresh_in_a_hook() {
    let app = Router::new()
        .route(
            "/",
            get(|ctx: Context| async move {
                conditional_get(&ctx)?;
                let seen = ctx.clone();
                // Added later, so it runs first: the validator it sets is seen by the
                // conditional hook.
                ctx.after(move |mut res| async move {
                    etag(res.headers_mut(), "from-hook").unwrap();
                    let fresh = seen.fresh(&res);
                    res.headers_mut()
                        .insert("x-fresh", HeaderValue::from_static(if fresh { "yes" } else { "no" }));
                    Ok::<_, HttpError>(res)
                })?;
                Ok::<_, HttpError>("full body")
            }),
        )
        .layer(ContextLayer::new());
    let (status, headers, body) =
        call(&app, request("GET", "/", &[("if-none-match", "\"from-hook\"")])).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(headers["x-fresh"], "yes");
    let (status, headers, body) = call(&app, request("GET", "/", &[("if-none-match", "\"other\"")])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "full body"));
    assert_eq!(headers["x-fresh"], "no");
}

fn redirect_app() -> Router {
    Router::new()
        .route(
            "/go",
            get(|ctx: Context| async move {
                let target = ctx.query().get("to").unwrap_or("/").to_owned();
                Ok::<Response<Body>, HttpError>(redirect(&ctx, &target)?)
            }),
        )
        .route(
            "/moved",
            get(|ctx: Context| async move {
                tower_context::response::redirect_with_status(&ctx, StatusCode::MOVED_PERMANENTLY, "/new")
            }),
        )
        .route("/back", post(|ctx: Context| async move { redirect_back(&ctx, "/home") }))
        .layer(ContextLayer::new())
}

#[tokio::test]
async fn redirect_bodies_follow_accept_and_escape() {
    let app = redirect_app();
    let req = request("GET", "/go?to=%2Fsearch%3Fq%3D%3Cscript%3E%22x", &[("accept", "text/html")]);
    let (status, headers, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "/search?q=%3Cscript%3E%22x");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        body,
        r#"Redirecting to <a href="/search?q=%3Cscript%3E%22x">/search?q=%3Cscript%3E%22x</a>."#
    );

    let req = request("GET", "/go?to=https%3A%2F%2Fexample.com%2Fa%20b", &[("accept", "application/json")]);
    let (status, headers, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "https://example.com/a%20b");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body, "Redirecting to https://example.com/a%20b.");

    let (status, headers, _) = call(&app, request("GET", "/moved", &[])).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "/new");
}

#[tokio::test]
async fn hostile_redirect_targets() {
    let app = redirect_app();
    // CR/LF cannot split the header: they are percent-encoded.
    let req = request("GET", "/go?to=%2Fa%0D%0ASet-Cookie%3A%20x%3D1", &[("accept", "text/plain")]);
    let (status, headers, _) = call(&app, req).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "/a%0D%0ASet-Cookie:%20x=1");
    assert!(headers.get(header::SET_COOKIE).is_none());
    // Script URLs are refused with 400, however they are disguised.
    for to in [
        "javascript%3Aalert(1)",
        "%20JavaScript%3Aalert(1)",
        "java%09script%3Aalert(1)",
        "data%3Atext%2Fhtml%2Cx",
        "",
    ] {
        let req = request("GET", &format!("/go?to={to}"), &[("accept", "application/json")]);
        let (status, _, body) = call(&app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{to}");
        assert!(body.contains("invalid redirect target"), "{body}");
    }
}

#[tokio::test]
async fn redirect_back_stays_on_site() {
    let app = redirect_app();
    let cases = [
        ("http://shop.example/cart?x=1", "http://shop.example/cart?x=1"),
        ("https://SHOP.example/cart", "https://SHOP.example/cart"),
        ("/relative/path", "/relative/path"),
        ("https://evil.example/phish", "/home"),
        ("https://shop.example.evil.example/", "/home"),
        ("//evil.example/x", "/home"),
        ("/\\evil.example", "/home"),
        ("javascript:alert(1)", "/home"),
        ("not a url", "/home"),
    ];
    for (referer, location) in cases {
        let req = request("POST", "/back", &[("host", "shop.example"), ("referer", referer)]);
        let (status, headers, _) = call(&app, req).await;
        assert_eq!(status, StatusCode::FOUND, "{referer}");
        assert_eq!(headers["location"], location, "{referer}");
    }
    let (_, headers, _) = call(&app, request("POST", "/back", &[("host", "shop.example")])).await;
    assert_eq!(headers["location"], "/home");
}

#[tokio::test]
async fn header_helpers() {
    let mut headers = HeaderMap::new();
    attachment(&mut headers, Some("report.csv"));
    assert_eq!(headers["content-disposition"], "attachment; filename=\"report.csv\"");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");

    let mut headers = HeaderMap::new();
    attachment(&mut headers, Some("C:\\Users\\me\\naïve \"plan\" 😀.txt"));
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"na?ve \\\"plan\\\" ?.txt\"; filename*=UTF-8''na%C3%AFve%20%22plan%22%20%F0%9F%98%80.txt"
    );
    let mut headers = HeaderMap::new();
    attachment(&mut headers, Some("a\r\nb.unknownext"));
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"a??b.unknownext\"; filename*=UTF-8''a%0D%0Ab.unknownext"
    );
    assert!(headers.get(header::CONTENT_TYPE).is_none());
    let mut headers = HeaderMap::new();
    attachment(&mut headers, None);
    assert_eq!(headers["content-disposition"], "attachment");

    let mut headers = HeaderMap::new();
    etag(&mut headers, "\"already\"").unwrap();
    assert_eq!(headers["etag"], "\"already\"");
    etag(&mut headers, "W/\"weak\"").unwrap();
    assert_eq!(headers["etag"], "W/\"weak\"");
    assert!(etag(&mut headers, "a\"b").is_err());
    assert!(etag(&mut headers, "line\nbreak").is_err());
    assert_eq!(headers["etag"], "W/\"weak\"");

    let mut headers = HeaderMap::new();
    last_modified(&mut headers, SystemTime::UNIX_EPOCH - Duration::from_secs(10));
    assert_eq!(headers["last-modified"], "Thu, 01 Jan 1970 00:00:00 GMT");
    last_modified(&mut headers, SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000));
    assert_eq!(headers["last-modified"], "Fri, 31 Dec 9999 23:59:59 GMT");

    let mut headers = HeaderMap::new();
    content_type(&mut headers, "png").unwrap();
    assert_eq!(headers["content-type"], "image/png");
    content_type(&mut headers, "text/plain; charset=latin1").unwrap();
    assert_eq!(headers["content-type"], "text/plain; charset=latin1");
    assert!(content_type(&mut headers, "nope/").is_err());
    assert!(content_type(&mut headers, "image/*").is_err());
    assert_eq!(headers["content-type"], "text/plain; charset=latin1");

    let mut headers = HeaderMap::new();
    tower_context::response::vary(&mut headers, "Accept-Encoding");
    tower_context::response::vary(&mut headers, "accept-encoding, Origin");
    assert_eq!(headers["vary"], "Accept-Encoding, Origin");
    tower_context::response::vary(&mut headers, "*");
    assert_eq!(headers["vary"], "*");
}
