//! The core: Context in the request, after-hooks, end, deferred edits, state, spawn,
//! panics, and the lifecycle events as seen through `oneshot`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_context::body::Body;
use tower_context::{Context, ContextLayer, HooksStarted, HttpError, Outcome};

use crate::common::{body_string, ctx_of};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::default()
}

fn push(log: &Log, what: impl Into<String>) {
    log.lock().unwrap().push(what.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Records End/Finish/Close/Error of a context into `log`.
fn record(ctx: &Context, log: &Log) {
    let l = log.clone();
    ctx.on_end(move |_| push(&l, "end"));
    let l = log.clone();
    ctx.on_finish(move |_| push(&l, "finish"));
    let l = log.clone();
    ctx.on_close(move |_| push(&l, "close"));
    let l = log.clone();
    ctx.on_error(move |err| push(&l, format!("error {}", err.status().as_u16())));
}

/// An after-hook that writes `what` into `log` and passes the response on.
fn recording_hook(
    log: &Log,
    what: &'static str,
) -> impl FnOnce(Response<Body>) -> std::future::Ready<Result<Response<Body>, HttpError>> + Send + 'static {
    let log = log.clone();
    move |res| {
        push(&log, what);
        std::future::ready(Ok(res))
    }
}

fn get_req(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri).body(Empty::new()).unwrap()
}

#[test]
fn the_service_is_clone_send_sync_and_infallible() {
    fn assert_service<S>(_: &S)
    where
        S: Service<Request<Empty<Bytes>>, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
    }
    let svc = ContextLayer::new().layer(service_fn(|_: Request<Empty<Bytes>>| async {
        Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::new())))
    }));
    assert_service(&svc);
}

#[tokio::test]
async fn a_plain_response_passes_through_with_its_body() {
    let log = log();
    let l = log.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        record(&ctx_of(&req), &l);
        async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"hello")));
            res.headers_mut().insert("x-inner", HeaderValue::from_static("1"));
            Ok::<_, Infallible>(res)
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-inner"], "1");
    assert_eq!(entries(&log), ["end"]);
    assert_eq!(body_string(res).await, "hello");
    assert_eq!(entries(&log), ["end", "finish"]);
}

#[tokio::test]
async fn axum_router_layer_extractor_and_nested_layers_share_one_context() {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::set_header::SetResponseHeaderLayer;

    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    let router = Router::new()
        .route(
            "/",
            get(move |ctx: Context| {
                let h = h.clone();
                async move {
                    ctx.after(move |res| async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, HttpError>(res)
                    })
                    .unwrap();
                    ctx.id().to_owned()
                }
            }),
        )
        // A tower-http layer inside, then a second ContextLayer that reuses the
        // outer one's Context.
        .layer(SetResponseHeaderLayer::overriding(header::SERVER, HeaderValue::from_static("inner")))
        .layer(ContextLayer::new());
    let app = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(ContextLayer::new())
        .service(router);
    let res = app.oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["server"], "inner");
    let propagated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let id = body_string(res).await;
    assert_eq!(hooks.load(Ordering::SeqCst), 1, "the hook runs once, by the outer layer");
    assert_eq!(id, propagated, "the Context adopted tower-http's request id");
}

#[tokio::test]
async fn ids_are_unique_and_a_tower_http_request_id_is_adopted() {
    use tower_http::request_id::{MakeRequestId, RequestId, SetRequestIdLayer};

    let svc = service_fn(|req: Request<Empty<Bytes>>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(ctx_of(&req).id().to_owned()))))
    });
    let a = body_string(ContextLayer::new().layer(svc).oneshot(get_req("/")).await.unwrap()).await;
    let b = body_string(ContextLayer::new().layer(svc).oneshot(get_req("/")).await.unwrap()).await;
    assert_ne!(a, b);

    #[derive(Clone)]
    struct Fixed;
    impl MakeRequestId for Fixed {
        fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
            Some(RequestId::new(HeaderValue::from_static("req-42")))
        }
    }
    let stacked = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(Fixed))
        .layer(ContextLayer::new())
        .service(svc);
    let id = body_string(stacked.oneshot(get_req("/")).await.unwrap()).await;
    assert_eq!(id, "req-42");
}

