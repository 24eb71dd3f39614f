//! Errors: every source takes one rendering path; negotiation, kept headers, the
//! app-level hook, error events.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_context::body::Body;
use tower_context::{
    BoxError, Context, ContextLayer, ErrorAction, ErrorFormat, HttpError, ensure, ensure_eq, http_error,
    throw,
};

use crate::common::{body_string, ctx_of};

fn req(uri: &str, accept: Option<&str>) -> Request<axum::body::Body> {
    let mut builder = Request::get(uri);
    if let Some(accept) = accept {
        builder = builder.header(header::ACCEPT, accept);
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

async fn user(ctx: Context) -> Result<String, HttpError> {
    let query = ctx.uri().query().unwrap_or_default().to_owned();
    ensure!(!query.is_empty(), 401, "User not found. Please login!");
    ensure_eq!(query.len() < 10, true, 414, "name too long");
    if query == "root" {
        throw!(403, "access_denied", { "user": query });
    }
    if query == "boom" {
        throw!("something exploded");
    }
    Ok(format!("hello {query}"))
}

fn app(layer: ContextLayer) -> Router {
    Router::new().route("/user", get(user)).layer(layer)
}

#[tokio::test]
async fn axum_handler_errors_are_negotiated() {
    let res = app(ContextLayer::new()).oneshot(req("/user", None)).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        body_string(res).await,
        r#"{"status":401,"error":"Unauthorized","message":"User not found. Please login!"}"#
    );

    let res =
        app(ContextLayer::new()).oneshot(req("/user?root", Some("application/problem+json"))).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(
        body_string(res).await,
        r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"access_denied","user":"root"}"#
    );

    let res = app(ContextLayer::new()).oneshot(req("/user?abcdefghijkl", Some("text/html"))).await.unwrap();
    assert_eq!(res.status(), 414);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body_string(res).await, "name too long");

    // A 500 from a bare message: the message is never shown.
    let res = app(ContextLayer::new()).oneshot(req("/user?boom", Some("text/plain"))).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(body_string(res).await, "Internal Server Error");

    let res = app(ContextLayer::new()).oneshot(req("/user?ann", None)).await.unwrap();
    assert_eq!(body_string(res).await, "hello ann");
}

#[tokio::test]
async fn fixed_formats_ignore_accept() {
    let layer = ContextLayer::new().error_format(ErrorFormat::Text);
    let res = app(layer).oneshot(req("/user", Some("application/json"))).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body_string(res).await, "User not found. Please login!");

    let layer = ContextLayer::new().error_format(ErrorFormat::ProblemJson);
    let res = app(layer).oneshot(req("/user", Some("text/plain"))).await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn head_requests_get_no_error_body() {
    let request =
        Request::builder().method(Method::HEAD).uri("/user").body(axum::body::Body::empty()).unwrap();
    let res = app(ContextLayer::new()).oneshot(request).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(body_string(res).await, "");
}

#[tokio::test]
async fn errors_render_without_the_layer_too() {
    async fn plain() -> Result<&'static str, HttpError> {
        throw!(401, "User not found. Please login!")
    }
    let app = Router::new().route("/plain", get(plain)).route("/user", get(user));
    let res = app.clone().oneshot(req("/plain", None)).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        body_string(res).await,
        r#"{"status":401,"error":"Unauthorized","message":"User not found. Please login!"}"#
    );

    // The Context extractor without the layer: a 500 that does not expose why.
    let res = app.oneshot(req("/user", None)).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(
        body_string(res).await,
        r#"{"status":500,"error":"Internal Server Error","message":"Internal Server Error"}"#
    );
}

#[tokio::test]
async fn plain_tower_services_throw_boxed_errors() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        if req.uri().path() == "/gone" {
            throw!(410, "moved away");
        }
        Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
    }));
    let res = svc.oneshot(Request::get("/gone").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 410);
    assert_eq!(body_string(res).await, r#"{"status":410,"error":"Gone","message":"moved away"}"#);
}

#[tokio::test]
async fn throw_works_in_hooks_and_emit_error_stops_the_request() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.after(|res| async move {
            if res.status() == 200 {
                throw!(451, "hook refused");
            }
            Ok(res)
        })
        .unwrap();
        async { Ok::<_, Infallible>(Response::new(Body::empty())) }
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 451);

    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        ctx_of(&req).emit_error(http_error!(400, "bad input", { "field": "q" }));
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        body_string(res).await,
        r#"{"status":400,"error":"Bad Request","message":"bad input","field":"q"}"#
    );
}

