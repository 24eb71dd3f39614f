//! No leaks: hooks, listeners and tasks that captured the Context are released when
//! the request ends, on every path. The test runs alone (see `main.rs`), so the
//! process-wide count of live contexts is its own.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, StreamBody};
use tower::{Layer, ServiceExt, service_fn};
use tower_context::body::Body;
use tower_context::{BoxError, Context, ContextLayer, HttpError, live_contexts};

use crate::common::ctx_of;

/// Registers everything that could hold the context: a hook, listeners, state, a task.
fn entangle(ctx: &Context) {
    ctx.state().insert(ctx.clone());
    let c = ctx.clone();
    ctx.after(move |res| async move {
        let _ = c.id();
        Ok(res)
    })
    .unwrap();
    let c = ctx.clone();
    ctx.on_finish(move |_| drop(c));
    let c = ctx.clone();
    ctx.on_close(move |_| drop(c));
    let c = ctx.clone();
    ctx.on_error(move |_| {
        let _ = c.id();
    });
    // A task that outlives the response a little: it waits for the request to end.
    let c = ctx.clone();
    ctx.spawn(async move {
        c.done().await;
        Ok::<(), HttpError>(())
    });
}

async fn handle(req: Request<Empty<Bytes>>) -> Result<Response<Body>, HttpError> {
    let ctx = ctx_of(&req);
    entangle(&ctx);
    match req.uri().path() {
        "/plain" => Ok(Response::new(Body::from("ok"))),
        "/ended" => {
            let _ = ctx.end(Response::new(Body::from("ended")));
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/error" => Err(HttpError::new(400)),
        "/panic" => panic!("boom"),
        "/stream" => {
            let frames = futures_util::stream::iter(
                (0..3).map(|_| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"x")))),
            );
            Ok(Response::new(Body::new(StreamBody::new(frames))))
        }
        _ => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

#[test]
fn contexts_are_released_on_every_path() {
    let _alone = crate::alone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(released_on_every_path());
}

async fn released_on_every_path() {
    let svc = ContextLayer::new().layer(service_fn(handle));
    for round in 0..500 {
        for path in ["/plain", "/ended", "/error", "/panic", "/stream"] {
            let res = svc.clone().oneshot(Request::get(path).body(Empty::new()).unwrap()).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
        // The client goes away mid-body...
        let res = svc.clone().oneshot(Request::get("/stream").body(Empty::new()).unwrap()).await.unwrap();
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        // ...and mid-handler.
        let pending = svc.clone().oneshot(Request::get("/hang").body(Empty::new()).unwrap());
        let _ = tokio::time::timeout(Duration::from_micros(1), pending).await;
        if round == 0 {
            // An aborted task is dropped when a worker next runs it, not inside
            // `abort()`: the contexts its future held go within a few turns of the
            // runtime, not at this very instant.
            for _ in 0..100 {
                if live_contexts() <= 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(live_contexts() <= 1, "released right after each request");
        }
    }
    // Aborted tasks and dropped futures are released as the runtime gets to them.
    for _ in 0..100 {
        if live_contexts() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(live_contexts(), 0);
}
