//! Lifecycle against a real hyper server on 127.0.0.1 with a real client: Finish for
//! complete responses, Close when the client leaves mid-handler or mid-body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{Layer, service_fn};
use tower_context::body::Body;
use tower_context::{BoxError, Context, ContextLayer, HttpError, Outcome};

type Events = Arc<Mutex<Vec<&'static str>>>;

/// Serves `ContextLayer` around a handler with a plain hyper-util server; every
/// request's Context is sent on the returned channel with its event log.
async fn server<F, Fut>(handler: F) -> (SocketAddr, mpsc::UnboundedReceiver<(Context, Events)>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, HttpError>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = ContextLayer::new().layer(service_fn(move |req: Request<Incoming>| {
        let ctx = req.extensions().get::<Context>().cloned().unwrap();
        let events: Events = Arc::default();
        for (name, register) in [("end", 0), ("finish", 1), ("close", 2)] {
            let e = events.clone();
            let push = move |_: &Context| e.lock().unwrap().push(name);
            match register {
                0 => ctx.on_end(push),
                1 => ctx.on_finish(push),
                _ => ctx.on_close(push),
            }
        }
        let _ = tx.send((ctx, events));
        handler(req)
    }));
    crate::common::spawn_hyper(listener, svc);
    (addr, rx)
}

/// Reads from the socket until `needle` has been seen.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before {needle:?}; got {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

async fn done(ctx: &Context) -> Outcome {
    tokio::time::timeout(Duration::from_secs(5), ctx.done()).await.expect("the request completes")
}

#[tokio::test]
async fn complete_responses_finish_on_a_kept_alive_connection() {
    let (addr, mut contexts) = server(|req| async move {
        let body = if req.uri().path() == "/stream" {
            let chunks = futures_util::stream::iter(
                ["a", "b", "c"].map(|c| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(c)))),
            );
            Body::new(StreamBody::new(chunks))
        } else {
            Body::new(Full::new(Bytes::from_static(b"0123456789")))
        };
        Ok(Response::new(body))
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for (path, last_bytes) in [("/", "0123456789"), ("/stream", "\r\n0\r\n\r\n"), ("/", "0123456789")] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let reply = read_until(&mut stream, last_bytes).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        let (ctx, events) = contexts.recv().await.unwrap();
        assert_eq!(done(&ctx).await, Outcome::Finished, "{path}");
        assert_eq!(*events.lock().unwrap(), ["end", "finish"], "{path}");
        assert!(ctx.is_ended() && ctx.is_finished() && !ctx.is_closed());
    }
}

#[tokio::test]
async fn head_requests_finish_without_a_body() {
    let (addr, mut contexts) = server(|_| async { Ok(Response::new(Body::from("twelve bytes"))) }).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"HEAD / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let reply = read_until(&mut stream, "\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("content-length: 12"), "{reply}");
    let (ctx, events) = contexts.recv().await.unwrap();
    assert_eq!(done(&ctx).await, Outcome::Finished);
    assert_eq!(*events.lock().unwrap(), ["end", "finish"]);
}

