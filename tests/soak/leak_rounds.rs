//! Issue 9, point 2: no leaks under volume. Rounds of requests of every kind (plain,
//! hooks and listeners that capture the Context, ended, errored, panicking,
//! streaming, and clients that disconnect mid-handler or mid-body) go through a real
//! `tower_context::serve` server on 127.0.0.1. After each round, once the clients are
//! gone, no Context and no Connection is left, and the process's live heap (counted
//! by the global allocator below) is where the previous round left it.
//!
//! Round 1 warms up (buffers and tables reach their working size); rounds 2 and 3 must
//! each end with the live heap within a tenth of "one allocation per request of one
//! kind" of where round 1 left it (see `run`).
//!
//! The counters are process-wide, so every test of this binary runs alone (see
//! `main.rs`): the always-on test and the full-size ignored one run one after the
//! other under `--include-ignored`.
//!
//! ```text
//! # always on (CI): 1,000 per kind x 8 kinds x 3 rounds, about 10 s in debug
//! cargo test --all-features --test soak leak_rounds
//! # the issue's size: 10,000 per kind x 8 kinds x 3 rounds (240,000 requests), about
//! # 11 s in release (about two minutes in debug, hence ignored)
//! cargo test --all-features --release --test soak leak_rounds -- --ignored --nocapture
//! # any size
//! LEAK_ROUNDS_PER_KIND=2000 cargo test --all-features --test soak leak_rounds -- --nocapture
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tower_context::body::Body;
use tower_context::{BoxError, Connections, Context, ContextLayer, HttpError, live_contexts};

// ---------------------------------------------------------------------------------
// The counting allocator.

/// Counts live bytes and live allocations of the whole process.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

#[allow(clippy::cast_possible_wrap)]
fn grew(bytes: usize) {
    LIVE_BYTES.fetch_add(bytes as isize, Ordering::Relaxed);
}

#[allow(clippy::cast_possible_wrap)]
fn shrank(bytes: usize) {
    LIVE_BYTES.fetch_sub(bytes as isize, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only adds bookkeeping on atomics, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from a call to this allocator, which got
        // them from `System`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Clone, Copy)]
struct Heap {
    bytes: isize,
    allocs: isize,
}

fn heap() -> Heap {
    Heap { bytes: LIVE_BYTES.load(Ordering::SeqCst), allocs: LIVE_ALLOCS.load(Ordering::SeqCst) }
}

// ---------------------------------------------------------------------------------
// The server.

/// Marks the panics this test causes on purpose, so the panic hook keeps them quiet.
const PANIC_MARKER: &str = "leak_rounds: panicking on purpose";

/// One `Notify` per client lane: a mid-handler route tells its lane it has started,
/// so the client disconnects while the handler is surely running.
#[derive(Clone)]
struct Lanes(Arc<Vec<Notify>>);

/// Registers everything that could hold the context: an after-hook, listeners of
/// every kind, and a request-bound task; each captures a clone.
fn entangle(ctx: &Context) {
    let c = ctx.clone();
    ctx.after(move |mut res| async move {
        res.headers_mut().insert("x-request-id", HeaderValue::from_str(c.id()).unwrap());
        Ok(res)
    })
    .unwrap();
    let c = ctx.clone();
    ctx.on_end(move |_| drop(c));
    let c = ctx.clone();
    ctx.on_finish(move |_| drop(c));
    let c = ctx.clone();
    ctx.on_close(move |_| drop(c));
    let c = ctx.clone();
    ctx.on_error(move |_| {
        let _ = c.id();
    });
    let c = ctx.clone();
    ctx.spawn(async move {
        c.done().await;
        Ok::<(), HttpError>(())
    });
    ctx.set_header(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    ctx.cookies().set(("seen", "yes")).unwrap();
}

fn frames(n: usize) -> Body {
    let chunks = futures_util::stream::iter(
        (0..n).map(|_| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"chunk;")))),
    );
    Body::new(StreamBody::new(chunks))
}

async fn plain() -> &'static str {
    "ok"
}

async fn hooks(ctx: Context) -> &'static str {
    entangle(&ctx);
    "hooked"
}