#[tokio::test]
async fn only_whitelisted_headers_survive_and_the_errors_own_headers_apply() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        let ctx = ctx_of(&req);
        ctx.set_header(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        ctx.set_header(HeaderName::from_static("x-ratelimit-remaining"), HeaderValue::from_static("0"));
        ctx.vary(header::ACCEPT);
        Err::<Response<Body>, _>(
            HttpError::new(429).header(header::RETRY_AFTER, "30").header("x-extra", "1").message("slow down"),
        )
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    let h = res.headers();
    assert_eq!(res.status(), 429);
    assert!(h.get(header::CACHE_CONTROL).is_none());
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["vary"], "accept");
    assert_eq!(h["retry-after"], "30");
    assert_eq!(h["x-extra"], "1");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_failing_after_hook_keeps_the_whitelisted_headers_set_before_it() {
    // As Toa keeps them whatever threw: the handler's own, the deferred edits', and
    // those an earlier hook set.
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        let ctx = ctx_of(&req);
        ctx.set_header(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        ctx.vary(header::ACCEPT);
        // Added first, so it runs last, on what the other hook returned.
        ctx.after(|_| async { Err(HttpError::new(409).message("taken")) }).unwrap();
        ctx.after(|mut res| async move {
            res.headers_mut().insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            Ok(res)
        })
        .unwrap();
        let mut res = Response::new(Body::from("made"));
        res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        res.headers_mut().insert("x-secret", HeaderValue::from_static("1"));
        Ok::<_, HttpError>(res)
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    let h = res.headers().clone();
    assert_eq!(res.status(), 409);
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["vary"], "accept");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.get(header::CACHE_CONTROL).is_none() && h.get("x-secret").is_none(), "{h:?}");
    assert_eq!(body_string(res).await, r#"{"status":409,"error":"Conflict","message":"taken"}"#);
}

#[tokio::test]
async fn an_after_hook_error_swallowed_sends_the_deferred_edits() {
    let layer = ContextLayer::new().handle_error(|_, _| tower_context::ErrorAction::Swallow);
    let svc = layer.layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        let ctx = ctx_of(&req);
        ctx.set_status(StatusCode::ACCEPTED);
        ctx.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        ctx.after(|_| async { Err(HttpError::new(500)) }).unwrap();
        Ok::<_, HttpError>(Response::new(Body::from("made")))
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(body_string(res).await, "", "the hook took the body");
}