#[tokio::test]
async fn the_head_is_captured() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        let ctx = ctx_of(&req);
        let text = format!(
            "{} {} {:?} {:?} {:?}",
            ctx.method(),
            ctx.uri(),
            ctx.version(),
            ctx.header("ACCEPT"),
            ctx.header("x-not-kept"),
        );
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
    }));
    let req = Request::post("/a?b=1")
        .header("accept", "text/plain")
        .header("x-not-kept", "1")
        .body(Empty::new())
        .unwrap();
    let text = body_string(svc.oneshot(req).await.unwrap()).await;
    assert_eq!(text, r#"POST /a?b=1 HTTP/1.1 Some("text/plain") None"#);
}

#[derive(Clone, Debug, PartialEq)]
struct User(&'static str);

#[tokio::test]
async fn state_is_shared_by_layers_handlers_and_hooks() {
    // An outer middleware inserts, the handler reads and changes, a hook reads.
    let inner = service_fn(|req: Request<Empty<Bytes>>| async move {
        let ctx = ctx_of(&req);
        let user: User = ctx.state().get().expect("set by the outer layer");
        assert_eq!(ctx.state().insert(User("bob")), Some(user));
        ctx.state().insert(7_u32);
        assert_eq!(
            ctx.state().with_mut(|n: &mut u32| {
                *n += 1;
                *n
            }),
            Some(8)
        );
        assert_eq!(ctx.state().remove::<u32>(), Some(8));
        assert!(!ctx.state().contains::<u32>());
        let c = ctx.clone();
        ctx.after(move |mut res| async move {
            let user: User = c.state().get().unwrap();
            res.headers_mut().insert("x-user", HeaderValue::from_static(user.0));
            Ok::<_, HttpError>(res)
        })
        .unwrap();
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let svc = ServiceBuilder::new()
        .layer(ContextLayer::new())
        .map_request(|req: Request<Empty<Bytes>>| {
            ctx_of(&req).state().insert(User("ann"));
            req
        })
        .service(inner);
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.headers()["x-user"], "bob");
}

#[tokio::test]
async fn hooks_run_lifo_and_can_replace_the_response() {
    let order = log();
    let o = order.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        for name in ["first", "second", "third"] {
            let o = o.clone();
            ctx.after(move |res| async move {
                push(&o, name);
                tokio::task::yield_now().await;
                let (mut parts, body) = res.into_parts();
                let before = String::from_utf8(body.collect().await?.to_bytes().to_vec()).unwrap_or_default();
                parts.status = StatusCode::ACCEPTED;
                parts.headers.append("x-hook", HeaderValue::from_static(name));
                Ok::<_, HttpError>(Response::from_parts(parts, Body::from(format!("{before}+{name}"))))
            })
            .unwrap();
        }
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"handler")))) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(entries(&order), ["third", "second", "first"]);
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let hooks: Vec<_> = res.headers().get_all("x-hook").iter().cloned().collect();
    assert_eq!(hooks, ["third", "second", "first"]);
    assert_eq!(body_string(res).await, "handler+third+second+first");
}

#[tokio::test]
async fn adding_a_hook_from_a_hook_is_refused() {
    let result = Arc::new(Mutex::new(None));
    let r = result.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let c = ctx.clone();
        let r = r.clone();
        ctx.after(move |res| async move {
            *r.lock().unwrap() = Some(c.after(|res| async { Ok::<_, HttpError>(res) }));
            Ok::<_, HttpError>(res)
        })
        .unwrap();
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(*result.lock().unwrap(), Some(Err(HooksStarted)));
}