async fn ended(ctx: Context) -> Result<&'static str, HttpError> {
    entangle(&ctx);
    let _ = ctx.end(Response::new(String::from("ended")));
    std::future::pending::<()>().await;
    Ok("never")
}

async fn errored(ctx: Context) -> Result<&'static str, HttpError> {
    entangle(&ctx);
    tower_context::throw!(400, "bad on purpose")
}

async fn panicking(ctx: Context) -> &'static str {
    entangle(&ctx);
    panic!("{PANIC_MARKER}")
}

async fn streaming(ctx: Context) -> Response<Body> {
    entangle(&ctx);
    let body = ctx.catch_stream(frames(4)).unwrap();
    Response::new(Body::new(body))
}

/// Mid-handler disconnects: tells the lane it started, then never answers.
async fn hang(ctx: Context, State(lanes): State<Lanes>, Path(lane): Path<usize>) -> &'static str {
    entangle(&ctx);
    lanes.0[lane].notify_one();
    std::future::pending::<()>().await;
    "never"
}

/// Mid-body disconnects: one chunk at once, then one every 10 ms, forever.
async fn forever(ctx: Context) -> Response<Body> {
    entangle(&ctx);
    let ticks = futures_util::stream::unfold(true, |first| async move {
        if !first {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Some((Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"data: tick\n\n"))), false))
    });
    Response::new(Body::new(StreamBody::new(ticks)))
}

struct Server {
    addr: SocketAddr,
    connections: Connections,
    lanes: Lanes,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(lanes: usize) -> Server {
    let lanes = Lanes(Arc::new((0..lanes).map(|_| Notify::new()).collect()));
    let app = Router::new()
        .route("/plain", get(plain))
        .route("/hooks", get(hooks))
        .route("/ended", get(ended))
        .route("/error", get(errored))
        .route("/panic", get(panicking))
        .route("/stream", get(streaming))
        .route("/hang/{lane}", get(hang))
        .route("/forever", get(forever))
        .with_state(lanes.clone())
        .layer(ContextLayer::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tower_context::serve(listener, app).with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    let connections = server.connections();
    let task = tokio::spawn(server.into_future());
    Server { addr, connections, lanes, stop, task }
}

// ---------------------------------------------------------------------------------
// The clients.

const KEPT_ALIVE: [(&str, StatusCode); 6] = [
    ("/plain", StatusCode::OK),
    ("/hooks", StatusCode::OK),
    ("/ended", StatusCode::OK),
    ("/error", StatusCode::BAD_REQUEST),
    ("/panic", StatusCode::INTERNAL_SERVER_ERROR),
    ("/stream", StatusCode::OK),
];

/// Every kind of request, counted.
const KINDS: usize = KEPT_ALIVE.len() + 2;

/// Bounds every wait; never what the test asserts.
const BOUND: Duration = Duration::from_secs(10);

/// One lane: `per_lane` requests of each kind. The kept-alive kinds share one
/// HTTP/1.1 connection (hyper's client); each disconnecting request has its own
/// socket, dropped mid-handler or mid-body (half of them with a reset, half with a
/// plain FIN).
async fn lane(addr: SocketAddr, lanes: Lanes, lane: usize, per_lane: usize) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    for i in 0..per_lane {
        for (path, status) in KEPT_ALIVE {
            let req = Request::get(path).header("host", "test").body(Empty::<Bytes>::new()).unwrap();
            let res = tokio::time::timeout(BOUND, sender.send_request(req)).await.unwrap().unwrap();
            assert_eq!(res.status(), status, "{path}");
            let body = tokio::time::timeout(BOUND, res.into_body().collect()).await.unwrap().unwrap();
            assert!(!body.to_bytes().is_empty(), "{path}");
        }
        let reset = i % 2 == 0;

        // Mid-handler: the handler has started and never answers.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /hang/{lane} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::timeout(BOUND, lanes.0[lane].notified()).await.expect("the handler starts");
        if reset {
            stream.set_zero_linger().unwrap();
        }
        drop(stream);

        // Mid-body: the head and the first chunk have arrived; more would follow.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /forever HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0_u8; 1024];
        while !seen.windows(10).any(|w| w == b"data: tick") {
            let n = tokio::time::timeout(BOUND, stream.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        if reset {
            stream.set_zero_linger().unwrap();
        }
        drop(stream);
    }
    drop(sender);
    tokio::time::timeout(BOUND, conn).await.unwrap().unwrap().unwrap();
}

/// Waits (bounded) until `done` holds.
async fn settle(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < BOUND, "{what} never settled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One round: `per_kind` requests of each kind from `lanes` clients at once; returns
/// once every context and connection is gone, with the live heap at that moment.
async fn round(server: &Server, lanes: usize, per_kind: usize) -> Heap {
    let clients: Vec<_> = (0..lanes)
        .map(|i| tokio::spawn(lane(server.addr, server.lanes.clone(), i, per_kind / lanes)))
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    settle("live contexts", || live_contexts() == 0).await;
    let connections = server.connections.clone();
    settle("open connections", || connections.is_empty()).await;
    assert_eq!(live_contexts(), 0);
    assert_eq!(server.connections.len(), 0);
    // Tokio frees finished tasks and deregistered sockets a little lazily: let the
    // heap come to rest (three equal readings 20 ms apart, bounded).
    let mut last = heap();
    let mut steady = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = heap();
        steady = if now.allocs == last.allocs { steady + 1 } else { 0 };
        last = now;
        if steady == 3 {
            break;
        }
    }
    last
}

fn quiet_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = info.payload().downcast_ref::<String>().is_some_and(|s| s.contains(PANIC_MARKER));
        if !ours {
            default(info);
        }
    }));
}