#[tokio::test]
async fn cors_headers_from_an_inner_layer_survive_an_axum_error() {
    use tower_http::cors::{Any, CorsLayer};
    let app = Router::new()
        .route("/user", get(user))
        .layer(CorsLayer::new().allow_origin(Any))
        .layer(ContextLayer::new());
    let request = Request::get("/user")
        .header(header::ORIGIN, "https://example.com")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.oneshot(request).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn message_bytes_never_reach_headers() {
    let svc = ContextLayer::new().layer(service_fn(|_: Request<Empty<Bytes>>| async {
        Err::<Response<Body>, _>(HttpError::new(400).message("line\r\nset-cookie: evil=1"))
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        body_string(res).await,
        r#"{"status":400,"error":"Bad Request","message":"line\r\nset-cookie: evil=1"}"#
    );
}

fn failing(
    status: u16,
) -> impl tower::Service<
    Request<Empty<Bytes>>,
    Response = Response<Body>,
    Error = HttpError,
    Future = impl Future<Output = Result<Response<Body>, HttpError>> + Send,
> + Clone {
    service_fn(move |req: Request<Empty<Bytes>>| async move {
        ctx_of(&req).set_status(StatusCode::ACCEPTED);
        Err::<Response<Body>, _>(HttpError::new(status).message("original"))
    })
}

#[tokio::test]
async fn the_app_error_hook_can_render_replace_respond_or_swallow() {
    let get = || Request::get("/legacy").body(Empty::new()).unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let layer = ContextLayer::new().handle_error(move |err, ctx| {
        s.lock().unwrap().push(format!("{} {}", ctx.uri().path(), err.status()));
        ErrorAction::Render(err)
    });
    let res = layer.layer(failing(404)).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(*seen.lock().unwrap(), ["/legacy 404 Not Found"]);

    let layer =
        ContextLayer::new().handle_error(|err, _| ErrorAction::Render(err.message("replaced").expose(true)));
    let res = layer.layer(failing(404)).oneshot(get()).await.unwrap();
    assert_eq!(body_string(res).await, r#"{"status":404,"error":"Not Found","message":"replaced"}"#);

    let layer = ContextLayer::new().handle_error(|_, _| {
        ErrorAction::Respond(Response::builder().status(418).body(Body::from("custom")).unwrap())
    });
    let res = layer.layer(failing(404)).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 418);
    assert_eq!(body_string(res).await, "custom");

    // Swallowed: the response as it stood, with the deferred edits applied.
    let layer = ContextLayer::new().handle_error(|_, _| ErrorAction::Swallow);
    let res = layer.layer(failing(404)).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(body_string(res).await, "");
}

/// An error emitted while the handler runs, whose client goes away before the layer
/// could take it: nothing renders it, so it is reported as any late error is, to
/// the Error listeners and to the app's policy, once each; and Close fires.
#[tokio::test]
async fn an_error_pending_when_the_client_leaves_is_reported_to_listeners_and_policy() {
    let told = Arc::new(Mutex::new(Vec::new()));
    let t = told.clone();
    let layer = ContextLayer::new().handle_error(move |err, _| {
        t.lock().unwrap().push(format!("policy {}", err.status().as_u16()));
        ErrorAction::Render(err)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let mut svc = layer.layer(service_fn(move |req: Request<Empty<Bytes>>| {
        tx.send(ctx_of(&req)).unwrap();
        std::future::pending::<Result<Response<Body>, Infallible>>()
    }));
    let mut future = svc.ready().await.unwrap().call(Request::get("/").body(Empty::new()).unwrap());
    // Polled once: the handler waits.
    tokio::select! {
        biased;
        _ = &mut future => panic!("the handler never answers"),
        _ = std::future::ready(()) => {}
    }
    let ctx = rx.recv().unwrap();
    let t = told.clone();
    ctx.on_error(move |err| t.lock().unwrap().push(format!("listener {}", err.status().as_u16())));
    let t = told.clone();
    ctx.on_close(move |_| t.lock().unwrap().push("close".to_owned()));
    ctx.emit_error(HttpError::new(503));
    drop(future);
    assert_eq!(*told.lock().unwrap(), ["listener 503", "policy 503", "close"]);
    assert!(ctx.is_closed());
}

#[tokio::test]
async fn a_custom_renderer_writes_the_body_and_the_layer_keeps_its_rules() {
    let layer = ContextLayer::new().render_error(|err, ctx| {
        let body = format!("<error code={} request={}>", err.status().as_u16(), !ctx.id().is_empty());
        Response::builder().status(err.status()).body(Body::from(body)).unwrap()
    });
    let res = layer
        .layer(service_fn(|_: Request<Empty<Bytes>>| async {
            Err::<Response<Body>, _>(HttpError::new(402).header("x-pay", "now"))
        }))
        .oneshot(Request::get("/").body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    assert_eq!(res.headers()["x-pay"], "now");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(body_string(res).await, "<error code=402 request=true>");
}

#[tokio::test]
async fn error_listeners_see_each_error_once_even_after_the_head_left() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let (s, h) = (seen.clone(), hooked.clone());
    let layer = ContextLayer::new().handle_error(move |err, _| {
        h.lock().unwrap().push(err.status().as_u16());
        ErrorAction::Render(err)
    });
    let svc = layer.layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let s1 = s.clone();
        ctx.on_error(move |err| s1.lock().unwrap().push(format!("error {}", err.status().as_u16())));
        let s2 = s.clone();
        ctx.on_close(move |_| s2.lock().unwrap().push("close".into()));
        async {
            let frames = futures_util::stream::iter(vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"first"))),
                Err::<http_body::Frame<Bytes>, BoxError>("upstream broke".into()),
            ]);
            Ok::<_, Infallible>(Response::new(StreamBody::new(frames)))
        }
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200, "the head went out before the body failed");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    assert!(body.frame().await.unwrap().is_err());
    assert_eq!(*seen.lock().unwrap(), ["error 500", "close"]);
    assert_eq!(*hooked.lock().unwrap(), [500], "the app hook is told too");
}

