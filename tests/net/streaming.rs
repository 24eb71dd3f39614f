//! Streaming bodies against a real hyper server on 127.0.0.1: catch_stream, the
//! first-frame option, disconnects, bodies of every shape, and backpressure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::Incoming;
use std::error::Error as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{Layer, service_fn};
use tower_context::body::Body;
use tower_context::stream::FirstFrame;
use tower_context::stream::StreamAlreadyCaught;
use tower_context::{Context, ContextLayer, ErrorAction, HttpError, Outcome};

type Events = Arc<Mutex<Vec<String>>>;

/// Serves a handler behind `layer` on a real hyper server; each request's Context and
/// its event log come out of the channel.
async fn serve<F, Fut>(
    layer: ContextLayer,
    handler: F,
) -> (SocketAddr, mpsc::UnboundedReceiver<(Context, Events)>)
where
    F: Fn(Context, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, HttpError>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = layer.layer(service_fn(move |req: Request<Incoming>| {
        let ctx = req.extensions().get::<Context>().cloned().unwrap();
        let events: Events = Arc::default();
        let e = events.clone();
        ctx.on_end(move |_| e.lock().unwrap().push("end".into()));
        let e = events.clone();
        ctx.on_finish(move |_| e.lock().unwrap().push("finish".into()));
        let e = events.clone();
        ctx.on_close(move |_| e.lock().unwrap().push("close".into()));
        let e = events.clone();
        ctx.on_error(move |err| e.lock().unwrap().push(format!("error {}", err.message_str())));
        let _ = tx.send((ctx.clone(), events));
        handler(ctx, req)
    }));
    crate::common::spawn_hyper(listener, svc);
    (addr, rx)
}

/// Sends one HTTP/1.1 request and reads the whole reply until the server closes or
/// the response is complete (`Connection: close`).
async fn fetch(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\naccept: application/json\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    // An early-ended chunked response is cut by the server: the read fails or ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

async fn done(ctx: &Context) -> Outcome {
    tokio::time::timeout(Duration::from_secs(5), ctx.done()).await.expect("the request completes")
}

/// Sets a flag when dropped: proves a stream's cleanup ran.
struct Cleanup(Arc<AtomicBool>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A stream that yields `ok` chunks, then fails with `message`; it owns a Cleanup.
fn failing_stream(
    ok: usize,
    message: &'static str,
    cleaned: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let guard = Cleanup(cleaned);
    stream::unfold((0, guard), move |(n, guard)| async move {
        tokio::task::yield_now().await;
        if n < ok {
            Some((Ok(Bytes::from(format!("chunk{n};"))), (n + 1, guard)))
        } else if n == ok {
            Some((Err(std::io::Error::other(message)), (n + 1, guard)))
        } else {
            None
        }
    })
}

#[tokio::test]
async fn a_caught_stream_that_fails_midway_is_reported_dropped_and_closes() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let hook_saw = Arc::new(Mutex::new(Vec::new()));
    let h = hook_saw.clone();
    let layer = ContextLayer::new().handle_error(move |err, _| {
        h.lock().unwrap().push(err.source().map(ToString::to_string).unwrap_or_default());
        ErrorAction::Render(err)
    });
    let c = cleaned.clone();
    let (addr, mut contexts) = serve(layer, move |ctx, _| {
        let c = c.clone();
        async move {
            let body = ctx.catch_byte_stream(failing_stream(2, "upstream reset", c))?;
            Ok(Response::new(Body::new(body)))
        }
    })
    .await;
    let reply = fetch(addr, "GET", "/").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("chunk0;") && reply.contains("chunk1;"), "{reply}");
    assert!(!reply.ends_with("0\r\n\r\n"), "the chunked body must not end cleanly: {reply}");
    let (ctx, events) = contexts.recv().await.unwrap();
    assert_eq!(done(&ctx).await, Outcome::Closed);
    assert_eq!(*events.lock().unwrap(), ["end", "error Internal Server Error", "close"]);
    assert!(cleaned.load(Ordering::SeqCst));
    assert_eq!(*hook_saw.lock().unwrap(), ["upstream reset"]);
}

#[tokio::test]
async fn catch_stream_twice_is_an_error() {
    let (addr, _contexts) = serve(ContextLayer::new(), |ctx, _| async move {
        let first = ctx.catch_stream(Body::from("a"));
        let second = ctx.catch_stream(Body::from("b"));
        assert!(first.is_ok());
        assert_eq!(second.err(), Some(StreamAlreadyCaught));
        Ok(Response::new(Body::from("checked")))
    })
    .await;
    let reply = fetch(addr, "GET", "/").await;
    assert!(reply.ends_with("checked"), "{reply}");
}