fn run(per_kind: usize) {
    let _alone = crate::alone();
    quiet_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        const LANES: usize = 4;
        let server = start(LANES).await;
        let started = Instant::now();
        let warm = round(&server, LANES, per_kind).await;
        let after_warm_up = started.elapsed();
        let second = round(&server, LANES, per_kind).await;
        let third = round(&server, LANES, per_kind).await;
        let requests = 3 * KINDS * (per_kind / LANES * LANES);
        eprintln!(
            "leak_rounds: {per_kind} per kind x {KINDS} kinds x 3 rounds = {requests} requests in {:.1?} \
             (round 1 {after_warm_up:.1?}); live heap after each round: {warm:?}, {second:?}, {third:?}",
            started.elapsed(),
        );
        // A leak of one small allocation per request of one kind is `per_kind` more
        // live allocations (10,000 at full size) and at least 8 bytes each; a table
        // that grows by one 8-byte entry per request (a realloc, not a new allocation)
        // is `8 * per_kind` more bytes. The bounds are a tenth of those (bytes: at
        // least 4 KiB), so either leak fails the test. Measured between clean rounds:
        // no difference at all (614 allocations, 97,892 bytes after every round in
        // debug at 1,000 per kind; 612 and 87,467 in release at 10,000).
        let max_allocs = isize::try_from(per_kind / 10).unwrap();
        let max_bytes = isize::try_from(per_kind * 8 / 10).unwrap().max(4 * 1024);
        for (name, later) in [("second", second), ("third", third)] {
            let allocs = later.allocs - warm.allocs;
            let bytes = later.bytes - warm.bytes;
            assert!(
                allocs < max_allocs && bytes < max_bytes,
                "the heap grew by {allocs} allocations and {bytes} bytes between the first round and \
                 the {name} (bounds: {max_allocs} allocations, {max_bytes} bytes)"
            );
        }
        let _ = server.stop.send(());
        tokio::time::timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
    });
    drop(runtime);
    assert_eq!(live_contexts(), 0);
}

fn per_kind(default: usize) -> usize {
    std::env::var("LEAK_ROUNDS_PER_KIND").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// Always on (CI): 1,000 requests of each kind per round, or `LEAK_ROUNDS_PER_KIND`.
#[test]
fn contexts_connections_and_heap_return_to_rest_between_rounds() {
    run(per_kind(1_000));
}

/// The issue's size: 10,000 requests of each kind per round. About two minutes in a
/// debug build, 11 s in release:
/// `cargo test --all-features --release --test soak leak_rounds -- --ignored --nocapture`.
#[test]
#[ignore = "full size: run with --release -- --ignored"]
fn ten_thousand_of_each_kind() {
    run(per_kind(10_000));
}