#[tokio::test]
async fn a_failing_hook_takes_the_error_path_and_later_hooks_do_not_run() {
    let ran = log();
    let r = ran.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        record(&ctx, &r);
        let r1 = r.clone();
        ctx.after(move |res| async move {
            push(&r1, "never");
            Ok::<_, HttpError>(res)
        })
        .unwrap();
        ctx.after(|_| async { Err::<Response<Body>, _>(HttpError::new(409).message("hook says no")) })
            .unwrap();
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(body_string(res).await, r#"{"status":409,"error":"Conflict","message":"hook says no"}"#);
    assert_eq!(entries(&ran), ["error 409", "end", "finish"]);
}

#[tokio::test]
async fn hooks_do_not_run_on_the_error_path() {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let r = r.clone();
        ctx_of(&req)
            .after(move |res| async move {
                r.store(true, Ordering::SeqCst);
                Ok::<_, HttpError>(res)
            })
            .unwrap();
        async { Err::<Response<Empty<Bytes>>, _>(HttpError::new(403)) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(!ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn end_drops_the_handler_at_its_await_point_and_runs_the_hooks() {
    let after_await = Arc::new(AtomicBool::new(false));
    let a = after_await.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let a = a.clone();
        async move {
            let ctx = ctx_of(&req);
            ctx.after(|mut res| async move {
                res.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
                Ok::<_, HttpError>(res)
            })
            .unwrap();
            let c = ctx.clone();
            tokio::spawn(async move {
                let ended = c.end(
                    Response::builder().status(201).body(Full::new(Bytes::from_static(b"ended"))).unwrap(),
                );
                assert!(ended.is_first());
            });
            // Never resolves by itself: only `end` gets the request out.
            std::future::pending::<()>().await;
            a.store(true, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    }));
    let res = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(get_req("/"))).await.unwrap().unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-hooked"], "1");
    assert_eq!(body_string(res).await, "ended");
    assert!(!after_await.load(Ordering::SeqCst));
}

#[tokio::test]
async fn end_from_an_axum_handler_first_call_wins() {
    let second = Arc::new(Mutex::new(None));
    let s = second.clone();
    let app = Router::new()
        .route(
            "/",
            get(move |ctx: Context| {
                let s = s.clone();
                async move {
                    let first = ctx.end(Response::new(Body::from("one")));
                    *s.lock().unwrap() = Some(ctx.end(Response::new(Body::from("two"))).is_first());
                    assert!(first.is_first());
                    first
                }
            }),
        )
        .layer(ContextLayer::new());
    let res = app.oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap()).await.unwrap();
    assert_eq!(body_string(res).await, "one");
    assert_eq!(*second.lock().unwrap(), Some(false));
}

#[tokio::test]
async fn end_with_message_sends_toas_json_body() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        let _ = ctx_of(&req).end_with_message("process stopped");
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ignored"))))
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(body_string(res).await, r#"{"message":"process stopped"}"#);
}

#[tokio::test]
async fn end_from_an_inner_layer_skips_the_handler() {
    let handler_ran = Arc::new(AtomicBool::new(false));
    let h = handler_ran.clone();
    let handler = service_fn(move |_: Request<Empty<Bytes>>| {
        h.store(true, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Body::from("handler"))) }
    });
    let svc = ServiceBuilder::new()
        .layer(ContextLayer::new())
        .map_request(|req: Request<Empty<Bytes>>| {
            let _ = ctx_of(&req).end(Response::builder().status(401).body(Body::from("stop")).unwrap());
            req
        })
        .service(handler);
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(body_string(res).await, "stop");
}

