//! The count of live contexts that the leak tests rely on stays right when contexts
//! are made and dropped on different threads, and when those threads exit; and a
//! context nobody can observe is let go when the head leaves, not at the body's end.
//! The test runs alone (see `main.rs`), so the process-wide count is its own.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, ServiceExt, service_fn};
use tower_context::{Context, ContextLayer, Outcome, live_contexts};

/// Makes `n` contexts on the calling thread and keeps them.
fn make(n: usize) -> Vec<Context> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut kept = Vec::new();
        for _ in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
                tx.send(req.extensions().get::<Context>().cloned().unwrap()).unwrap();
                async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
            }));
            drop(svc.oneshot(Request::new(Empty::new())).await.unwrap());
            kept.push(rx.recv().unwrap());
        }
        kept
    })
}

/// Serves one request whose handler does `register` with its context, and returns
/// the count of live contexts once the response head is out, with the body unread.
async fn live_while_the_body_is_unread(
    register: fn(&Context),
) -> (usize, Response<tower_context::layer::ResponseBody<Empty<Bytes>>>) {
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        register(req.extensions().get::<Context>().unwrap());
        // An empty body is at its end already: no failure of it could be reported.
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    }));
    let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
    (live_contexts(), res)
}

#[test]
fn the_live_count_follows_contexts_across_threads_that_exit() {
    let _alone = crate::alone();
    assert_eq!(live_contexts(), 0);

    // Made on threads that have exited, dropped here.
    let kept: Vec<Context> = (0..4).flat_map(|_| std::thread::spawn(|| make(5)).join().unwrap()).collect();
    assert_eq!(live_contexts(), 20);
    drop(kept);
    assert_eq!(live_contexts(), 0);

    // Made here, dropped on threads that then exit.
    let kept = make(6);
    assert_eq!(live_contexts(), 6);
    let mut kept = kept.into_iter();
    for _ in 0..3 {
        let two: Vec<Context> = kept.by_ref().take(2).collect();
        std::thread::spawn(move || drop(two)).join().unwrap();
        assert_eq!(live_contexts(), kept.len());
    }
    assert_eq!(live_contexts(), 0);

    // Nothing observes the request: the context is gone with the head.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (live, res) = live_while_the_body_is_unread(|_| {}).await;
        assert_eq!(live, 0);
        drop(res);

        // A listener, state or a kept handle observe it: the body keeps the context
        // until it ends, and the listener hears Finish then, not before.
        static FINISHED: AtomicBool = AtomicBool::new(false);
        let (live, res) = live_while_the_body_is_unread(|ctx| {
            ctx.on_finish(|ctx| FINISHED.store(ctx.outcome() == Some(Outcome::Finished), Ordering::SeqCst));
        })
        .await;
        assert_eq!(live, 1);
        assert!(!FINISHED.load(Ordering::SeqCst));
        use http_body_util::BodyExt;
        res.into_body().collect().await.unwrap();
        assert!(FINISHED.load(Ordering::SeqCst));
        assert_eq!(live_contexts(), 0);

        let (live, res) = live_while_the_body_is_unread(|ctx| {
            ctx.state().insert(7_u32);
        })
        .await;
        assert_eq!(live, 1);
        drop(res);
        assert_eq!(live_contexts(), 0);

        static KEPT: std::sync::Mutex<Vec<Context>> = std::sync::Mutex::new(Vec::new());
        let (_, res) = live_while_the_body_is_unread(|ctx| KEPT.lock().unwrap().push(ctx.clone())).await;
        drop(res);
        let kept = KEPT.lock().unwrap().pop().unwrap();
        assert_eq!(kept.outcome(), Some(Outcome::Finished), "an empty body has sent all it had");
        drop(kept);
        assert_eq!(live_contexts(), 0);
    });
}
