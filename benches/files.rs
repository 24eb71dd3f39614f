//! Files (issue 19, point 5): `ctx.send_file` against bare tower-http `ServeFile`,
//! in the same run.
//!
//! ```text
//! cargo bench --bench files                      # both parts
//! PART=alloc cargo bench --bench files           # heap allocations only (seconds)
//! PART=load ROUNDS=40 MILLIS=500 cargo bench --bench files
//! ```
//!
//! - **Allocations** (a counting global allocator): heap allocations per request for
//!   a 304 (`If-None-Match` with the current tag) and a 206 (`Range: bytes=0-1023`,
//!   and the same with a matching `If-Range`), on a 1 MiB file, each row driven
//!   with `call` on one service (no clone per request), the body read to its end.
//!   Rows: bare `ServeFile`; the same behind `ContextLayer`; that plus tower-http's
//!   `SetResponseHeaderLayer` adding the `Cache-Control` that `send_file` adds;
//!   `ServeDir` on the file's directory the same way (it too finds the file under a
//!   root and checks for a directory); and `send_file` behind `ContextLayer`.
//! - **Requests per second over loopback**: a hyper HTTP/1.1 server on 127.0.0.1
//!   (its own one-thread runtime) serving the 1 MiB file, and a client (another
//!   one-thread runtime) keeping `CONNECTIONS` (4) connections busy, each reading
//!   whole responses. Each round runs every row for `MILLIS` (1000) in a rotating
//!   order; ratios are taken within a round, and the median over `ROUNDS` (15)
//!   rounds is reported with its quartiles. Beside requests/s, CPU time per
//!   request: the whole process's (`/proc/self/stat`, 10 ms ticks, the client's
//!   share included) and the server's alone (the nanoseconds its runtime thread and
//!   blocking pool spent, from each thread's `/proc/self/task/*/schedstat`), the
//!   steadiest of the three on a shared machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_context::files::PublicFiles;
use tower_context::{Context, ContextLayer, HttpError};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

mod counting;

use counting::ALLOCATIONS;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const FILE: &str = "big.bin";
const CACHE_CONTROL: &str = "max-age=60, must-revalidate, public";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A directory holding the 1 MiB file.
fn root() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tower-context-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let content: Vec<u8> = (0..1024 * 1024_u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join(FILE), content).expect("the 1 MiB file");
    dir
}

/// The handler every `send_file` row runs.
async fn send(req: Request<impl Sized>) -> Result<Response<tower_context::files::FileBody>, HttpError> {
    let ctx = req.extensions().get::<Context>().cloned().expect("ContextLayer inserts a Context");
    ctx.send_file(FILE).await
}

fn main() {
    let root = root();
    let part = std::env::var("PART").unwrap_or_default();
    if part.is_empty() || part == "alloc" {
        allocations(&root);
    }
    if part.is_empty() || part == "load" {
        load(&root);
    }
    let _ = std::fs::remove_dir_all(&root);
}

// ---- Allocations ------------------------------------------------------------------

/// One request through `svc`, its body read to the end.
async fn drive<S, B>(svc: &mut S, headers: &[(&'static str, &'static str)])
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut request = Request::get("/big.bin").body(Empty::new()).unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, HeaderValue::from_static(value));
    }
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    std::hint::black_box(response.into_body().collect().await.unwrap());
}

fn count<S, B>(rt: &tokio::runtime::Runtime, mut svc: S, headers: &[(&'static str, &'static str)]) -> f64
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let rounds = env("REQUESTS", 2000);
    for _ in 0..50 {
        rt.block_on(drive(&mut svc, headers));
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        rt.block_on(drive(&mut svc, headers));
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / rounds as f64
}