#[tokio::test]
async fn a_panicking_error_hook_does_not_take_a_failing_body_down() {
    let layer = ContextLayer::new().handle_error(|err, _| {
        if err.status() == 500 {
            panic!("the hook itself is broken");
        }
        ErrorAction::Render(err)
    });
    let svc = layer.layer(service_fn(|_: Request<Empty<Bytes>>| async {
        let frames =
            futures_util::stream::iter(vec![Err::<http_body::Frame<Bytes>, BoxError>("broken".into())]);
        Ok::<_, Infallible>(Response::new(StreamBody::new(frames)))
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    let mut body = res.into_body();
    // The body's own error comes through; the hook's panic stayed inside the crate.
    assert!(body.frame().await.unwrap().is_err());
}

#[tokio::test]
async fn errors_carried_by_an_ended_or_hooked_response_are_rendered_too() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        let ctx = ctx_of(&req);
        if req.uri().path() == "/ended" {
            let _ = ctx.end(HttpError::new(403).message("from end").into_http_response());
        } else {
            ctx.after(|_| async { Ok(HttpError::new(409).message("from hook").into_http_response()) })
                .unwrap();
        }
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    for (path, status, message) in [("/ended", 403, "from end"), ("/hooked", 409, "from hook")] {
        let request = Request::get(path).header(header::ACCEPT, "text/plain").body(Empty::new()).unwrap();
        let res = svc.clone().oneshot(request).await.unwrap();
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8", "negotiated");
        assert_eq!(body_string(res).await, message);
    }
}

#[tokio::test]
async fn an_error_ended_after_the_hooks_but_before_the_head_left_is_rendered_too() {
    // In first-frame mode the layer polls the body before the head leaves: a body
    // that calls `end` there lands after the hooks are done. Its response is checked
    // as any other: the error it carries is rendered, and the listeners hear of it.
    let heard = Arc::new(Mutex::new(Vec::new()));
    let seen = heard.clone();
    let svc = ContextLayer::new().first_frame(true).layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let seen = seen.clone();
        async move {
            let ctx = ctx_of(&req);
            ctx.on_error(move |err| seen.lock().unwrap().push(err.status().as_u16()));
            let ending = ctx.clone();
            let frames = futures_util::stream::poll_fn(move |_| {
                let _ = ending.end(HttpError::new(403).message("from the body").into_http_response());
                std::task::Poll::Ready(Some(Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(
                    b"x",
                )))))
            });
            Ok::<_, Infallible>(Response::new(Body::new(StreamBody::new(frames))))
        }
    }));
    let request = Request::get("/").header(header::ACCEPT, "text/plain").body(Empty::new()).unwrap();
    let res = svc.oneshot(request).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8", "negotiated");
    assert_eq!(body_string(res).await, "from the body");
    assert_eq!(*heard.lock().unwrap(), [403]);
}

#[tokio::test]
async fn throw_with_a_client_status_and_an_error_shows_the_errors_text() {
    // Toa's `ctx.throw(422, new Error('test'))` answers `test`.
    async fn handler() -> Result<&'static str, HttpError> {
        let parsed: Result<u8, std::num::ParseIntError> = "x".parse();
        if let Err(err) = parsed {
            throw!(422, err);
        }
        Ok("unreachable")
    }
    let res = Router::new().route("/", get(handler)).layer(ContextLayer::new()).oneshot(req("/", None)).await;
    let res = res.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        body_string(res).await,
        r#"{"status":422,"error":"Unprocessable Entity","message":"invalid digit found in string"}"#
    );
    // A 5xx keeps the text hidden, as for any error.
    async fn hidden() -> Result<&'static str, HttpError> {
        throw!(503, std::io::Error::other("db at 10.0.0.7 is down"));
    }
    let res = Router::new().route("/", get(hidden)).layer(ContextLayer::new()).oneshot(req("/", None)).await;
    assert_eq!(
        body_string(res.unwrap()).await,
        r#"{"status":503,"error":"Service Unavailable","message":"Service Unavailable"}"#
    );
}