#[tokio::test]
async fn end_inside_a_hook_skips_the_remaining_hooks() {
    let ran = log();
    let r = ran.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.after(recording_hook(&r, "skipped")).unwrap();
        let c = ctx.clone();
        let r2 = r.clone();
        ctx.after(move |res| async move {
            push(&r2, "ending");
            let _ = c.end(Response::builder().status(202).body(Body::from("from hook")).unwrap());
            Ok::<_, HttpError>(res)
        })
        .unwrap();
        async { Ok::<_, Infallible>(Response::new(Body::from("handler"))) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(body_string(res).await, "from hook");
    assert_eq!(entries(&ran), ["ending"]);
}

/// A hook whose closure ends the request before it returns its future: as a Toa hook
/// that calls `end` goes no further, the future is dropped unpolled, the ended
/// response goes out, the hooks left are skipped, and each event fires once.
#[tokio::test]
async fn end_in_a_hook_closure_drops_its_future_and_skips_the_remaining_hooks() {
    let ran = log();
    let r = ran.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        record(&ctx, &r);
        ctx.after(recording_hook(&r, "skipped")).unwrap();
        let c = ctx.clone();
        let r2 = r.clone();
        ctx.after(move |res| {
            push(&r2, "closure");
            let ended = c.end(Response::builder().status(202).body(Body::from("from closure")).unwrap());
            assert!(ended.is_first());
            let r2 = r2.clone();
            async move {
                push(&r2, "future");
                Ok::<_, HttpError>(res)
            }
        })
        .unwrap();
        async { Ok::<_, Infallible>(Response::new(Body::from("handler"))) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(body_string(res).await, "from closure");
    assert_eq!(entries(&ran), ["closure", "end", "finish"]);
}

/// A finished inner future is dropped before the hooks are taken: a hook its drop
/// adds (a hand-written future can keep a guard past its last poll) runs like one
/// added while it ran.
#[tokio::test]
async fn a_hook_added_as_the_inner_future_is_dropped_still_runs() {
    struct AddsAHookWhenDropped(Context);
    impl Drop for AddsAHookWhenDropped {
        fn drop(&mut self) {
            let added = self.0.after(|mut res| async move {
                res.headers_mut().insert("x-from-drop", HeaderValue::from_static("1"));
                Ok(res)
            });
            assert!(added.is_ok(), "the hooks had already started");
        }
    }
    struct Answer {
        response: Option<Response<Body>>,
        _guard: AddsAHookWhenDropped,
    }
    impl std::future::Future for Answer {
        type Output = Result<Response<Body>, Infallible>;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(Ok(self.response.take().unwrap_or_default()))
        }
    }
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Answer { response: Some(Response::new(Body::from("answer"))), _guard: AddsAHookWhenDropped(ctx) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.headers()["x-from-drop"], "1");
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(body_string(res).await, "answer");
}

#[tokio::test]
async fn deferred_edits_apply_before_the_hooks() {
    let seen = log();
    let s = seen.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.set_status(StatusCode::CREATED);
        ctx.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        ctx.append_header(header::LINK, HeaderValue::from_static("</a>"));
        ctx.append_header(header::LINK, HeaderValue::from_static("</b>"));
        ctx.remove_header(header::ETAG);
        ctx.vary(header::ACCEPT);
        ctx.vary(header::ORIGIN);
        let s = s.clone();
        ctx.after(move |res| async move {
            push(&s, format!("{} {:?}", res.status(), res.headers().get("cache-control")));
            Ok::<_, HttpError>(res)
        })
        .unwrap();
        async {
            let mut res = Response::new(Body::from("x"));
            res.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            res.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            Ok::<_, Infallible>(res)
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(entries(&seen), [r#"201 Created Some("no-store")"#]);
    assert_eq!(res.status(), 201);
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(res.headers()["vary"], "accept-encoding, accept, origin");
    let links: Vec<_> = res.headers().get_all(header::LINK).iter().cloned().collect();
    assert_eq!(links, ["</a>", "</b>"]);
}

#[tokio::test]
async fn a_spawned_task_error_takes_the_error_path() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        let ctx = ctx_of(&req);
        ctx.spawn(async { Err::<(), _>(HttpError::new(422).message("task failed")) });
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let res = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(get_req("/"))).await.unwrap().unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        body_string(res).await,
        r#"{"status":422,"error":"Unprocessable Entity","message":"task failed"}"#
    );
}

#[tokio::test]
async fn spawned_tasks_are_aborted_on_close() {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let finished = Arc::new(AtomicBool::new(false));
    let ctx_slot = Arc::new(Mutex::new(None));
    let (f, c) = (finished.clone(), ctx_slot.clone());
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        *c.lock().unwrap() = Some(ctx.clone());
        let f = f.clone();
        let handle = ctx.spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            f.store(true, Ordering::SeqCst);
            Ok::<(), HttpError>(())
        });
        if let Some(tx) = started_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        async move {
            std::future::pending::<()>().await;
            drop(handle);
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    }));
    let call = tokio::spawn(svc.oneshot(get_req("/")));
    started_rx.await.unwrap();
    call.abort();
    let ctx = ctx_slot.lock().unwrap().clone().unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), ctx.done()).await.unwrap(), Outcome::Closed);
    assert!(ctx.is_closed() && !ctx.is_finished() && !ctx.is_ended());
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test]
async fn events_fire_once_in_order_and_dropping_the_body_closes() {
    // Body collected: end, finish.
    let log1 = log();
    let l = log1.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        record(&ctx_of(&req), &l);
        async { Ok::<_, Infallible>(Response::new(Body::from("abc"))) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(entries(&log1), ["end"]);
    body_string(res).await;
    assert_eq!(entries(&log1), ["end", "finish"]);

    // Body dropped unread: end, close.
    let log2 = log();
    let l = log2.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        record(&ctx_of(&req), &l);
        async {
            let stream = futures_util::stream::iter(vec![Ok::<_, Infallible>(http_body::Frame::data(
                Bytes::from_static(b"a"),
            ))]);
            Ok::<_, Infallible>(Response::new(http_body_util::StreamBody::new(stream)))
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    drop(res);
    assert_eq!(entries(&log2), ["end", "close"]);
}

#[tokio::test]
async fn bodies_that_need_no_polling_finish() {
    for (method, status) in [(Method::HEAD, 200), (Method::GET, 204), (Method::GET, 304)] {
        let events = log();
        let l = events.clone();
        let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
            record(&ctx_of(&req), &l);
            async move {
                let mut res = Response::new(Body::from("body set by mistake"));
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(res)
            }
        }));
        let req = Request::builder().method(method.clone()).uri("/").body(Empty::new()).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert!(http_body::Body::is_end_stream(res.body()), "{method} {status}");
        if method == Method::HEAD {
            assert_eq!(res.headers()["content-length"], "19");
        }
        drop(res);
        assert_eq!(entries(&events), ["end", "finish"], "{method} {status}");
    }
}