fn allocations(root: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let file = root.join(FILE);
    let etag = rt.block_on(async {
        let response = ServeFile::new(&file).oneshot(Request::new(Empty::<Bytes>::new())).await.unwrap();
        response.headers()[header::ETAG].to_str().unwrap().to_owned()
    });
    // Header values from a static string, like hyper's (a clone costs a count).
    let etag: &'static str = Box::leak(etag.into_boxed_str());
    let cases: [(&str, Vec<(&'static str, &'static str)>); 3] = [
        ("304 (If-None-Match)", vec![("if-none-match", etag)]),
        ("206 (Range: bytes=0-1023)", vec![("range", "bytes=0-1023")]),
        ("206 with a matching If-Range", vec![("range", "bytes=0-1023"), ("if-range", etag)]),
    ];
    println!("\nheap allocations per request, 1 MiB file, {} requests per row\n", env("REQUESTS", 2000));
    println!(
        "| request | bare ServeFile | ServeFile, layer | ServeFile, layer, Cache-Control | ServeDir, layer, Cache-Control | send_file, layer | send_file − ServeFile | send_file − ServeDir |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let cache_control = || {
        SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL))
    };
    for (name, headers) in &cases {
        let bare = count(&rt, ServeFile::new(&file), headers);
        let layered = count(&rt, ContextLayer::new().layer(ServeFile::new(&file)), headers);
        let cached =
            count(&rt, ContextLayer::new().layer(cache_control().layer(ServeFile::new(&file))), headers);
        let dir = count(&rt, ContextLayer::new().layer(cache_control().layer(ServeDir::new(root))), headers);
        let files = PublicFiles::new([root]);
        let sent = count(&rt, ContextLayer::new().public_files(files).layer(service_fn(send)), headers);
        println!(
            "| {name} | {bare:.2} | {layered:.2} | {cached:.2} | {dir:.2} | {sent:.2} | {:+.2} | {:+.2} |",
            sent - cached,
            sent - dir
        );
    }
}

// ---- Requests per second over loopback -------------------------------------------

/// Starts a server for `svc` on its own one-thread runtime, its threads (the
/// runtime's and its blocking pool's) named from `name`; its address.
fn server<S, B>(name: &'static str, svc: S) -> SocketAddr
where
    S: Service<Request<hyper::body::Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name(name.to_owned());
    let spawned = thread.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(name)
            // Blocking threads are kept between rounds: one that ended would take
            // its CPU time out of the server's count.
            .thread_keep_alive(Duration::from_secs(24 * 3600))
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
            tx.send(listener.local_addr().expect("an address")).expect("the bench waits");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    spawned.expect("a server thread");
    rx.recv().expect("the server's address")
}

/// CPU time, in nanoseconds, the threads named `name` have used (Linux's
/// per-thread `schedstat`, exact where `/proc/self/stat` counts 10 ms ticks); 0
/// elsewhere.
fn server_cpu_ns(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut total = 0;
    for task in tasks.flatten() {
        let path = task.path();
        let named = std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim_end() == name);
        if named && let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) {
            total += stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// Requests completed against `addr` in `millis`, over `connections` kept-alive
/// connections, every response read whole.
async fn hammer(addr: SocketAddr, connections: u64, millis: u64) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("the server");
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let request =
                    Request::get("/big.bin").header("host", "bench").body(Empty::<Bytes>::new()).unwrap();
                let response = sender.send_request(request).await.expect("a response");
                let mut body = response.into_body();
                let mut read = 0;
                while let Some(frame) = body.frame().await {
                    read += frame.expect("a frame").data_ref().map_or(0, Bytes::len);
                }
                assert_eq!(read, 1024 * 1024, "the whole file");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(millis)).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    counted
}

/// CPU time this process (every thread: server, client, blocking pool) has used,
/// in clock ticks (Linux `/proc/self/stat`); 0 elsewhere.
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0 };
    // The fields after the command name (which is in parentheses): utime and stime
    // are the 12th and 13th.
    let Some((_, after)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    tick(11) + tick(12)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    let mid = median(values);
    (values[values.len() / 4], mid, values[(values.len() * 3) / 4])
}

