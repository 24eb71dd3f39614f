//! `end`, `emit_error` and edits racing the response on another thread: whatever the
//! interleaving, an `end` that says it won is the response sent, an error is either
//! rendered or reported (never lost), and each request completes exactly once.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use tower::{Layer, ServiceExt, service_fn};
use tower_context::body::Body;
use tower_context::{Context, ContextLayer, Ended, HttpError};

use crate::common::ctx_of;

/// The handler's own response, at once or after one yield (every other round), so
/// the racer lands before and after it.
async fn handler_response(round: usize) -> Result<Response<Body>, Infallible> {
    if round.is_multiple_of(2) {
        tokio::task::yield_now().await;
    }
    Ok(Response::new(Body::from("handler")))
}

/// Where the handler leaves its racer, for the test to wait for it to finish.
type Racer = Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>;

async fn racer_done(racer: &Racer) {
    let handle = racer.lock().unwrap().take();
    if let Some(handle) = handle {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_errors_and_edits_from_another_thread_are_never_lost() {
    const ROUNDS: usize = 2000;
    for round in 0..ROUNDS {
        let ended: Arc<Mutex<Option<Ended>>> = Arc::default();
        let errors = Arc::new(AtomicUsize::new(0));
        let completions = Arc::new(AtomicUsize::new(0));
        let (e, errs, done) = (ended.clone(), errors.clone(), completions.clone());
        let racer = Racer::default();
        let r = racer.clone();
        let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
            let r = r.clone();
            let ctx = ctx_of(&req);
            let errs = errs.clone();
            ctx.on_error(move |_| {
                errs.fetch_add(1, Ordering::SeqCst);
            });
            let d = done.clone();
            ctx.on_finish(move |_| {
                d.fetch_add(1, Ordering::SeqCst);
            });
            let d = done.clone();
            ctx.on_close(move |_| {
                d.fetch_add(1, Ordering::SeqCst);
            });
            let (c, e) = (ctx.clone(), e.clone());
            // On another worker, racing the handler's own (immediate) response.
            let racer = tokio::spawn(async move {
                match round % 3 {
                    0 => *e.lock().unwrap() = Some(c.end(Response::new(Body::from("ended")))),
                    1 => c.emit_error(HttpError::new(409)),
                    _ => c.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                }
            });
            *r.lock().unwrap() = Some(racer);
            handler_response(round)
        }));
        let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
        let status = res.status();
        let cache = res.headers().get(header::CACHE_CONTROL).cloned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        racer_done(&racer).await;
        match round % 3 {
            0 => match *ended.lock().unwrap() {
                Some(e) if e.is_first() => {
                    assert_eq!(body, "ended", "round {round}: an accepted end was not sent")
                }
                _ => assert_eq!(body, "handler", "round {round}"),
            },
            1 => {
                // Rendered (409) or, if the response had left, reported: seen once either way.
                let seen = errors.load(Ordering::SeqCst);
                if status == 409 {
                    assert_eq!(seen, 1, "round {round}");
                } else {
                    assert_eq!(body, "handler", "round {round}");
                    // A late error may still be on its way to the listeners.
                    assert!(seen <= 1, "round {round}");
                }
            }
            _ => {
                // Applied, or made after the response left (and then ignored).
                if let Some(cache) = cache {
                    assert_eq!(cache, "no-store", "round {round}");
                }
                assert_eq!(body, "handler", "round {round}");
            }
        }
        assert_eq!(completions.load(Ordering::SeqCst), 1, "round {round}: exactly one of Finish and Close");
    }
}