#[tokio::test]
async fn errors_raised_by_the_error_policy_reach_the_listeners() {
    for (policy, want) in [
        ("same", vec!["404 original"]),
        ("modified", vec!["404 original", "404 gone"]),
        ("replaced", vec!["404 original", "410 Gone"]),
        ("panics", vec!["404 original", "500 Internal Server Error"]),
    ] {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        let layer = ContextLayer::new().handle_error(move |err, _| match policy {
            "same" => ErrorAction::Render(err),
            "modified" => ErrorAction::Render(err.message("gone")),
            "replaced" => ErrorAction::Render(HttpError::new(410)),
            _ => panic!("the policy itself fails"),
        });
        let svc = layer.layer(service_fn(move |req: Request<Empty<Bytes>>| {
            let s = s.clone();
            ctx_of(&req)
                .on_error(move |err| s.lock().unwrap().push(format!("{} {}", err.status().as_u16(), err)));
            async { Err::<Response<Body>, _>(HttpError::new(404).message("original")) }
        }));
        let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
        let status = res.status().as_u16();
        assert_eq!(status, want.last().unwrap()[..3].parse::<u16>().unwrap(), "{policy}");
        assert_eq!(*seen.lock().unwrap(), want, "{policy}");
    }
}

#[tokio::test]
async fn a_handled_error_that_responds_keeps_the_headers_set_before_it() {
    let make = |action: fn() -> ErrorAction| {
        ContextLayer::new().handle_error(move |_, _| action()).layer(service_fn(
            |req: Request<Empty<Bytes>>| {
                let ctx = ctx_of(&req);
                ctx.set_header(
                    HeaderName::from_static("access-control-allow-origin"),
                    HeaderValue::from_static("https://app.example"),
                );
                ctx.set_header(HeaderName::from_static("x-request-cost"), HeaderValue::from_static("3"));
                async { Err::<Response<Body>, _>(HttpError::new(404)) }
            },
        ))
    };
    let get = || Request::get("/").body(Empty::new()).unwrap();
    let res = make(|| {
        ErrorAction::Respond(
            Response::builder().status(418).header("x-request-cost", "9").body(Body::from("teapot")).unwrap(),
        )
    })
    .oneshot(get())
    .await
    .unwrap();
    assert_eq!(res.status(), 418);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(res.headers()["x-request-cost"], "9", "the response's own header wins");
    assert_eq!(body_string(res).await, "teapot");

    let res = make(|| ErrorAction::Swallow).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(res.headers()["x-request-cost"], "3");
}

#[tokio::test]
async fn a_redirect_keeps_its_status_over_a_preset_that_is_not_a_redirect() {
    async fn handler(ctx: Context) -> Result<Response<Body>, HttpError> {
        let preset = ctx.uri().query().unwrap_or("200").parse().unwrap_or(200);
        ctx.set_status(StatusCode::from_u16(preset).unwrap());
        Ok(tower_context::response::redirect(&ctx, "/elsewhere")?)
    }
    let app = Router::new().route("/", get(handler)).layer(ContextLayer::new());
    for (preset, want) in [(304, 302), (200, 302), (404, 302), (301, 301), (303, 303), (307, 307), (308, 308)]
    {
        let res = app.clone().oneshot(req(&format!("/?{preset}"), None)).await.unwrap();
        assert_eq!(res.status(), want, "preset {preset}");
        assert_eq!(res.headers()["location"], "/elsewhere");
    }
}

#[tokio::test]
async fn statuses_http_does_not_have_are_refused_with_a_500() {
    async fn returned() -> Response<Body> {
        let mut res = Response::new(Body::from("odd"));
        *res.status_mut() = StatusCode::from_u16(999).unwrap();
        res
    }
    async fn preset(ctx: Context) -> &'static str {
        ctx.set_status(StatusCode::from_u16(600).unwrap());
        "odd"
    }
    async fn hooked(ctx: Context) -> &'static str {
        ctx.after(|mut res| async move {
            *res.status_mut() = StatusCode::from_u16(700).unwrap();
            Ok(res)
        })
        .unwrap();
        "odd"
    }
    let app = Router::new()
        .route("/returned", get(returned))
        .route("/preset", get(preset))
        .route("/hooked", get(hooked))
        .layer(ContextLayer::new());
    for path in ["/returned", "/preset", "/hooked"] {
        let res = app.clone().oneshot(req(path, None)).await.unwrap();
        assert_eq!(res.status(), 500, "{path}");
        assert_eq!(
            body_string(res).await,
            r#"{"status":500,"error":"Internal Server Error","message":"Internal Server Error"}"#,
            "{path}"
        );
    }
}
