//! `tower_context::serve` against real clients on 127.0.0.1: connections shared by
//! keep-alive and HTTP/2 requests, the registry and its hooks, destroy, the
//! per-connection request limit, fingerprints, graceful shutdown, and bad clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::timeout;
use tower_context::connection::Fingerprint;
use tower_context::server::Serve;
use tower_context::{Connection, Connections};

/// Bounds every wait in these tests; never what a test asserts.
const BOUND: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Gate {
    started: mpsc::UnboundedSender<String>,
    release: Arc<Semaphore>,
}

async fn info(conn: Connection, fingerprint: Option<Extension<Fingerprint>>) -> Json<Value> {
    Json(json!({
        "id": conn.id(),
        "kind": conn.kind().as_str(),
        "total": conn.total(),
        "pending": conn.pending(),
        "message_id": conn.message_id(),
        "fingerprint": fingerprint.map(|Extension(f)| f.to_string()),
        "connection_fingerprint": conn.fingerprint().map(|f| f.to_string()),
        "remote": conn.remote_addr().to_string(),
        "local": conn.local_addr().to_string(),
    }))
}

/// Tells the test it started, then waits for the test to release it.
async fn wait(State(gate): State<Gate>, conn: Connection) -> String {
    let _ = gate.started.send(conn.id().to_owned());
    if let Ok(permit) = gate.release.acquire().await {
        permit.forget();
    }
    String::from("released")
}

async fn destroy(conn: Connection) -> &'static str {
    conn.destroy();
    "bye"
}

async fn boom() -> &'static str {
    panic!("handler panicked on purpose")
}

/// Polls of `/endless`'s body, whose answer is never ready: hyper polls the body of
/// a response in flight each time the connection's task wakes.
static ENDLESS_POLLS: AtomicUsize = AtomicUsize::new(0);

struct Endless;

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        ENDLESS_POLLS.fetch_add(1, Ordering::SeqCst);
        std::task::Poll::Pending
    }
}

async fn endless() -> axum::response::Response {
    axum::response::Response::new(axum::body::Body::new(Endless))
}

struct Harness {
    addr: SocketAddr,
    connections: Connections,
    started: mpsc::UnboundedReceiver<String>,
    release: Arc<Semaphore>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Harness {
    async fn start(configure: impl FnOnce(Serve<Router>) -> Serve<Router>) -> Harness {
        let (started_tx, started) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let gate = Gate { started: started_tx, release: release.clone() };
        let app = Router::new()
            .route("/", get(info))
            .route("/wait", get(wait))
            .route("/destroy", get(destroy))
            .route("/panic", get(boom))
            .route("/endless", get(endless))
            .with_state(gate);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = configure(tower_context::serve(listener, app)).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        let connections = server.connections();
        let task = tokio::spawn(server.into_future());
        Harness { addr, connections, started, release, stop: Some(stop), task }
    }

    async fn started(&mut self) -> String {
        timeout(BOUND, self.started.recv()).await.expect("a handler to start").unwrap()
    }

    async fn raw(&self) -> Raw {
        Raw { stream: BufReader::new(TcpStream::connect(self.addr).await.unwrap()) }
    }

    async fn h2(&self) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
        self.h2_with_task().await.0
    }

    /// [`h2`](Self::h2), with the client connection's task: it ends once the client
    /// has seen the connection close.
    async fn h2_with_task(
        &self,
    ) -> (hyper::client::conn::http2::SendRequest<Empty<Bytes>>, tokio::task::JoinHandle<hyper::Result<()>>)
    {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        (send, tokio::spawn(conn))
    }

    /// Waits until the registry holds `n` connections.
    async fn wait_for_len(&self, n: usize) {
        timeout(BOUND, async {
            while self.connections.len() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("registry never reached {n}, has {}", self.connections.len()));
    }
}

/// A hand-driven HTTP/1.1 client.
struct Raw {
    stream: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn get_request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n{extra}\r\n")
}

impl Raw {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// One response, or `None` if the server closed the connection first.
    async fn response(&mut self) -> Option<Response> {
        timeout(BOUND, self.read_response()).await.expect("a response or a close")
    }