fn load(root: &Path) {
    let file = root.join(FILE);
    let bare = server("bare", ServeFile::new(&file));
    let layered = server("layered", ContextLayer::new().layer(ServeFile::new(&file)));
    let files = PublicFiles::new([root]);
    let dir = server("dir", ContextLayer::new().layer(ServeDir::new(root)));
    let sent = server("sent", ContextLayer::new().public_files(files).layer(service_fn(send)));
    let rows = [
        ("bare ServeFile", "bare", bare),
        ("ContextLayer + ServeFile", "layered", layered),
        ("ContextLayer + ServeDir", "dir", dir),
        ("ContextLayer + send_file", "sent", sent),
    ];

    let (rounds, millis, connections) =
        (env("ROUNDS", 15).max(1), env("MILLIS", 1000).max(1), env("CONNECTIONS", 4));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    // Warm up every server (blocking pool threads, page cache).
    for (_, _, addr) in rows {
        rt.block_on(hammer(addr, connections, 1000));
    }
    let mut rps = vec![Vec::new(); rows.len()];
    // CPU time per request: unlike requests per second, not moved by other work on
    // a shared machine (only by how it slows this process's own instructions). The
    // whole process's (client included, the same work in every row) and the
    // server's alone (its runtime's thread and blocking pool).
    let mut cpu = vec![Vec::new(); rows.len()];
    let mut server_cpu = vec![Vec::new(); rows.len()];
    let started = Instant::now();
    for round in 0..rounds as usize {
        for i in (round % rows.len()..rows.len()).chain(0..round % rows.len()) {
            let (ticks, ns) = (cpu_ticks(), server_cpu_ns(rows[i].1));
            let n = rt.block_on(hammer(rows[i].2, connections, millis));
            rps[i].push(n as f64 * 1000.0 / millis as f64);
            cpu[i].push((cpu_ticks() - ticks) as f64 / n.max(1) as f64);
            server_cpu[i].push((server_cpu_ns(rows[i].1) - ns) as f64 / n.max(1) as f64);
        }
    }
    println!(
        "\nrequests per second over loopback, 1 MiB file, {connections} connections, {rounds} rounds of {millis} ms per row ({:.0} s)\n",
        started.elapsed().as_secs_f64()
    );
    println!(
        "| server | requests/s | quartiles | requests/s ÷ bare ServeFile's, same round | quartiles | CPU ticks per 1000 requests (whole process) | bare's ÷ this row's, same round | quartiles | server CPU µs per request | bare's ÷ this row's, same round | quartiles |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ratios = |row: &[f64], base: &[f64], invert: bool| -> (f64, f64, f64) {
        let mut r: Vec<f64> = row.iter().zip(base).map(|(x, b)| if invert { b / x } else { x / b }).collect();
        quartiles(&mut r)
    };
    for (i, (name, _, _)) in rows.iter().enumerate() {
        let (q1, mid, q3) = quartiles(&mut rps[i].clone());
        let (r1, rmid, r3) = ratios(&rps[i], &rps[0], false);
        let (_, cmid, _) = quartiles(&mut cpu[i].clone());
        let (c1, cr, c3) = ratios(&cpu[i], &cpu[0], true);
        let (_, smid, _) = quartiles(&mut server_cpu[i].clone());
        let (s1, sr, s3) = ratios(&server_cpu[i], &server_cpu[0], true);
        println!(
            "| {name} | {mid:.0} | {q1:.0}–{q3:.0} | {rmid:.3} | {r1:.3}–{r3:.3} | {:.0} | {cr:.3} | {c1:.3}–{c3:.3} | {:.1} | {sr:.3} | {s1:.3}–{s3:.3} |",
            cmid * 1000.0,
            smid / 1000.0
        );
    }
    println!();
    for (baseline, at) in [("ContextLayer + ServeFile", 1), ("ContextLayer + ServeDir", 2)] {
        let (r1, rmid, r3) = ratios(&rps[3], &rps[at], false);
        let (c1, cmid, c3) = ratios(&cpu[3], &cpu[at], true);
        let (s1, smid, s3) = ratios(&server_cpu[3], &server_cpu[at], true);
        println!(
            "send_file against {baseline}: requests/s {rmid:.3} (quartiles {r1:.3}–{r3:.3}), CPU per request {cmid:.3} (quartiles {c1:.3}–{c3:.3}), server CPU per request {smid:.3} (quartiles {s1:.3}–{s3:.3})"
        );
    }
}
