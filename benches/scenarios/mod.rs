//! The scenarios both benches measure, defined once.
//!
//! Every service answers a GET with a small full body. `each` hands every scenario,
//! with its name, to a [`Visit`]or: the criterion bench times them, the allocation
//! bench counts their heap allocations.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_context::{Context, ContextLayer, HttpError, Keys, SignedFormat};

mod floor;
mod hook_floor;

pub type Req = Request<AxumBody>;

/// The request every scenario gets. The URI and header values are static, like the
/// ones hyper parses (slices of one shared read buffer), whose clones cost a
/// reference count; ones built from a `&str` would allocate on their first clone.
pub fn request() -> Req {
    let mut request = Request::get(http::Uri::from_static("/bench")).body(AxumBody::empty()).unwrap();
    let headers = request.headers_mut();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers.insert("cookie", HeaderValue::from_static("session=abc123; theme=dark"));
    request
}

async fn bare(_: Req) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// What the locked-instruction floor row increments.
static LOCKED: AtomicU32 = AtomicU32::new(0);

/// The floor row's handle.
#[derive(Clone)]
struct Handle(#[allow(dead_code)] std::sync::Arc<AtomicU32>);

fn ctx(req: &Req) -> Context {
    req.extensions().get::<Context>().cloned().unwrap()
}

/// The hook floor's row (the interleaved bench sets it beside the one-after-hook
/// target).
pub const HOOK_FLOOR: &str = "hook floor: the lifecycle floor, one after-hook its handle added";

/// What every scenario's service is; named once for the benches' visitors.
pub trait Scenario<B>:
    Service<Req, Response = Response<B>, Error: std::fmt::Debug> + Clone + 'static
{
}

impl<S, B> Scenario<B> for S where
    S: Service<Req, Response = Response<B>, Error: std::fmt::Debug> + Clone + 'static
{
}

/// What every scenario's response body is.
pub trait ScenarioBody: http_body::Body<Data = Bytes, Error: std::fmt::Debug> {}

impl<B> ScenarioBody for B where B: http_body::Body<Data = Bytes, Error: std::fmt::Debug> {}

/// One request through `svc`, body collected (so the lifecycle body's Finish is part
/// of the cost).
pub async fn drive<S: Scenario<B>, B: ScenarioBody>(svc: &S) {
    let response = svc.clone().oneshot(request()).await.unwrap();
    black_box(response.into_body().collect().await.unwrap());
}

/// Receives each scenario.
pub trait Visit {
    fn visit<S: Scenario<B>, B: ScenarioBody>(&mut self, name: &str, svc: S);
}

/// Every scenario, baselines first.
pub fn each(v: &mut impl Visit) {
    let svc = service_fn(bare);
    v.visit("bare service_fn", svc);

    // Untouched: the layer is there, the handler asks nothing of it.
    let svc = ContextLayer::new().layer(service_fn(bare));
    v.visit("ContextLayer untouched", svc);

    let svc = tower_cookies::CookieManagerLayer::new().layer(service_fn(bare));
    v.visit("tower-cookies CookieManagerLayer untouched", svc);

    let svc = tower_http::catch_panic::CatchPanicLayer::new().layer(service_fn(bare));
    v.visit("tower-http CatchPanicLayer", svc);

    // The floor under both untouched rows: the least any layer can do that hands the
    // handler a shared per-request handle (one `Arc`, put into the extensions), and
    // nothing else. Not a crate anyone uses: it shows how much of a row is this.
    let svc = tower::util::MapRequestLayer::new(|mut req: Req| {
        req.extensions_mut().insert(Handle(std::sync::Arc::new(AtomicU32::new(0))));
        req
    })
    .layer(service_fn(bare));
    v.visit("floor: Arc handle in the extensions, nothing else", svc);

    // The same floor, with the least of a request head in the handle: what a context
    // needs to answer for the request after it has moved on (method, URI, version,
    // and here only the two headers the request has).
    let svc = tower::util::MapRequestLayer::new(floor::capture::<AxumBody>).layer(service_fn(bare));
    v.visit("floor with the request head captured", svc);

    // The head floor again, plus six locked read-modify-writes: as many as a context
    // made beyond it on the untouched path when this row was added (three now, and
    // more on the hook and error paths; `benches/callgrind.sh --locked` counts them).
    // Not a layer anyone writes: it shows what those instructions cost in the same run.
    let svc = tower::util::MapRequestLayer::new(|req: Req| {
        let req = floor::capture(req);
        for _ in 0..6 {
            black_box(&LOCKED).fetch_add(1, Ordering::AcqRel);
        }
        req
    })
    .layer(service_fn(bare));
    v.visit("floor with the request head captured, and six locked instructions", svc);

    // The lifecycle floor: the head floor, plus the least a layer must do to tell a
    // handle the handler holds how the request ended (a second handle, the response
    // future and the body wrapped; the body watched only if a handle is still held).
    let svc = floor::LifecycleLayer.layer(service_fn(bare));
    v.visit("lifecycle floor: the head floor, its handle told the request's end", svc);

    // One response change: an after-hook adds a header...
    let svc = ContextLayer::new().layer(service_fn(|req: Req| {
        ctx(&req)
            .after(|mut res| async move {
                res.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
                Ok(res)
            })
            .unwrap();
        bare(req)
    }));
    v.visit("ContextLayer one after-hook", svc);

    // ...the same change with axum's middleware.
    let svc = axum::middleware::from_fn(|req: Req, next: axum::middleware::Next| async move {
        let mut res = next.run(req).await;
        res.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
        res
    })
    .layer(service_fn(bare));
    v.visit("axum from_fn adding a header", svc);

    // The floor beside that target: the lifecycle floor, plus the least a layer must
    // do to let the handler's handle add one after-hook (see `hook_floor.rs`).
    let svc = hook_floor::HookFloorLayer.layer(service_fn(|req: Req| {
        let hooked = req.extensions().get::<std::sync::Arc<hook_floor::Hooked>>().cloned().unwrap();
        hooked.after(|mut res| async move {
            res.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
            res
        });
        bare(req)
    }));
    v.visit(HOOK_FLOOR, svc);

    let svc = axum::middleware::map_response(|mut res: Response<Full<Bytes>>| async move {
        res.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
        res
    })
    .layer(service_fn(bare));
    v.visit("axum map_response adding a header", svc);

    let svc = ContextLayer::new().layer(service_fn(|req: Req| async move {
        let _ = ctx(&req).end(Response::new(Full::new(Bytes::from_static(b"ended"))));
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    v.visit("ContextLayer end", svc);

    let svc = ContextLayer::new().layer(service_fn(|_: Req| async {
        Err::<Response<Full<Bytes>>, _>(HttpError::new(400).message("name required"))
    }));
    v.visit("ContextLayer thrown error as JSON", svc);

    // The same answer from an axum handler that builds it itself: the status, the
    // JSON body our renderer writes, its content type and `nosniff`.
    let svc = service_fn(|_: Req| async {
        use axum::response::IntoResponse;
        let body = serde_json::json!({"status": 400, "error": "Bad Request", "message": "name required"});
        let headers = [
            (http::header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ];
        Ok::<_, Infallible>((http::StatusCode::BAD_REQUEST, headers, body.to_string()).into_response())
    });
    v.visit("axum handler answering the same error JSON itself", svc);

    cookies(v);
    peer_stack(v);
    sessions(v);
}

/// What a user would assemble from peers for what one `ContextLayer` does: cookies
/// (tower-cookies), panics caught (tower-http), a header added after the handler
/// (axum `from_fn`) and errors rendered as JSON (axum `map_response`), each request
/// reading a cookie and setting a signed one; beside `ContextLayer` doing the same
/// work (its jar, its panic catching, an after-hook, its error rendering).
fn peer_stack(v: &mut impl Visit) {
    let secret = [7_u8; 64];

    let layer = ContextLayer::new().keys(Keys::new([secret.to_vec()]));
    let svc = layer.layer(service_fn(|req: Req| {
        let ctx = ctx(&req);
        let jar = ctx.cookies();
        black_box(jar.get("session"));
        jar.set_signed(("user", "ann")).unwrap();
        ctx.after(|mut res| async move {
            res.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
            Ok(res)
        })
        .unwrap();
        bare(req)
    }));
    v.visit("ContextLayer doing the peer stack's work", svc);

    let key = tower_cookies::Key::from(&secret);
    let handler = service_fn(move |req: Req| {
        let cookies = req.extensions().get::<tower_cookies::Cookies>().cloned().unwrap();
        black_box(cookies.get("session"));
        cookies.signed(&key).add(tower_cookies::Cookie::new("user", "ann"));
        bare(req)
    });
    let svc = tower::ServiceBuilder::new()
        .layer(axum::middleware::map_response(|res: axum::response::Response| async move {
            if res.status().is_client_error() || res.status().is_server_error() {
                use axum::response::IntoResponse;
                let status = res.status();
                let body = serde_json::json!({"status": status.as_u16(), "error": status.canonical_reason()});
                return (status, axum::Json(body)).into_response();
            }
            res
        }))
        .layer(axum::middleware::from_fn(|req: Req, next: axum::middleware::Next| async move {
            let mut res = next.run(req).await;
            res.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
            res
        }))
        .layer(tower_cookies::CookieManagerLayer::new())
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .service(handler);
    v.visit("peer stack: tower-cookies, CatchPanicLayer, from_fn header, map_response JSON errors", svc);
}

/// The `Cookie` header `svc` sets on a first request, for the names given (a
/// session's cookies), to send on every later one.
async fn first_cookies<S: Scenario<B>, B: ScenarioBody>(svc: &S, names: &[&str]) -> HeaderValue {
    let mut first = request();
    first.headers_mut().remove(http::header::COOKIE);
    let response = svc.clone().oneshot(first).await.unwrap();
    let pairs: Vec<String> = response
        .headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok()?.split(';').next().map(str::to_owned))
        .filter(|pair| names.iter().any(|name| pair.split('=').next() == Some(*name)))
        .collect();
    assert_eq!(pairs.len(), names.len(), "the first response sets {names:?}");
    HeaderValue::from_str(&pairs.join("; ")).unwrap()
}

/// `svc`, every request carrying `cookie` (the same wrapper for both rows).
fn with_cookie<S: Scenario<B>, B: ScenarioBody>(cookie: HeaderValue, svc: S) -> impl Scenario<B> {
    tower::util::MapRequestLayer::new(move |mut req: Req| {
        req.headers_mut().insert(http::header::COOKIE, cookie.clone());
        req
    })
    .layer(svc)
}

/// One session read and one write per request (a visit counter), memory stores,
/// signed id cookies: ours, and tower-sessions' `SessionManagerLayer`.
fn sessions(v: &mut impl Visit) {
    let secret = [7_u8; 64];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let ours = ContextLayer::new()
        .keys(Keys::new([secret.to_vec()]))
        .sessions(tower_context::session::Sessions::memory())
        .layer(service_fn(|req: Req| async move {
            let session = ctx(&req).session();
            let visits: u64 = session.get("visits").await.unwrap().unwrap_or(0);
            session.insert("visits", visits + 1).await.unwrap();
            bare(req).await
        }));
    let cookie = rt.block_on(first_cookies(&ours, &["sessionID", "sessionID.sig"]));
    v.visit("ContextLayer session read + write (MemoryStore)", with_cookie(cookie, ours));

    let key = tower_sessions::cookie::Key::from(&secret);
    let theirs = tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
        .with_signed(key)
        .layer(service_fn(|req: Req| async move {
            let session = req.extensions().get::<tower_sessions::Session>().cloned().unwrap();
            let visits: u64 = session.get("visits").await.unwrap().unwrap_or(0);
            session.insert("visits", visits + 1).await.unwrap();
            bare(req).await
        }));
    let cookie = rt.block_on(first_cookies(&theirs, &["id"]));
    v.visit("tower-sessions SessionManagerLayer read + write (MemoryStore)", with_cookie(cookie, theirs));
}

/// One cookie read plus one signed cookie set: ours in both formats, and the two
/// crates it replaces (which use the cookie crate's format).
fn cookies(v: &mut impl Visit) {
    let secret = [7_u8; 64];

    let handler = |req: Req| {
        let ctx = ctx(&req);
        let jar = ctx.cookies();
        black_box(jar.get("session"));
        jar.set_signed(("user", "ann")).unwrap();
        bare(req)
    };
    let layer = ContextLayer::new().keys(Keys::new([secret.to_vec()])).signed_format(SignedFormat::Cookie);
    v.visit("ContextLayer cookie read + signed set (cookie-crate format)", layer.layer(service_fn(handler)));
    let layer = ContextLayer::new().keys(Keys::new([secret.to_vec()]));
    v.visit("ContextLayer cookie read + signed set (Keygrip, default)", layer.layer(service_fn(handler)));

    let key = tower_cookies::Key::from(&secret);
    let svc = tower_cookies::CookieManagerLayer::new().layer(service_fn(move |req: Req| {
        let cookies = req.extensions().get::<tower_cookies::Cookies>().cloned().unwrap();
        black_box(cookies.get("session"));
        cookies.signed(&key).add(tower_cookies::Cookie::new("user", "ann"));
        bare(req)
    }));
    v.visit("tower-cookies cookie read + signed set", svc);

    let key = axum_extra::extract::cookie::Key::from(&secret);
    let svc = service_fn(move |req: Req| {
        let jar = axum_extra::extract::cookie::SignedCookieJar::from_headers(req.headers(), key.clone());
        black_box(jar.get("session"));
        let jar = jar.add(axum_extra::extract::cookie::Cookie::new("user", "ann"));
        async move {
            use axum::response::IntoResponse;
            Ok::<_, Infallible>((jar, "hello").into_response())
        }
    });
    v.visit("axum-extra SignedCookieJar read + signed set", svc);
}