    async fn read_response(&mut self) -> Option<Response> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.ok()?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':')?;
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Response { status, headers, body: String::from_utf8(body).unwrap() })
    }

    async fn get(&mut self, path: &str) -> Response {
        self.send(get_request(path, "").as_bytes()).await;
        self.response().await.expect("a response")
    }

    /// Whether the server closes the socket (EOF or reset) before sending anything.
    async fn closed_by_server(&mut self) -> bool {
        let mut buf = [0; 256];
        match timeout(BOUND, self.stream.read(&mut buf)).await.expect("the server to close the socket") {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.get_ref().local_addr().unwrap()
    }
}

async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<(StatusCode, String), hyper::Error> {
    send.ready().await?;
    let request = Request::get(format!("http://test{path}")).body(Empty::new()).unwrap();
    let response = send.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8(body.to_vec()).unwrap()))
}

#[tokio::test]
async fn keep_alive_requests_share_a_connection_and_new_sockets_get_new_ones() {
    let server = Harness::start(|s| s).await;
    let mut client = server.raw().await;
    let first = client.get("/").await.json();
    let second = client.get("/").await.json();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["kind"], "http1");
    assert_eq!((first["total"].as_u64(), second["total"].as_u64()), (Some(1), Some(2)));
    assert_eq!(first["pending"], 1, "the request itself is in flight");
    assert_eq!(second["pending"], 1, "the first request is no longer pending");
    let id = first["id"].as_str().unwrap();
    assert_eq!(first["message_id"], format!("{id}.1"));
    assert_eq!(second["message_id"], format!("{id}.2"));
    assert_eq!(first["remote"], client.local_addr().to_string());
    assert_eq!(first["local"], server.addr.to_string());

    let mut other = server.raw().await;
    let third = other.get("/").await.json();
    assert_ne!(third["id"], first["id"]);
    assert_eq!(third["total"], 1);
    assert_eq!(server.connections.len(), 2);
}

#[tokio::test]
async fn pipelined_requests_share_a_connection() {
    let server = Harness::start(|s| s).await;
    let mut client = server.raw().await;
    let two = format!("{}{}", get_request("/", ""), get_request("/", ""));
    client.send(two.as_bytes()).await;
    let first = client.response().await.unwrap().json();
    let second = client.response().await.unwrap().json();
    assert_eq!(first["id"], second["id"]);
    assert_eq!((first["total"].as_u64(), second["total"].as_u64()), (Some(1), Some(2)));
}

#[tokio::test]
async fn http2_streams_share_a_connection() {
    let server = Harness::start(|s| s).await;
    let mut send = server.h2().await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (status, body) = h2_get(&mut send, "/").await.unwrap();
        assert_eq!(status, 200);
        seen.push(serde_json::from_str::<Value>(&body).unwrap());
    }
    assert!(seen.iter().all(|v| v["id"] == seen[0]["id"] && v["kind"] == "http2"));
    assert_eq!(seen.iter().map(|v| v["total"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);

    let mut other = server.h2().await;
    let (_, body) = h2_get(&mut other, "/").await.unwrap();
    assert_ne!(serde_json::from_str::<Value>(&body).unwrap()["id"], seen[0]["id"]);
}

#[tokio::test]
async fn registry_tracks_open_connections_and_hooks_fire() {
    let (opened_tx, mut opened) = mpsc::unbounded_channel::<Connection>();
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<Connection>();
    let server = Harness::start(move |s| {
        s.on_connection_open(move |c| {
            let _ = opened_tx.send(c.clone());
        })
        .on_connection_close(move |c| {
            let _ = closed_tx.send(c.clone());
        })
    })
    .await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    let a_id = a.get("/").await.json()["id"].as_str().unwrap().to_owned();
    let b_id = b.get("/").await.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(server.connections.len(), 2);
    let mut ids: Vec<String> = server.connections.iter().map(|c| c.id().to_owned()).collect();
    ids.sort();
    let mut expected = vec![a_id.clone(), b_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let conn = server.connections.get(&a_id).unwrap();
    assert_eq!(conn.remote_addr(), a.local_addr());
    assert_eq!(conn.total(), 1);

    let first_opened = timeout(BOUND, opened.recv()).await.unwrap().unwrap();
    assert!(first_opened.id() == a_id || first_opened.id() == b_id);

    drop(a);
    let gone = timeout(BOUND, closed.recv()).await.unwrap().unwrap();
    assert_eq!(gone.id(), a_id);
    assert_eq!(gone.total(), 1);
    assert!(server.connections.get(&a_id).is_none(), "left the registry before the close hook ran");
    assert_eq!(server.connections.len(), 1);
    assert!(server.connections.get(&b_id).is_some());
}

#[tokio::test]
async fn destroy_finishes_the_request_in_flight_then_closes() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<String>();
    let mut server = Harness::start(move |s| {
        s.on_connection_close(move |c| {
            let _ = closed_tx.send(c.id().to_owned());
        })
    })
    .await;
    let mut client = server.raw().await;
    client.send(get_request("/wait", "").as_bytes()).await;
    let id = server.started().await;
    assert!(!server.connections.destroy("no-such-connection"));
    assert!(server.connections.destroy(&id));
    assert!(server.connections.get(&id).unwrap().is_destroyed());

    server.release.add_permits(1);
    let response = client.response().await.expect("the request in flight finishes");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "released");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.closed_by_server().await);
    assert_eq!(timeout(BOUND, closed.recv()).await.unwrap().unwrap(), id);
    assert!(server.connections.get(&id).is_none());
}