#[tokio::test]
async fn panics_become_500_and_the_message_stays_hidden() {
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| async move {
        if req.uri().path() == "/" {
            panic!("secret detail");
        }
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 500);
    let body = body_string(res).await;
    assert!(!body.contains("secret"), "{body}");
    assert_eq!(body, r#"{"status":500,"error":"Internal Server Error","message":"Internal Server Error"}"#);

    // A panic in `call` itself and in a hook are caught too.
    struct PanicsInCall;
    impl Service<Request<Empty<Bytes>>> for PanicsInCall {
        type Response = Response<Empty<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<Empty<Bytes>>) -> Self::Future {
            panic!("in call")
        }
    }
    let res = ContextLayer::new().layer(PanicsInCall).oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 500);

    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| {
        ctx_of(&req).after(|_| async { panic!("in hook") as Result<Response<Body>, HttpError> }).unwrap();
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    }));
    assert_eq!(svc.oneshot(get_req("/")).await.unwrap().status(), 500);

    // A hook's closure that panics before it returns its future: the hook added
    // before it is skipped, and the 500 carries no part of the response it was given.
    let svc = ContextLayer::new().layer(service_fn(|req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.after(|mut res| async move {
            res.headers_mut().insert("x-first-added", HeaderValue::from_static("1"));
            Ok(res)
        })
        .unwrap();
        ctx.after(|_| -> std::future::Ready<Result<Response<Body>, HttpError>> { panic!("in hook closure") })
            .unwrap();
        async {
            Ok::<_, Infallible>(
                Response::builder().header("x-handler", "1").body(Empty::<Bytes>::new()).unwrap(),
            )
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().get("x-first-added").is_none());
    assert!(res.headers().get("x-handler").is_none());
}

#[tokio::test]
async fn inner_errors_and_poll_ready_errors_are_rendered() {
    let svc = ContextLayer::new().layer(service_fn(|_: Request<Empty<Bytes>>| async {
        Err::<Response<Empty<Bytes>>, _>(std::io::Error::other("disk"))
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 500);

    struct NotReady;
    impl Service<Request<Empty<Bytes>>> for NotReady {
        type Response = Response<Empty<Bytes>>;
        type Error = HttpError;
        type Future = std::future::Ready<Result<Self::Response, HttpError>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), HttpError>> {
            std::task::Poll::Ready(Err(HttpError::new(503).message("overloaded").expose(true)))
        }
        fn call(&mut self, _: Request<Empty<Bytes>>) -> Self::Future {
            unreachable!("not called when poll_ready failed")
        }
    }
    let res = ContextLayer::new().layer(NotReady).oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        body_string(res).await,
        r#"{"status":503,"error":"Service Unavailable","message":"overloaded"}"#
    );
}

#[tokio::test]
async fn an_inner_error_after_end_is_reported_not_lost() {
    let events = log();
    let l = events.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        record(&ctx, &l);
        async move {
            let _ = ctx.end(Response::new(Body::from("ended")));
            Err::<Response<Body>, _>(HttpError::new(503).message("db down"))
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_string(res).await, "ended");
    assert_eq!(entries(&events), ["error 503", "end", "finish"]);
}

#[tokio::test]
async fn an_accepted_end_wins_over_a_later_emitted_error() {
    let events = log();
    let l = events.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        record(&ctx, &l);
        async move {
            assert!(ctx.end(Response::new(Body::from("A"))).is_first());
            ctx.emit_error(HttpError::new(418));
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_string(res).await, "A");
    assert_eq!(entries(&events), ["error 418", "end", "finish"]);

    // The other order: the error came first, so `end` is refused.
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        async move {
            ctx.emit_error(HttpError::new(418));
            assert!(!ctx.end(Response::new(Body::from("A"))).is_first());
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }
    }));
    assert_eq!(svc.oneshot(get_req("/")).await.unwrap().status(), 418);
}

