//! `Connection` as requests see it: through `Context::connection`, as an axum
//! extractor, with params kept between requests; under `tower_context::serve` and
//! under axum's own server.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use http::Request;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tower::ServiceExt;
use tower_context::{Connection, ConnectionKind, Context, ContextLayer};

const BOUND: Duration = Duration::from_secs(5);

/// What a handler sees of its connection, through the context and the extractor.
async fn describe(ctx: Context, conn: Connection) -> axum::Json<Value> {
    let from_ctx = ctx.connection().expect("the context knows the connection");
    assert_eq!(from_ctx, &conn, "context and extractor hand out the same connection");
    let visits = conn.params().get("visits").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
    conn.params().insert("visits", visits);
    let age = SystemTime::now().duration_since(conn.connected_at()).unwrap_or_default();
    axum::Json(json!({
        "id": conn.id(),
        "kind": conn.kind().to_string(),
        "total": conn.total(),
        "pending": conn.pending(),
        "message_id": conn.message_id(),
        "fingerprint": conn.fingerprint().map(|f| f.to_string()),
        "visits": visits,
        "age_ms": age.as_millis() as u64,
        "remote": conn.remote_addr().to_string(),
        "local": conn.local_addr().to_string(),
        "destroyed": conn.is_destroyed(),
    }))
}

fn app() -> Router {
    Router::new()
        .route("/", get(describe))
        .route("/maybe", get(|conn: Option<Connection>| async move { conn.map_or("none", |_| "some") }))
        .layer(ContextLayer::new())
}

struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client { stream: BufReader::new(TcpStream::connect(addr).await.unwrap()) }
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.get_ref().local_addr().unwrap()
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await.unwrap();
        timeout(BOUND, async {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.unwrap();
            let status = line.split(' ').nth(1).unwrap().parse().unwrap();
            let mut len = 0;
            loop {
                line.clear();
                self.stream.read_line(&mut line).await.unwrap();
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                if let Some((name, value)) = trimmed.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    len = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            self.stream.read_exact(&mut body).await.unwrap();
            (status, String::from_utf8(body).unwrap())
        })
        .await
        .expect("a response")
    }

    async fn json(&mut self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

#[tokio::test]
async fn under_serve_the_context_and_the_extractor_see_the_whole_record() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tower_context::serve(listener, app()).into_future());

    let mut client = Client::connect(addr).await;
    let first = client.json("/").await;
    let second = client.json("/").await;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["kind"], "http1");
    assert_eq!((first["total"].as_u64(), second["total"].as_u64()), (Some(1), Some(2)));
    assert_eq!(first["pending"], 1);
    assert_eq!(second["message_id"], format!("{}.2", first["id"].as_str().unwrap()));
    assert_eq!(first["fingerprint"].as_str().map(str::len), Some(32));
    assert_eq!((first["visits"].as_u64(), second["visits"].as_u64()), (Some(1), Some(2)), "params persist");
    assert!(first["age_ms"].as_u64().unwrap() < 5_000);
    assert_eq!(first["remote"], client.local_addr().to_string());
    assert_eq!(first["local"], addr.to_string());
    assert_eq!(first["destroyed"], false);
    assert_eq!(client.get("/maybe").await.1, "some");

    // Params belong to the connection, not the client.
    let mut other = Client::connect(addr).await;
    let fresh = other.json("/").await;
    assert_ne!(fresh["id"], first["id"]);
    assert_eq!(fresh["visits"], 1);
}

#[tokio::test]
async fn under_axums_server_every_request_on_a_socket_shares_its_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = app().into_make_service_with_connect_info::<Connection>();
    tokio::spawn(async move { axum::serve(listener, service).await });

    let mut client = Client::connect(addr).await;
    let first = client.json("/").await;
    let second = client.json("/").await;
    assert_eq!(first["id"], second["id"]);
    assert_eq!((first["visits"].as_u64(), second["visits"].as_u64()), (Some(1), Some(2)));
    assert_eq!(first["remote"], client.local_addr().to_string());
    assert_eq!(first["local"], addr.to_string());
    // What axum's server does not provide (documented): counters, kind, fingerprint.
    assert_eq!(first["kind"], "unknown");
    assert_eq!(second["total"], 0);
    assert_eq!(second["message_id"], Value::Null);
    assert_eq!(second["fingerprint"], Value::Null);

    let mut other = Client::connect(addr).await;
    assert_ne!(other.json("/").await["id"], first["id"]);
}

#[tokio::test]
async fn without_a_server_the_extractor_refuses_and_the_option_is_none() {
    let response = app().oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 500);
    let response =
        app().oneshot(Request::get("/maybe").body(axum::body::Body::empty()).unwrap()).await.unwrap();
    let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"none");
}

#[tokio::test]
async fn a_connection_made_by_hand_reaches_the_context() {
    let conn = Connection::new("10.0.0.1:4000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
    let mut request = Request::get("/").body(axum::body::Body::empty()).unwrap();
    request.extensions_mut().insert(conn.clone());
    let response = app().oneshot(request).await.unwrap();
    let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], conn.id());
    assert_eq!(body["remote"], "10.0.0.1:4000");
    assert_eq!(conn.kind(), ConnectionKind::Unknown);
    assert_eq!(conn.params().get("visits"), Some(Value::from(1)));
}