/// An `end` from another thread that lands while the layer moves from the inner
/// response to the hooks is accepted before the hooks: they run on it, they are not
/// skipped. (An `end` accepted once the hooks have started skips the hooks left.)
/// Every fourth round the handler waits for the racer, so that some `end`s surely
/// land before the hooks however the threads are scheduled; the others race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_racing_the_start_of_the_hooks_still_gets_the_hooks() {
    const ROUNDS: usize = 4000;
    for round in 0..ROUNDS {
        let waits = round % 4 == 3;
        // What the racer saw: its end's verdict, and whether a hook could still be
        // added after it (then the hooks had not started when the end was accepted).
        let seen: Arc<Mutex<Option<(Ended, bool)>>> = Arc::default();
        let s = seen.clone();
        let racer = Racer::default();
        let r = racer.clone();
        let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
            let r = r.clone();
            let ctx = ctx_of(&req);
            ctx.after(|mut res| async move {
                res.headers_mut().insert("x-hooked", HeaderValue::from_static("yes"));
                Ok(res)
            })
            .unwrap();
            let (c, s) = (ctx.clone(), s.clone());
            let (raced, race) = tokio::sync::oneshot::channel::<()>();
            let racer = tokio::spawn(async move {
                let ended = c.end(Response::new(Body::from("ended")));
                let late = c
                    .after(|mut res| async move {
                        res.headers_mut().insert("x-late", HeaderValue::from_static("yes"));
                        Ok(res)
                    })
                    .is_ok();
                *s.lock().unwrap() = Some((ended, late));
                let _ = raced.send(());
            });
            *r.lock().unwrap() = Some(racer);
            async move {
                if waits {
                    let _ = race.await;
                }
                handler_response(round).await
            }
        }));
        let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
        let hooked = res.headers().contains_key("x-hooked");
        let late = res.headers().contains_key("x-late");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        racer_done(&racer).await;
        let verdict = *seen.lock().unwrap();
        if waits {
            // The handler had not answered: the `end` was accepted before the hooks,
            // which ran on it (whether the racer's late hook made it in depends on
            // how soon the layer woke, and is checked below).
            assert!(matches!(verdict, Some((ended, _)) if ended.is_first()), "round {round}: {verdict:?}");
            assert_eq!(body, "ended", "round {round}");
            assert!(hooked, "round {round}: the hooks were skipped");
        }
        match verdict {
            Some((ended, true)) if ended.is_first() => {
                assert_eq!(body, "ended", "round {round}");
                assert!(
                    hooked && late,
                    "round {round}: the hooks were skipped (hooked {hooked}, late {late})"
                );
            }
            Some((ended, _)) if ended.is_first() => assert_eq!(body, "ended", "round {round}"),
            _ => {
                assert_eq!(body, "handler", "round {round}");
                assert!(hooked, "round {round}");
            }
        }
    }
    // The narrow window right before the hooks start is covered deterministically
    // by the test below.
}

/// A body that calls `end` the first time the layer asks whether it is at its end:
/// user code that runs after the layer's last look for a signal and before the
/// hooks start (in first-frame mode the layer asks the body before deciding).
struct EndingBody {
    ctx: Mutex<Option<Context>>,
}

impl http_body::Body for EndingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"handler")))))
    }

    fn is_end_stream(&self) -> bool {
        // Once only: whatever the layer asks later is answered plainly.
        if let Some(ctx) = self.ctx.lock().unwrap().take() {
            assert!(ctx.end(Response::new(Body::from("ended"))).is_first());
        }
        false
    }
}

#[tokio::test]
async fn an_end_just_before_the_hooks_start_is_what_the_hooks_get() {
    let svc = ContextLayer::new().first_frame(true).layer(service_fn(|req: Request<Empty<Bytes>>| {
        let ctx = ctx_of(&req);
        ctx.after(|mut res| async move {
            res.headers_mut().insert("x-hooked", HeaderValue::from_static("yes"));
            Ok(res)
        })
        .unwrap();
        let body = EndingBody { ctx: Mutex::new(Some(ctx)) };
        async move { Ok::<_, Infallible>(Response::new(body)) }
    }));
    let res = svc.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(res.headers().get("x-hooked").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ended");
}