#[tokio::test]
async fn a_caught_stream_replaced_before_it_was_sent_is_cleaned_up() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let c = cleaned.clone();
    let (addr, mut contexts) = serve(ContextLayer::new(), move |ctx, _| {
        let c = c.clone();
        async move {
            let body = ctx.catch_byte_stream(failing_stream(5, "never polled", c))?;
            let response = Response::new(Body::new(body));
            let _ = ctx.end(Response::builder().status(409).body(Body::from("replaced")).unwrap());
            Ok(response)
        }
    })
    .await;
    let reply = fetch(addr, "GET", "/").await;
    assert!(reply.starts_with("HTTP/1.1 409 Conflict"), "{reply}");
    let (ctx, events) = contexts.recv().await.unwrap();
    assert_eq!(done(&ctx).await, Outcome::Finished);
    assert_eq!(*events.lock().unwrap(), ["end", "finish"]);
    assert!(cleaned.load(Ordering::SeqCst));
}

#[tokio::test]
async fn first_frame_mode_turns_an_early_failure_into_an_error_response() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let c = cleaned.clone();
    let (addr, mut contexts) = serve(ContextLayer::new().first_frame(true), move |ctx, req| {
        let c = c.clone();
        async move {
            let ok = if req.uri().path() == "/fails-at-once" { 0 } else { 2 };
            let body = ctx.catch_byte_stream(failing_stream(ok, "file not found", c))?;
            Ok(Response::new(Body::new(body)))
        }
    })
    .await;
    let reply = fetch(addr, "GET", "/fails-at-once").await;
    assert!(reply.starts_with("HTTP/1.1 500 Internal Server Error"), "{reply}");
    assert!(
        reply
            .ends_with(r#"{"status":500,"error":"Internal Server Error","message":"Internal Server Error"}"#),
        "{reply}"
    );
    let (ctx, events) = contexts.recv().await.unwrap();
    assert_eq!(done(&ctx).await, Outcome::Finished);
    assert_eq!(*events.lock().unwrap(), ["error Internal Server Error", "end", "finish"]);
    assert!(cleaned.load(Ordering::SeqCst));

    // A stream that produced data first still goes out as a 200 that stops short.
    let reply = fetch(addr, "GET", "/later").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(
        reply.contains("chunk0;chunk1;") || (reply.contains("chunk0;") && reply.contains("chunk1;")),
        "{reply}"
    );
}

#[tokio::test]
async fn first_frame_per_response_with_an_exposed_error() {
    let (addr, _contexts) = serve(ContextLayer::new(), |ctx, req| async move {
        let frames = stream::iter([Err::<Bytes, HttpError>(HttpError::new(404).message("no such file"))]);
        let body = ctx.catch_byte_stream(frames)?;
        let mut response = Response::new(Body::new(body));
        if req.uri().path() == "/guarded" {
            response.extensions_mut().insert(FirstFrame);
        }
        Ok(response)
    })
    .await;
    let reply = fetch(addr, "GET", "/guarded").await;
    assert!(reply.starts_with("HTTP/1.1 404 Not Found"), "{reply}");
    assert!(reply.ends_with(r#"{"status":404,"error":"Not Found","message":"no such file"}"#), "{reply}");
    // Without it, the head is already decided: hyper cuts the connection (it had not
    // flushed anything yet), and the client gets no error response at all.
    let reply = fetch(addr, "GET", "/unguarded").await;
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(!reply.contains("404"), "{reply}");
}

#[tokio::test]
async fn a_client_leaving_an_endless_stream_closes_it_and_aborts_tasks() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let task_finished = Arc::new(AtomicBool::new(false));
    let (c, t) = (cleaned.clone(), task_finished.clone());
    let (addr, mut contexts) = serve(ContextLayer::new(), move |ctx, _| {
        let (c, t) = (c.clone(), t.clone());
        async move {
            ctx.spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                t.store(true, Ordering::SeqCst);
                Ok::<(), HttpError>(())
            });
            let guard = Cleanup(c);
            let events = stream::unfold(guard, |guard| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Some((Ok::<_, Infallible>(Bytes::from_static(b"data: tick\n\n")), guard))
            });
            let mut response = Response::new(Body::new(ctx.catch_byte_stream(events)?));
            response.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            Ok(response)
        }
    })
    .await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /sse HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let mut buf = [0_u8; 1024];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("text/event-stream"));
    let (ctx, events) = contexts.recv().await.unwrap();
    drop(client);
    assert_eq!(done(&ctx).await, Outcome::Closed);
    assert_eq!(*events.lock().unwrap(), ["end", "close"]);
    assert!(cleaned.load(Ordering::SeqCst));
    tokio::task::yield_now().await;
    assert!(!task_finished.load(Ordering::SeqCst));
}

