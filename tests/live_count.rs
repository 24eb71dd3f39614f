//! The count of live contexts that the leak tests rely on stays right when contexts
//! are made and dropped on different threads, and when those threads exit. One test
//! in this binary, so the process-wide count is this test's alone.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, ServiceExt, service_fn};
use tower_context::{Context, ContextLayer, live_contexts};

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

#[test]
fn the_live_count_follows_contexts_across_threads_that_exit() {
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
}
