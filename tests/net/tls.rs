//! Whether a request is https comes from the transport, never from what the client
//! wrote: `serve` terminating TLS (feature `tls`, a certificate made here with
//! rcgen), the `Tls` marker of a server of one's own, against absolute-form request
//! lines and HTTP/2's `:scheme` over cleartext.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto::ring};
use tower::ServiceExt;
use tower_context::connection::Tls;
use tower_context::cookies::Cookie;
use tower_context::{Context, ContextLayer, HttpError, RequestHeadExt};

/// What the app says about the request: its protocol, and whether a cookie set with
/// the defaults came out Secure.
async fn report(ctx: Context) -> Result<String, HttpError> {
    ctx.cookies().set(Cookie::new("theme", "dark"))?;
    let tls = ctx.connection().is_some_and(|c| c.is_tls());
    Ok(format!("{} secure={} tls-connection={tls}", ctx.protocol(), ctx.secure()))
}

fn app() -> Router {
    Router::new()
        .route("/", get(report))
        .route(
            "/secure-cookie",
            get(|ctx: Context| async move {
                ctx.cookies().set(Cookie::build(("sid", "1")).secure(true))?;
                Ok::<_, HttpError>("set")
            }),
        )
        .layer(ContextLayer::new())
}

/// A self-signed certificate for `localhost`, a server config with it (h2 and
/// http/1.1 offered), and a client config that trusts it.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let provider = Arc::new(ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

async fn start(tls: Option<Arc<ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_context::serve(listener, app()).header_read_timeout(Duration::from_secs(2));
    let server = match tls {
        Some(config) => server.tls(config),
        None => server,
    };
    tokio::spawn(async move { server.await });
    addr
}

/// Sends `request` (raw HTTP/1.1) over `io` and reads the reply to the end.
async fn exchange<I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: I,
    request: &str,
) -> String {
    io.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

async fn tls_stream(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(client.clone()).connect(name, tcp).await.unwrap()
}

const GET: &str = "GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn over_tls_a_request_is_https_and_cookies_are_secure() {
    let (server, client) = configs();
    let addr = start(Some(server)).await;
    let reply = exchange(tls_stream(addr, &client).await, GET).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("https secure=true tls-connection=true"), "{reply}");
    assert!(reply.contains("set-cookie: theme=dark; HttpOnly; Secure; Path=/\r\n"), "{reply}");
    // The fingerprint cookie the server sets is unchanged by TLS.
    assert!(reply.contains("set-cookie: sessionID="), "{reply}");

    // A Secure cookie asked for explicitly is allowed over TLS.
    let request = "GET /secure-cookie HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let reply = exchange(tls_stream(addr, &client).await, request).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("set-cookie: sid=1; HttpOnly; Secure; Path=/\r\n"), "{reply}");
}

#[tokio::test]
async fn http2_over_tls_is_https() {
    let (server, client) = configs();
    let addr = start(Some(server)).await;
    let mut client = (*client).clone();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let stream = tls_stream(addr, &Arc::new(client)).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let response = send.send_request(Request::get("https://localhost/").body(Empty::<Bytes>::new()).unwrap());
    let body = response.await.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "https secure=true tls-connection=true");
}

#[tokio::test]
async fn what_the_client_writes_does_not_make_a_request_https() {
    let addr = start(None).await;
    // An absolute-form request line over plain TCP.
    let request = "GET https://localhost/ HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let reply = exchange(TcpStream::connect(addr).await.unwrap(), request).await;
    assert!(reply.ends_with("http secure=false tls-connection=false"), "{reply}");
    assert!(reply.contains("set-cookie: theme=dark; HttpOnly; Path=/\r\n"), "{reply}");
    // A Secure cookie on it is refused, as the cookies module refuses it on http.
    let request =
        "GET https://localhost/secure-cookie HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let reply = exchange(TcpStream::connect(addr).await.unwrap(), request).await;
    assert!(reply.starts_with("HTTP/1.1 500 Internal Server Error"), "{reply}");
    assert!(!reply.contains("set-cookie: sid="), "{reply}");

    // HTTP/2 with `:scheme: https` over cleartext (prior knowledge).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let response = send.send_request(Request::get("https://localhost/").body(Empty::<Bytes>::new()).unwrap());
    let body = response.await.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "http secure=false tls-connection=false");
}

#[tokio::test]
async fn a_failed_handshake_is_dropped_and_the_server_goes_on() {
    let (server, client) = configs();
    let addr = start(Some(server)).await;
    // Plain HTTP to the TLS port: no TLS handshake, no HTTP answer.
    let reply = exchange(TcpStream::connect(addr).await.unwrap(), GET).await;
    assert!(!reply.contains("HTTP/1.1"), "{reply}");
    // A client that connects and sends nothing is dropped after the header timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0_u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the silent client was dropped: {read:?}");
    // The next TLS client is served.
    let reply = exchange(tls_stream(addr, &client).await, GET).await;
    assert!(reply.ends_with("https secure=true tls-connection=true"), "{reply}");
}

/// A handshake under way when the server shuts down does not hold the shutdown up
/// (it is bounded by the header timeout, a minute here): nothing reached the app,
/// so the socket is dropped and the server's future resolves.
#[tokio::test]
async fn a_handshake_under_way_does_not_hold_up_a_shutdown() {
    let (server, client) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tower_context::serve(listener, app())
        .header_read_timeout(Duration::from_secs(60))
        .tls(server)
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        });
    let serving = tokio::spawn(server.into_future());
    // Served first, so the server is accepting; then a client that starts no
    // handshake, given a moment to be accepted.
    let reply = exchange(tls_stream(addr, &client).await, GET).await;
    assert!(reply.ends_with("https secure=true tls-connection=true"), "{reply}");
    let mut silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), serving).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "the server's future resolved: {ended:?}");
    let mut buf = [0_u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the silent client was dropped: {read:?}");
}

#[tokio::test]
async fn a_server_of_ones_own_says_tls_with_the_marker() {
    // Behind any other TLS acceptor: the `Tls` marker in the request's extensions
    // (or a `Connection::new_tls` there) is the transport's word.
    let svc = app();
    let mut request = Request::get("/").header("host", "localhost").body(axum::body::Body::empty()).unwrap();
    request.extensions_mut().insert(Tls);
    let response = svc.clone().oneshot(request).await.unwrap();
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "https secure=true tls-connection=false");
    assert_eq!(set_cookie, "theme=dark; HttpOnly; Secure; Path=/");

    let mut request = Request::get("/").header("host", "localhost").body(axum::body::Body::empty()).unwrap();
    let remote = "127.0.0.1:40000".parse().unwrap();
    request
        .extensions_mut()
        .insert(tower_context::Connection::new_tls(remote, "127.0.0.1:443".parse().unwrap()));
    let body = svc.oneshot(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "https secure=true tls-connection=true");
}
