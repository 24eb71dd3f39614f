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

/// A client that went away mid-handler (Close before the head left): whatever a
/// handle registers afterwards is refused, reported or released, never kept.
#[test]
fn registrations_after_the_client_left_mid_handler_are_not_kept() {
    let _alone = crate::alone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let reported = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = reported.clone();
        let layer = ContextLayer::new().handle_error(move |err, _| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tower_context::ErrorAction::Render(err)
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let svc = layer.layer(service_fn(move |req: Request<Empty<Bytes>>| {
            let tx = tx.clone();
            async move {
                tx.send(ctx_of(&req)).unwrap();
                std::future::pending::<()>().await;
                Ok::<Response<Body>, HttpError>(Response::new(Body::empty()))
            }
        }));
        let pending = svc.oneshot(Request::get("/hang").body(Empty::new()).unwrap());
        assert!(tokio::time::timeout(Duration::from_millis(10), pending).await.is_err());
        let ctx = rx.recv().await.unwrap();
        assert!(ctx.is_closed() && !ctx.is_ended());

        let c = ctx.clone();
        let hooked = ctx.after(move |res| async move {
            let _ = c.id();
            Ok(res)
        });
        assert!(hooked.is_err(), "a hook that would never run");
        assert!(!ctx.end(Response::new(Body::from("too late"))).is_first(), "nobody could send it");
        let c = ctx.clone();
        ctx.on_end(move |_| drop(c));
        ctx.set_header(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        ctx.state().insert(ctx.clone());
        assert!(ctx.state().get::<Context>().is_none(), "the state map stays empty");
        ctx.emit_error(HttpError::new(503));
        assert_eq!(reported.load(std::sync::atomic::Ordering::SeqCst), 1, "a late error is reported");
        drop(ctx);
        assert_eq!(live_contexts(), 0, "nothing registered keeps the request");
    });
}

/// Errors delivered on one thread while the request completes on another: every
/// error reaches the listeners, which are released once the delivery ends.
#[test]
fn error_listeners_busy_when_the_request_completes_deliver_everything_then_go() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    let _alone = crate::alone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
            tx.send(ctx_of(&req)).unwrap();
            async { Ok::<_, HttpError>(Response::new(Body::from("ok"))) }
        }));
        let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
        let ctx = rx.recv().await.unwrap();

        let seen = Arc::new(AtomicUsize::new(0));
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let (c, counted) = (ctx.clone(), seen.clone());
        ctx.on_error(move |_| {
            let _ = c.id();
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                entered_tx.send(()).unwrap();
                go_rx.lock().unwrap().recv().unwrap();
            }
        });
        // A late error, delivered on another thread: its listener waits there...
        let other = ctx.clone();
        let delivering = std::thread::spawn(move || other.emit_error(HttpError::new(500)));
        entered.recv().unwrap();
        // ...while a second error is queued behind it and the body finishes.
        ctx.emit_error(HttpError::new(501));
        res.into_body().collect().await.unwrap();
        assert!(ctx.is_finished());
        go.send(()).unwrap();
        delivering.join().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2, "both errors delivered");
        drop(ctx);
        assert_eq!(live_contexts(), 0, "the listeners were not put back");
    });
}