#[tokio::test]
async fn bodies_of_every_shape_finish() {
    let (addr, mut contexts) = serve(ContextLayer::new(), |_, req| async move {
        let body = match req.uri().path() {
            "/empty" => Body::empty(),
            "/full" => Body::from("full body"),
            "/chunked" => {
                let chunks = stream::iter(
                    ["a", "b", "c"].map(|c| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(c)))),
                );
                Body::new(StreamBody::new(chunks))
            }
            "/trailers" => {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", "abc".parse().unwrap());
                let frames = stream::iter([
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"with trailers"))),
                    Ok(http_body::Frame::trailers(trailers)),
                ]);
                Body::new(StreamBody::new(frames))
            }
            "/no-content" => {
                return Ok(Response::builder().status(204).body(Body::from("set by mistake")).unwrap());
            }
            _ => return Ok(Response::builder().status(304).body(Body::from("set by mistake")).unwrap()),
        };
        Ok(Response::new(body))
    })
    .await;
    let cases = [
        ("GET", "/empty", "content-length: 0", ""),
        ("GET", "/full", "content-length: 9", "full body"),
        ("GET", "/chunked", "transfer-encoding: chunked", "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"),
        ("GET", "/trailers", "transfer-encoding: chunked", "with trailers"),
        ("HEAD", "/chunked", "HTTP/1.1 200 OK", "\r\n\r\n"),
        ("GET", "/no-content", "HTTP/1.1 204 No Content", "\r\n\r\n"),
        ("GET", "/not-modified", "HTTP/1.1 304 Not Modified", "\r\n\r\n"),
    ];
    for (method, path, head_has, ends_with) in cases {
        let reply = fetch(addr, method, path).await;
        assert!(reply.contains(head_has), "{method} {path}: {reply}");
        assert!(reply.ends_with(ends_with) || reply.contains(ends_with), "{method} {path}: {reply}");
        assert!(!reply.contains("set by mistake"), "{method} {path}: {reply}");
        let (ctx, events) = contexts.recv().await.unwrap();
        assert_eq!(done(&ctx).await, Outcome::Finished, "{method} {path}");
        assert_eq!(*events.lock().unwrap(), ["end", "finish"], "{method} {path}");
    }
}

#[tokio::test]
async fn a_slow_client_does_not_make_the_server_buffer_the_stream() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 4096; // 256 MiB if it were all produced
    let produced = Arc::new(AtomicUsize::new(0));
    let p = produced.clone();
    let (addr, mut contexts) = serve(ContextLayer::new().first_frame(true), move |ctx, _| {
        let p = p.clone();
        async move {
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let chunks = stream::iter(0..CHUNKS).map(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(chunk.clone())
            });
            Ok(Response::new(Body::new(ctx.catch_byte_stream(chunks)?)))
        }
    })
    .await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    // Read 1 MiB, then stop reading for a while.
    let mut read = 0;
    let mut buf = vec![0_u8; 64 * 1024];
    while read < 1024 * 1024 {
        read += client.read(&mut buf).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let while_paused = produced.load(Ordering::SeqCst);
    // Socket buffers on loopback may hold several MiB; the stream must not run ahead
    // to anything like its 256 MiB.
    assert!(
        while_paused * CHUNK < 32 * 1024 * 1024,
        "produced {while_paused} chunks while the client paused"
    );
    drop(client);
    let (ctx, _) = contexts.recv().await.unwrap();
    assert_eq!(done(&ctx).await, Outcome::Closed);
    assert!(produced.load(Ordering::SeqCst) < CHUNKS);
}