#[tokio::test]
async fn a_destroyed_connection_serves_no_more_requests() {
    let server = Harness::start(|s| s).await;
    let mut client = server.raw().await;
    // The second request is already on the wire when the first destroys the connection.
    let two = format!("{}{}", get_request("/destroy", ""), get_request("/", ""));
    client.send(two.as_bytes()).await;
    let response = client.response().await.unwrap();
    assert_eq!(response.body, "bye");
    assert_eq!(response.header("connection"), Some("close"));
    // hyper may have read the pipelined request before the socket was told to shut
    // down; then the server refuses it. Either way the app never sees it.
    if let Some(refused) = client.response().await {
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert!(client.response().await.is_none());
    }
    server.wait_for_len(0).await;
}

#[tokio::test]
async fn a_destroyed_http2_connection_refuses_new_streams() {
    let mut server = Harness::start(|s| s).await;
    let mut send = server.h2().await;
    let mut in_flight = send.clone();
    let first = tokio::spawn(async move { h2_get(&mut in_flight, "/wait").await });
    let id = server.started().await;
    assert!(server.connections.destroy(&id));

    // Refused by GOAWAY, or by the server with 503 if it got through: never served.
    if let Ok((status, _)) = h2_get(&mut send, "/").await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    server.release.add_permits(1);
    let (status, body) = timeout(BOUND, first).await.unwrap().unwrap().unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "released"));
    server.wait_for_len(0).await;
}

/// Starts `n` requests to /wait on one HTTP/2 connection and waits until all run.
async fn occupy(
    server: &mut Harness,
    send: &hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<(StatusCode, String), hyper::Error>>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move { h2_get(&mut send, "/wait").await }));
    }
    for _ in 0..n {
        server.started().await;
    }
    tasks
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Result<(StatusCode, String), hyper::Error>>>) {
    for task in tasks {
        let (status, _) = timeout(BOUND, task).await.unwrap().unwrap().unwrap();
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn the_sixth_simultaneous_request_gets_429_by_default() {
    let mut server = Harness::start(|s| s).await;
    let mut send = server.h2().await;
    let tasks = occupy(&mut server, &send, 5).await;
    let (status, body) = h2_get(&mut send, "/").await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("you have too many pending requests"), "{body}");

    // Another connection has its own allowance.
    let mut other = server.h2().await;
    assert_eq!(h2_get(&mut other, "/").await.unwrap().0, 200);

    server.release.add_permits(5);
    finish(tasks).await;
    let (status, body) = h2_get(&mut send, "/").await.unwrap();
    assert_eq!(status, 200);
    // Five served, one refused (not counted), this one.
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["total"], 6);
}

#[tokio::test]
async fn the_limit_is_configurable() {
    let mut server = Harness::start(|s| s.simultaneous_requests(2)).await;
    let mut send = server.h2().await;
    let tasks = occupy(&mut server, &send, 2).await;
    assert_eq!(h2_get(&mut send, "/").await.unwrap().0, StatusCode::TOO_MANY_REQUESTS);
    server.release.add_permits(2);
    finish(tasks).await;
    assert_eq!(h2_get(&mut send, "/").await.unwrap().0, 200);
}