#[tokio::test]
async fn a_hook_can_end_even_after_the_handler_ended() {
    let ran = log();
    let r = ran.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.after(recording_hook(&r, "skipped")).unwrap();
        let c = ctx.clone();
        ctx.after(move |res| async move {
            assert!(c.end(Response::new(Body::from("B"))).is_first());
            Ok(res)
        })
        .unwrap();
        let _ = ctx.end(Response::new(Body::from("A")));
        async { Ok::<_, Infallible>(Response::new(Body::empty())) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(body_string(res).await, "B");
    assert!(entries(&ran).is_empty());
}

#[tokio::test]
async fn edits_made_inside_a_hook_still_apply() {
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let c = ctx.clone();
        ctx.after(move |res| async move {
            c.set_header(header::CACHE_CONTROL, HeaderValue::from_static("private"));
            Ok(res)
        })
        .unwrap();
        async { Ok::<_, Infallible>(Response::new(Body::empty())) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.headers()["cache-control"], "private");
}

#[tokio::test]
async fn error_listeners_hear_errors_raised_while_they_run() {
    let events = log();
    let l = events.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let l = l.clone();
        let c = ctx.clone();
        ctx.on_error(move |err| {
            push(&l, format!("error {}", err.status().as_u16()));
            if err.status() == 400 {
                // A listener that reports another error: delivered after this one.
                c.emit_error(HttpError::new(409));
            }
        });
        async { Err::<Response<Body>, _>(HttpError::new(400)) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(entries(&events), ["error 400", "error 409"]);
}

#[tokio::test]
async fn a_task_spawned_on_the_error_path_is_aborted() {
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let f = f.clone();
        let c = ctx.clone();
        ctx.on_error(move |_| {
            let f = f.clone();
            c.spawn(async move {
                tokio::task::yield_now().await;
                f.store(true, Ordering::SeqCst);
                Ok::<(), HttpError>(())
            });
        });
        async { Err::<Response<Body>, _>(HttpError::new(400)) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    body_string(res).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test]
async fn state_is_readable_in_finish_listeners_then_released() {
    let seen = log();
    let s = seen.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.state().insert(User("ann"));
        // A value in state that holds the context itself.
        ctx.state().insert(ctx.clone());
        let s = s.clone();
        ctx.on_finish(move |ctx| push(&s, ctx.state().get::<User>().map_or("none", |u| u.0)));
        async { Ok::<_, Infallible>(Response::new(Body::empty())) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    body_string(res).await;
    assert_eq!(entries(&seen), ["ann"]);
    // That the context in its own state is released is checked in tests/leaks.rs.
}

#[tokio::test]
async fn an_accepted_end_wins_over_a_later_panic_or_failing_hook() {
    // The handler ends, then panics in the same poll: the ended response goes out and
    // the panic is reported, once, to the error listeners and the app's hook.
    let told = log();
    let (t, hook_told) = (told.clone(), told.clone());
    let layer = ContextLayer::new().handle_error(move |err, _| {
        push(&hook_told, format!("app hook {}", err.status().as_u16()));
        tower_context::ErrorAction::Render(err)
    });
    let svc = layer.clone().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let t = t.clone();
        ctx.on_error(move |err| push(&t, format!("listener {}", err.status().as_u16())));
        // The hooks had not started: they run on the ended response, as after any end.
        ctx.after(|mut res| async move {
            res.headers_mut().insert("x-hooked", HeaderValue::from_static("yes"));
            Ok(res)
        })
        .unwrap();
        async move {
            assert!(ctx.end(Response::new(Body::from("ended"))).is_first());
            if req.uri().path() == "/" {
                panic!("after end");
            }
            Ok::<_, Infallible>(Response::new(Body::from("handler")))
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("x-hooked").unwrap(), "yes");
    assert_eq!(body_string(res).await, "ended");
    assert_eq!(entries(&told), ["listener 500", "app hook 500"]);

    // A hook that ends, then fails: its ended response goes out, the failure is told.
    let told = log();
    let t = told.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let t = t.clone();
        ctx.on_error(move |err| push(&t, format!("listener {}", err.status().as_u16())));
        let c = ctx.clone();
        ctx.after(move |_| async move {
            assert!(c.end(Response::new(Body::from("ended in hook"))).is_first());
            Err(HttpError::new(502))
        })
        .unwrap();
        async { Ok::<_, Infallible>(Response::new(Body::from("handler"))) }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_string(res).await, "ended in hook");
    assert_eq!(entries(&told), ["listener 502"]);
}

#[tokio::test]
async fn an_emitted_error_wins_over_an_end_made_while_it_is_being_handled() {
    // The handler emits an error, then fails too; an error listener, told of the
    // second failure, tries to end: the first error came first and is rendered.
    let ended = Arc::new(Mutex::new(None));
    let e = ended.clone();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        let (c, e) = (ctx.clone(), e.clone());
        ctx.on_error(move |_| {
            let verdict = c.end(Response::new(Body::from("ended by a listener")));
            e.lock().unwrap().get_or_insert(verdict.is_first());
        });
        async move {
            ctx.emit_error(HttpError::new(409));
            Err::<Response<Empty<Bytes>>, _>(HttpError::new(500))
        }
    }));
    let res = svc.oneshot(get_req("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(*ended.lock().unwrap(), Some(false), "the listener's end was refused");
}