/// The same first-frame failure under axum, whose body type wraps every body error.
#[tokio::test]
async fn first_frame_under_axum_renders_the_streams_own_error_once() {
    use axum::routing::get;
    let events: Events = Arc::default();
    let e = events.clone();
    let app = axum::Router::new()
        .route(
            "/file",
            get(move |ctx: Context| {
                let e = e.clone();
                async move {
                    let e2 = e.clone();
                    ctx.on_error(move |err| {
                        e2.lock().unwrap().push(format!("error {}", err.status().as_u16()))
                    });
                    ctx.on_finish(move |_| e.lock().unwrap().push("finish".into()));
                    let frames =
                        stream::iter([Err::<Bytes, HttpError>(HttpError::new(404).message("no such file"))]);
                    let mut response = Response::new(Body::new(ctx.catch_byte_stream(frames)?));
                    response.headers_mut().insert("access-control-allow-origin", "*".parse().unwrap());
                    Ok::<_, HttpError>(response)
                }
            }),
        )
        .layer(ContextLayer::new().first_frame(true));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let reply = fetch(addr, "GET", "/file").await;
    assert!(reply.starts_with("HTTP/1.1 404 Not Found"), "{reply}");
    assert!(
        reply.contains("access-control-allow-origin: *"),
        "headers set before the error survive: {reply}"
    );
    assert!(reply.ends_with(r#"{"status":404,"error":"Not Found","message":"no such file"}"#), "{reply}");
    for _ in 0..100 {
        if events.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*events.lock().unwrap(), ["error 404", "finish"]);
}

#[tokio::test]
async fn first_frame_keeps_a_body_that_is_only_trailers() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let svc = ContextLayer::new().first_frame(true).layer(service_fn(
        |_: Request<http_body_util::Empty<Bytes>>| async {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "5".parse().unwrap());
            let frames = stream::iter([Ok::<_, Infallible>(http_body::Frame::trailers(trailers))]);
            Ok::<_, Infallible>(Response::new(StreamBody::new(frames)))
        },
    ));
    let res = svc.oneshot(Request::get("/").body(http_body_util::Empty::new()).unwrap()).await.unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "5");
}

/// One stream item that fails with an I/O error of `kind`, before any data.
fn failing_io(kind: std::io::ErrorKind) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    stream::iter([Err(std::io::Error::new(kind, "no file here: /srv/secret/path"))])
}

#[tokio::test]
async fn first_frame_maps_a_missing_or_forbidden_stream_to_404_and_403() {
    // Toa answers a missing file stream with 404; the I/O error's text (a path) stays
    // hidden, the status's reason is shown.
    for (caught, kind, status, reason) in [
        (true, std::io::ErrorKind::NotFound, 404, "Not Found"),
        (true, std::io::ErrorKind::PermissionDenied, 403, "Forbidden"),
        (false, std::io::ErrorKind::NotFound, 404, "Not Found"),
        (false, std::io::ErrorKind::PermissionDenied, 403, "Forbidden"),
        (true, std::io::ErrorKind::ConnectionRefused, 500, "Internal Server Error"),
    ] {
        let (addr, mut contexts) =
            serve(ContextLayer::new().first_frame(true), move |ctx, _req| async move {
                let body = if caught {
                    Body::new(ctx.catch_byte_stream(failing_io(kind))?)
                } else {
                    Body::new(http_body_util::StreamBody::new(
                        failing_io(kind).map(|r| r.map(http_body::Frame::data)),
                    ))
                };
                Ok(Response::new(body))
            })
            .await;
        let reply = fetch(addr, "GET", "/file").await;
        assert!(reply.starts_with(&format!("HTTP/1.1 {status} {reason}")), "{kind:?} {caught}: {reply}");
        let body = format!(r#"{{"status":{status},"error":"{reason}","message":"{reason}"}}"#);
        assert!(reply.ends_with(&body), "{kind:?} {caught}: {reply}");
        assert!(!reply.contains("/srv/secret"), "{reply}");
        let (ctx, events) = contexts.recv().await.unwrap();
        assert_eq!(done(&ctx).await, Outcome::Finished);
        assert_eq!(*events.lock().unwrap(), [format!("error {reason}"), "end".into(), "finish".into()]);
    }
}

#[tokio::test]
async fn no_content_statuses_send_no_body_and_no_content_headers() {
    // Koa removes Content-Type, Content-Length and Transfer-Encoding for 204 and 304;
    // 205 (reset content) may not carry content either.
    for status in [204_u16, 205, 304] {
        let (addr, _contexts) = serve(ContextLayer::new(), move |_ctx, req| async move {
            let streamed = req.uri().path() == "/stream";
            let body = if streamed {
                Body::new(http_body_util::StreamBody::new(stream::iter([Ok::<_, Infallible>(
                    http_body::Frame::data(Bytes::from("not sent")),
                )])))
            } else {
                Body::from("not sent")
            };
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain"));
            response.headers_mut().insert("x-kept", HeaderValue::from_static("yes"));
            Ok(response)
        })
        .await;
        for path in ["/full", "/stream"] {
            let reply = fetch(addr, "GET", path).await;
            let (head, body) = reply.split_once("\r\n\r\n").unwrap();
            let head = head.to_ascii_lowercase();
            assert!(head.starts_with(&format!("http/1.1 {status}")), "{status} {path}: {reply}");
            assert!(head.contains("x-kept: yes"), "{reply}");
            assert!(!head.contains("content-type"), "{status} {path}: {reply}");
            assert!(!head.contains("transfer-encoding"), "{status} {path}: {reply}");
            assert!(!head.contains("content-length") || head.contains("content-length: 0"), "{reply}");
            assert_eq!(body, "", "{status} {path}: {reply}");
        }
    }
}