#[tokio::test]
async fn the_limit_can_be_switched_off() {
    let mut server = Harness::start(|s| s.simultaneous_requests(None)).await;
    let mut send = server.h2().await;
    let tasks = occupy(&mut server, &send, 8).await;
    let (status, body) = h2_get(&mut send, "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["pending"], 9);
    server.release.add_permits(8);
    finish(tasks).await;
}

fn set_cookie_value(response: &Response) -> Option<String> {
    let cookie = response.header("set-cookie")?;
    let (pair, _) = cookie.split_once(';')?;
    Some(pair.split_once('=')?.1.to_owned())
}

#[tokio::test]
async fn a_new_client_gets_a_random_fingerprint_cookie() {
    let server = Harness::start(|s| s).await;
    let mut client = server.raw().await;
    let response = client.get("/").await;
    let cookie = response.header("set-cookie").expect("a fingerprint cookie").to_owned();
    for attribute in ["HttpOnly", "Path=/", "Max-Age=3600", "Expires="] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let value = set_cookie_value(&response).unwrap();
    assert!(cookie.starts_with("sessionID="));
    assert_eq!(value.len(), 32);
    let body = response.json();
    assert_eq!(body["fingerprint"], value.as_str());
    assert_eq!(body["connection_fingerprint"], value.as_str());

    // Same headers, another client: another fingerprint (not derived from headers).
    let mut stranger = server.raw().await;
    let other = set_cookie_value(&stranger.get("/").await).unwrap();
    assert_ne!(other, value);

    // Coming back with the cookie, on a new connection: recognized, no new cookie.
    let mut back = server.raw().await;
    back.send(get_request("/", &format!("cookie: a=b; sessionID={value}\r\n")).as_bytes()).await;
    let response = back.response().await.unwrap();
    assert!(response.header("set-cookie").is_none());
    assert_eq!(response.json()["fingerprint"], value.as_str());
    // Beside a cookie that is not UTF-8 (another app's, on the same domain): the
    // same, and no new cookie over it (under sessions, that would log the user out).
    let mut request =
        get_request("/", &format!("cookie: sessionID={value}; pref=caf\u{e9}\r\n")).into_bytes();
    let at = request.windows(2).position(|w| w == "\u{e9}".as_bytes()).unwrap();
    request.splice(at..at + 2, [0xE9]);
    back.send(&request).await;
    let response = back.response().await.unwrap();
    assert!(response.header("set-cookie").is_none());
    assert_eq!(response.json()["fingerprint"], value.as_str());
}

#[tokio::test]
async fn the_header_is_read_and_bad_values_are_replaced() {
    let server = Harness::start(|s| s).await;
    let mut client = server.raw().await;
    let good = "0123456789abcdef-from-header";
    client.send(get_request("/", &format!("x-sessionid: {good}\r\n")).as_bytes()).await;
    let response = client.response().await.unwrap();
    assert_eq!(response.json()["fingerprint"], good);
    assert_eq!(set_cookie_value(&response).as_deref(), Some(good));

    let oversized = "a".repeat(200);
    for bad in ["short", "has<angle>brackets-0123456789", oversized.as_str()] {
        for header in [format!("cookie: sessionID={bad}\r\n"), format!("x-sessionid: {bad}\r\n")] {
            client.send(get_request("/", &header).as_bytes()).await;
            let response = client.response().await.unwrap();
            let fingerprint = response.json()["fingerprint"].as_str().unwrap().to_owned();
            assert_ne!(fingerprint, bad);
            assert_eq!(fingerprint.len(), 32);
            assert_eq!(set_cookie_value(&response).as_deref(), Some(fingerprint.as_str()));
        }
    }
}

#[tokio::test]
async fn the_fingerprint_cookie_is_configurable() {
    let server = Harness::start(|s| s.fingerprint_cookie("sid").fingerprint_max_age(None)).await;
    let mut client = server.raw().await;
    let response = client.get("/").await;
    let cookie = response.header("set-cookie").unwrap();
    assert!(cookie.starts_with("sid="), "{cookie}");
    assert!(!cookie.contains("Max-Age") && !cookie.contains("Expires"), "{cookie}");

    let value = set_cookie_value(&response).unwrap();
    client.send(get_request("/", &format!("cookie: sid={value}\r\n")).as_bytes()).await;
    let response = client.response().await.unwrap();
    assert!(response.header("set-cookie").is_none());
    assert_eq!(response.json()["fingerprint"], value.as_str());
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let mut server = Harness::start(|s| s).await;
    let mut idle = server.raw().await;
    assert_eq!(idle.get("/").await.status, 200);
    let mut busy = server.raw().await;
    busy.send(get_request("/wait", "").as_bytes()).await;
    server.started().await;

    let _ = server.stop.take().unwrap().send(());
    assert!(idle.closed_by_server().await, "an idle keep-alive connection closes at once");
    assert!(!server.task.is_finished(), "waits for the request in flight");
    server.release.add_permits(1);
    let response = busy.response().await.unwrap();
    assert_eq!((response.status, response.body.as_str()), (200, "released"));
    timeout(BOUND, &mut server.task).await.unwrap().unwrap().unwrap();
    assert!(server.connections.is_empty());
    assert!(TcpStream::connect(server.addr).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn shutdown_drops_what_is_still_open_when_its_timeout_runs_out() {
    let mut server = Harness::start(|s| s.shutdown_timeout(Duration::from_millis(200))).await;
    let mut busy = server.raw().await;
    busy.send(get_request("/wait", "").as_bytes()).await;
    server.started().await;

    // The request is never released: past the timeout its socket is dropped, and
    // the server resolves all the same.
    let _ = server.stop.take().unwrap().send(());
    timeout(BOUND, &mut server.task).await.expect("the server resolved").unwrap().unwrap();
    assert!(busy.closed_by_server().await, "closed without an answer");
    assert!(server.connections.is_empty());
}

#[tokio::test]
async fn app_errors_become_500_and_the_connection_lives_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        if request.uri().path() == "/fail" {
            Err(std::io::Error::other("boom"))
        } else {
            Ok(http::Response::new(String::from("fine")))
        }
    });
    tokio::spawn(tower_context::serve(listener, app).into_future());
    let mut client = Raw { stream: BufReader::new(TcpStream::connect(addr).await.unwrap()) };
    let response = client.get("/fail").await;
    assert_eq!(response.status, 500);
    assert!(!response.body.contains("boom"), "not exposed: {}", response.body);
    assert_eq!(client.get("/ok").await.body, "fine");
}