#[tokio::test]
async fn a_client_that_leaves_mid_handler_closes_the_request() {
    let after_await = Arc::new(AtomicBool::new(false));
    let task_ran = Arc::new(AtomicBool::new(false));
    let (a, t) = (after_await.clone(), task_ran.clone());
    let (addr, mut contexts) = server(move |req| {
        let (a, t) = (a.clone(), t.clone());
        async move {
            let ctx = req.extensions().get::<Context>().cloned().unwrap();
            ctx.spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                t.store(true, Ordering::SeqCst);
                Ok::<(), HttpError>(())
            });
            tokio::time::sleep(Duration::from_secs(30)).await;
            a.store(true, Ordering::SeqCst);
            Ok(Response::new(Body::from("too late")))
        }
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let (ctx, events) = contexts.recv().await.unwrap();
    drop(stream);
    assert_eq!(done(&ctx).await, Outcome::Closed);
    assert_eq!(*events.lock().unwrap(), ["close"], "no End: the head never left");
    assert!(ctx.is_closed() && !ctx.is_ended() && !ctx.is_finished());
    assert!(!after_await.load(Ordering::SeqCst));
    assert!(!task_ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_client_that_leaves_mid_body_closes_the_request_and_drops_the_stream() {
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let (addr, mut contexts) = server(move |_| {
        let guard = Dropped(d.clone());
        async move {
            // An endless stream, one small chunk every 10 ms, like SSE.
            let ticks = futures_util::stream::unfold(guard, |guard| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((
                    Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"data: tick\n\n"))),
                    guard,
                ))
            });
            Ok(Response::new(Body::new(StreamBody::new(ticks))))
        }
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /events HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    read_until(&mut stream, "data: tick").await;
    let (ctx, events) = contexts.recv().await.unwrap();
    assert!(ctx.is_ended());
    drop(stream);
    assert_eq!(done(&ctx).await, Outcome::Closed);
    assert_eq!(*events.lock().unwrap(), ["end", "close"]);
    assert!(dropped.load(Ordering::SeqCst), "the stream was dropped");
}

#[tokio::test]
async fn the_layer_works_with_hypers_http2_too() {
    let (addr, mut contexts) = server(|_| async { Ok(Response::new(Body::from("over h2"))) }).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let request =
        Request::get(format!("http://{addr}/")).body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let res = sender.send_request(request).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "over h2");
    let (ctx, events) = contexts.recv().await.unwrap();
    assert_eq!(done(&ctx).await, Outcome::Finished);
    assert_eq!(*events.lock().unwrap(), ["end", "finish"]);
    assert_eq!(ctx.version(), http::Version::HTTP_2);
}

/// A streamed body (no exact size of its own) with a `Content-Length` set by hand,
/// as a file service sets it: the server frames the body by that length.
fn framed(declared: &'static str, chunks: &'static [&'static str]) -> Response<Body> {
    let frames = futures_util::stream::iter(
        chunks.iter().map(|c| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(c.as_bytes())))),
    );
    Response::builder().header("content-length", declared).body(Body::new(StreamBody::new(frames))).unwrap()
}

/// All the declared bytes sent is a finished response, though the server stops
/// polling the body there, before it could say it is at its end; more than declared
/// is cut there by the server, and is finished too (the client got its response).
#[tokio::test]
async fn a_streamed_body_framed_by_its_content_length_finishes_once_that_much_is_sent() {
    let (addr, mut contexts) = server(|req| async move {
        Ok(match req.uri().path() {
            "/exact" => framed("6", &["abc", "def"]),
            _ => framed("3", &["abcdef"]),
        })
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for (path, last) in [("/exact", "abcdef"), ("/longer", "\r\n\r\nabc")] {
        stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes()).await.unwrap();
        let reply = read_until(&mut stream, last).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        let (ctx, events) = contexts.recv().await.unwrap();
        assert_eq!(done(&ctx).await, Outcome::Finished, "{path}");
        assert_eq!(*events.lock().unwrap(), ["end", "finish"], "{path}");
    }
}

/// A body that ends before the length it declared (a file cut short while it was
/// being sent, say) leaves the client with a cut response: that is an error, told
/// to the listeners, and the request closes; it does not finish.
#[tokio::test]
async fn a_body_that_ends_short_of_its_content_length_is_an_error_and_closes() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    let (addr, mut contexts) = server(move |req| {
        let e = e.clone();
        let ctx = req.extensions().get::<Context>().cloned().unwrap();
        ctx.on_error(move |err| e.lock().unwrap().push(format!("{} {}", err.status().as_u16(), err)));
        async { Ok(framed("10", &["hello"])) }
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let (ctx, events) = contexts.recv().await.unwrap();
    // The server cuts the connection (hyper, before it even flushed the head): the
    // client never gets a whole response.
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.is_empty() || reply.ends_with("\r\n\r\nhello"), "{reply}");
    assert_eq!(done(&ctx).await, Outcome::Closed);
    assert_eq!(*events.lock().unwrap(), ["end", "close"]);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("500 "), "{errors:?}");
}