#[tokio::test]
async fn a_panicking_handler_costs_only_its_connection() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<u64>();
    let server = Harness::start(move |s| {
        s.on_connection_close(move |c| {
            let _ = closed_tx.send(c.total());
        })
    })
    .await;
    let mut victim = server.raw().await;
    victim.send(get_request("/panic", "").as_bytes()).await;
    assert!(victim.response().await.is_none());
    assert_eq!(timeout(BOUND, closed.recv()).await.unwrap(), Some(1));
    server.wait_for_len(0).await;
    assert_eq!(server.raw().await.get("/").await.status, 200);
}

// ---- Bad input and faults -------------------------------------------------------

const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_client_that_sends_nothing_is_disconnected() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<u64>();
    let server = Harness::start(move |s| {
        s.header_read_timeout(SHORT).on_connection_close(move |c| {
            let _ = closed_tx.send(c.total());
        })
    })
    .await;
    let mut silent = server.raw().await;
    server.wait_for_len(1).await;
    // Others are served while it sits there.
    assert_eq!(server.raw().await.get("/").await.status, 200);
    assert!(silent.closed_by_server().await);
    // Two closes: the other client (when dropped above) and the silent one, which never ran a request.
    let mut totals = vec![
        timeout(BOUND, closed.recv()).await.unwrap().unwrap(),
        timeout(BOUND, closed.recv()).await.unwrap().unwrap(),
    ];
    totals.sort();
    assert_eq!(totals, [0, 1]);
    server.wait_for_len(0).await;
}

#[tokio::test]
async fn a_half_written_request_is_dropped_when_its_time_runs_out() {
    let server = Harness::start(|s| s.header_read_timeout(SHORT)).await;
    let mut half = server.raw().await;
    half.send(b"GET / HTTP/1.1\r\nhost: test\r\nx-partial: ye").await;
    assert_eq!(server.raw().await.get("/").await.status, 200);
    assert!(half.closed_by_server().await);
    server.wait_for_len(0).await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_is_cleaned_up() {
    let server = Harness::start(|s| s).await;
    let mut half = server.raw().await;
    half.send(b"GET / HTTP/1.1\r\nhost: te").await;
    server.wait_for_len(1).await;
    drop(half);
    server.wait_for_len(0).await;
    // A half-sent body, then gone: the same.
    let mut upload = server.raw().await;
    upload.send(b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\nonly part").await;
    drop(upload);
    server.wait_for_len(0).await;
    assert_eq!(server.raw().await.get("/").await.status, 200);
}

/// Drips a request head one byte every 50 ms (4 s in all) after `before` (sent at
/// once and answered), and checks the server closes the socket mid-drip.
async fn slow_loris(before: &str) {
    let server = Harness::start(|s| s.header_read_timeout(SHORT)).await;
    let mut client = server.raw().await;
    if !before.is_empty() {
        client.send(before.as_bytes()).await;
        assert_eq!(client.response().await.unwrap().status, 200);
    }
    let (mut read, mut write) = client.stream.into_inner().into_split();
    let dripped = Arc::new(AtomicUsize::new(0));
    let counter = dripped.clone();
    let head = b"GET / HTTP/1.1\r\nhost: test\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let dripping = tokio::spawn(async move {
        for byte in head {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(server.raw().await.get("/").await.status, 200, "others are served meanwhile");
    let mut buf = Vec::new();
    let _ = timeout(BOUND, read.read_to_end(&mut buf)).await.expect("the server closes the socket");
    assert!(!String::from_utf8_lossy(&buf).contains("200"), "never served: {buf:?}");
    assert!(dripped.load(Ordering::SeqCst) < head.len(), "closed before the head was complete");
    dripping.abort();
    server.wait_for_len(0).await;
}

#[tokio::test]
async fn a_slow_loris_is_cut_off_while_still_dripping() {
    slow_loris("").await;
}

#[tokio::test]
async fn a_slow_loris_on_a_kept_alive_connection_is_cut_off_too() {
    slow_loris(&get_request("/", "")).await;
}

#[tokio::test]
async fn a_flood_of_short_connections_stays_within_max_connections() {
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (o, p, c) = (open.clone(), peak.clone(), open.clone());
    let server = Harness::start(move |s| {
        s.max_connections(4)
            .header_read_timeout(SHORT)
            .on_connection_open(move |_| {
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
            })
            .on_connection_close(move |_| {
                c.fetch_sub(1, Ordering::SeqCst);
            })
    })
    .await;
    let addr = server.addr;
    let flood: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(addr).await else { return };
                if i % 2 == 0 {
                    let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink).await;
                }
            })
        })
        .collect();
    for task in flood {
        timeout(BOUND, task).await.unwrap().unwrap();
    }
    let mut client = server.raw().await;
    assert_eq!(client.get("/").await.status, 200, "still serving after the flood");
    drop(client);
    server.wait_for_len(0).await;
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=4).contains(&peak), "at most 4 open at once, saw {peak}");
}

#[tokio::test]
async fn at_max_connections_the_longest_idle_connection_makes_room() {
    let (events_tx, mut events) = mpsc::unbounded_channel::<(&'static str, SocketAddr)>();
    let closes = events_tx.clone();
    let server = Harness::start(move |s| {
        s.max_connections(2)
            .on_connection_open(move |c| {
                let _ = events_tx.send(("open", c.remote_addr()));
            })
            .on_connection_close(move |c| {
                let _ = closes.send(("close", c.remote_addr()));
            })
    })
    .await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    assert_eq!(a.get("/").await.status, 200);
    assert_eq!(b.get("/").await.status, 200);
    let mut c = server.raw().await;
    c.send(get_request("/", "").as_bytes()).await;
    let a_addr = a.local_addr();
    let c_addr = c.local_addr();
    // a and b are idle (kept alive, nothing in flight); a the longest: it is closed
    // for c, which is served.
    assert_eq!(c.response().await.unwrap().status, 200);
    assert_eq!(server.connections.evicted(), 1);

    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(timeout(BOUND, events.recv()).await.unwrap().unwrap());
    }
    let close_a = seen.iter().position(|e| *e == ("close", a_addr)).expect("a closed");
    let open_c = seen.iter().position(|e| *e == ("open", c_addr)).expect("c opened");
    assert!(close_a < open_c, "c was served only after a left: {seen:?}");
    drop((a, b));
}

#[tokio::test]
async fn at_max_connections_with_every_slot_busy_a_new_client_gets_a_quick_503() {
    let mut server = Harness::start(|s| s.max_connections(2)).await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    a.send(get_request("/wait", "").as_bytes()).await;
    b.send(get_request("/wait", "").as_bytes()).await;
    server.started().await;
    server.started().await;
    // Both slots hold a request in flight: nothing can be closed for the newcomer.
    let mut c = server.raw().await;
    c.send(get_request("/", "").as_bytes()).await;
    let refused = timeout(BOUND, c.response()).await.unwrap().unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(server.connections.refused(), 1);
    assert_eq!(server.connections.evicted(), 0);
    // The busy ones finish as usual.
    server.release.add_permits(2);
    assert_eq!(a.response().await.unwrap().status, 200);
    assert_eq!(b.response().await.unwrap().status, 200);
}

#[tokio::test]
async fn idle_http2_connections_are_closed_and_free_their_slots() {
    // Two slots, idle after 200 ms: idle HTTP/2 clients cannot hold them.
    let mut harness = Harness::start(|s| s.max_connections(2).idle_timeout(Duration::from_millis(200))).await;
    let (mut first, first_task) = harness.h2_with_task().await;
    let response =
        first.send_request(Request::get("http://test/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let _second = harness.h2().await;
    harness.wait_for_len(2).await;
    // Both go quiet: each is closed (GOAWAY), and the registry empties.
    harness.wait_for_len(0).await;
    // The client sees it closed once its connection task has read the close: the
    // task ends (it would not, on a connection left open).
    // How it ended (a clean close or a reset) is not what is tested.
    let _ = timeout(BOUND, first_task).await.expect("the client saw the connection close").unwrap();
    assert!(first.ready().await.is_err(), "the server closed the idle connection");

    // A request in flight keeps its connection open past the idle time.
    let mut busy = harness.h2().await;
    let pending = busy.send_request(Request::get("http://test/wait").body(Empty::new()).unwrap());
    let waiting = tokio::spawn(pending);
    harness.started().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(harness.connections.len(), 1, "not idle while a request runs");
    harness.release.add_permits(1);
    let response = timeout(BOUND, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), 200);
    // Then idle again: closed.
    harness.wait_for_len(0).await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_once_writes_stop_progressing() {
    // A 1 MiB page, asked for many times over one connection that never reads.
    let page = Bytes::from(vec![b'x'; 1024 * 1024]);
    let app = Router::new().route(
        "/big",
        get(move || {
            let page = page.clone();
            async move { page }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_context::serve(listener, app).write_timeout(Duration::from_millis(300));
    let connections = server.connections();
    tokio::spawn(server.into_future());
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let pipelined = get_request("/big", "").repeat(50);
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    // The responses fill the socket buffers and stop; the connection is dropped.
    timeout(BOUND, async {
        while connections.len() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while !connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stalled connection was closed");
    // Reading now, the client finds the connection cut short: far less than 50 pages.
    let mut got = Vec::new();
    let _ = timeout(BOUND, stream.read_to_end(&mut got)).await;
    assert!(got.len() < 50 * 1024 * 1024, "{} bytes", got.len());
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    // No idle bound here: only the keep-alive pings can find the dead peer.
    let harness = Harness::start(|s| s.idle_timeout(None).http2_keep_alive(Duration::from_millis(200))).await;
    // A peer that opens HTTP/2 (preface and an empty SETTINGS frame), then answers
    // nothing, not even the server's pings, as a vanished client would.
    let mut peer = TcpStream::connect(harness.addr).await.unwrap();
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    harness.wait_for_len(1).await;
    harness.wait_for_len(0).await;

    // A live HTTP/2 client answers the pings and stays.
    let mut live = harness.h2().await;
    let response = live.send_request(Request::get("http://test/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(harness.connections.len(), 1, "a client that answers pings is kept");
    drop(peer);
}

#[tokio::test]
async fn a_huge_cookie_header_is_read_only_as_far_as_the_limit() {
    // About 290 KB: 30,000 pairs, a fingerprint first and another past the limit.
    let filler: String = (0..30_000).map(|i| format!("k{i}=v; ")).collect();
    let server = Harness::start(|s| s).await;
    for (cookie, adopted) in [
        (format!("sessionID=0123456789abcdef0123; {filler}"), true),
        (format!("{filler}sessionID=0123456789abcdef0123"), false),
    ] {
        let mut client = server.raw().await;
        client.send(get_request("/", &format!("cookie: {cookie}\r\n")).as_bytes()).await;
        let response = timeout(BOUND, client.response()).await.unwrap().unwrap();
        assert_eq!(response.status, 200);
        let info: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(info["fingerprint"] == "0123456789abcdef0123", adopted, "{info}");
        // A fingerprint not read from the header is a new one, sent back.
        assert_eq!(response.header("set-cookie").is_some(), !adopted);
    }
}

/// Under `serve`, the session's signed `sessionID` is the fingerprint cookie: the
/// first response sends the session's (not a second, unsigned one), every later
/// request's fingerprint is the session id, and a WebSocket of the same client holds
/// the same session.
#[cfg(all(feature = "sessions", feature = "ws"))]
#[tokio::test]
async fn the_session_id_is_the_fingerprint_and_a_websocket_shares_the_session() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tower_context::chat::Chat;
    use tower_context::chat::ws::WebSocketChat;
    use tower_context::session::Sessions;
    use tower_context::{Context, ContextLayer, HttpError, Keys};

    async fn visits(ctx: Context) -> Result<String, HttpError> {
        let n = ctx.session().get::<u64>("visits").await?.unwrap_or(0) + 1;
        ctx.session().insert("visits", n).await?;
        Ok(n.to_string())
    }
    let connections = Connections::new();
    let app = Router::new()
        .route("/visits", get(visits))
        .route("/fingerprint", get(|Extension(f): Extension<Fingerprint>| async move { f.to_string() }))
        .route("/ws", WebSocketChat::new(Chat::new()).registry(connections.clone()).route())
        .layer(ContextLayer::new().keys(Keys::new(["k"])).sessions(Sessions::memory()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tower_context::serve(listener, app).with_connections(connections.clone()).into_future());

    let mut raw = Raw { stream: BufReader::new(TcpStream::connect(addr).await.unwrap()) };
    let first = raw.get("/visits").await;
    let cookies: Vec<&str> =
        first.headers.iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.as_str()).collect();
    assert_eq!(cookies.len(), 2, "the session's id and signature, no second sessionID: {cookies:?}");
    let id = cookies[0].strip_prefix("sessionID=").unwrap().split(';').next().unwrap().to_owned();
    let sig = cookies[1].strip_prefix("sessionID.sig=").unwrap().split(';').next().unwrap().to_owned();
    let cookie = format!("sessionID={id}; sessionID.sig={sig}");
    raw.send(get_request("/fingerprint", &format!("cookie: {cookie}\r\n")).as_bytes()).await;
    assert_eq!(raw.response().await.unwrap().body, id, "the fingerprint is the session id");

    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (_client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let socket = timeout(BOUND, async {
        loop {
            let found = connections.iter().into_iter().find(|c| c.kind().as_str() == "websocket");
            match found {
                Some(conn) => break conn,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .unwrap();
    let session = socket.session().expect("the upgrade's session is kept");
    assert_eq!(session.get::<u64>("visits").await.unwrap(), Some(1));
    session.insert("visits", 41).await.unwrap();
    session.save().await.unwrap();
    raw.send(get_request("/visits", &format!("cookie: {cookie}\r\n")).as_bytes()).await;
    assert_eq!(raw.response().await.unwrap().body, "42", "what the socket saved, HTTP sees");
}

/// A response in flight (a stream, a long poll) longer than the idle timeout keeps
/// its socket, and the idle timer looks again a whole timeout later: it does not
/// wake the connection every millisecond until the response ends.
#[tokio::test]
async fn a_response_in_flight_past_the_idle_timeout_does_not_wake_its_connection_each_millisecond() {
    let harness = Harness::start(|s| s.idle_timeout(Duration::from_millis(100))).await;
    let mut client = harness.raw().await;
    client.send(get_request("/endless", "").as_bytes()).await;
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let read = timeout(BOUND, client.stream.read_line(&mut head)).await.expect("the head").unwrap();
        assert!(read > 0, "{head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let before = ENDLESS_POLLS.load(Ordering::SeqCst);
    // Ten idle timeouts: the timer fires about ten times, each a wake of the task.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let polls = ENDLESS_POLLS.load(Ordering::SeqCst) - before;
    assert!(polls < 100, "the body was polled {polls} times in ten idle timeouts");
    assert_eq!(harness.connections.len(), 1, "the socket is kept while its response is in flight");
}

/// Timeouts of `Duration::MAX` (what "never" looks like) are kept to a century:
/// hyper adds them to the clock, which would panic in every connection's task.
#[tokio::test]
async fn timeouts_of_duration_max_serve_as_never() {
    let harness = Harness::start(|s| {
        s.header_read_timeout(Duration::MAX)
            .write_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .http2_keep_alive(Duration::MAX)
            .shutdown_timeout(Duration::MAX)
    })
    .await;
    assert_eq!(harness.raw().await.get("/").await.status, 200);
    let mut h2 = harness.h2().await;
    assert_eq!(h2_get(&mut h2, "/").await.unwrap().0, 200);
}
