//! The tower-context demo: an axum app that shows each feature on its own route.
//!
//! ```text
//! cargo run --example demo            # listens on 127.0.0.1:3000
//! PORT=8080 cargo run --example demo  # another port
//!
//! # two demos sharing one chat through Redis
//! REDIS_URL=redis://127.0.0.1:6379/ PORT=3000 cargo run --example demo
//! REDIS_URL=redis://127.0.0.1:6379/ PORT=3001 cargo run --example demo
//! ```
//!
//! The README walks through it with curl.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use tower_context::body::Body;
use tower_context::chat::ws::WebSocketChat;
use tower_context::chat::{Chat, ChatMiddleware, RedisChat};
use tower_context::conditional::conditional_get;
use tower_context::cookies::Cookie;
use tower_context::files::{FileBody, PublicFiles};
use tower_context::response::{etag, redirect};
use tower_context::session::{RedisStore, Sessions};
use tower_context::stream::FirstFrame;
use tower_context::{
    Connections, Context, ContextLayer, Ended, ErrorAction, HeaderExt, HttpError, Keys, RequestHeadExt,
    SignedFormat, ensure, throw,
};

/// Every request gets a response-time header from an after-hook and a log line
/// when it finishes or the client leaves.
async fn timing(
    ctx: Context,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = Instant::now();
    let _ = ctx.after(move |mut res| async move {
        let took = format!("{}us", started.elapsed().as_micros());
        if let Ok(value) = HeaderValue::from_str(&took) {
            res.headers_mut().insert("x-response-time", value);
        }
        Ok(res)
    });
    ctx.on_finish(|ctx| println!("{} {} {} finished", ctx.id(), ctx.method(), ctx.uri()));
    ctx.on_close(|ctx| {
        println!("{} {} {} closed before the response finished", ctx.id(), ctx.method(), ctx.uri())
    });
    next.run(request).await
}

async fn index() -> &'static str {
    "tower-context demo\n\
     GET /hello?name=ann        Context id, state, deferred headers, after-hooks\n\
     GET /end                   end() from a spawned task stops the handler\n\
     GET /stop                  end_with_message, Toa's ctx.end(msg)\n\
     GET /error/{kind}          thrown errors: 400, 401, 404, 500, panic, emit\n\
     GET /slow                  a slow handler: disconnect to see Close\n\
     GET /login?user=ann        a signed cookie (Keygrip format, readable by Koa)\n\
     GET /me                    reads it back; an old key's signature is re-signed\n\
     GET /logout                removes it\n\
     GET /events                a server-sent event stream (chunked)\n\
     GET /broken-stream         a stream that fails halfway: cut short, Error + Close\n\
     GET /missing-file          a stream that fails at once: a real 404 (first-frame)\n\
     GET /negotiate             JSON, HTML or text by the Accept header\n\
     GET /old                   a redirect to /hello\n\
     GET /page                  ETag and conditional GET: 304 on a match\n\
     GET /connection            the connection's details (Actionhero's detailsView)\n\
     GET /visits                counts your visits in your session (shared through REDIS_URL)\n\
     GET /chat                  a chat page: open it in two tabs (rooms over WebSocket)\n\
     GET /ws                    the chat's WebSocket: Actionhero's JSON protocol\n\
     GET /static/               examples/public/ through ctx.send_file: Range, If-Range, 304\n\
     (start two demos with the same REDIS_URL and their chats are one)\n"
}

/// Counts the client's visits in its session: loaded on first use, saved after the
/// response because it changed.
async fn visits(ctx: Context) -> Result<String, HttpError> {
    let session = ctx.session();
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(format!("visit number {visits}\n"))
}

/// Sessions in memory, or with `REDIS_URL` in Redis, shared by every demo there.
async fn sessions() -> Result<Sessions, tower_context::session::SessionError> {
    Ok(match std::env::var("REDIS_URL") {
        Ok(url) => Sessions::new(RedisStore::connect(&url).await?),
        Err(_) => Sessions::memory(),
    })
}

/// The keys that sign cookies and, with `REDIS_URL`, the chat's envelopes between
/// demos: newest first.
fn keys() -> Keys {
    Keys::new(["demo-key-2026", "demo-key-2025"])
}

/// The chat page: plain HTML and JavaScript, no build step.
async fn chat_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("chat.html"))
}

/// The demo's chat: one starting room, and a middleware that announces who joins
/// and leaves (from "0", the server), so every page can refresh its member list.
/// With `REDIS_URL` set, a node of a chat shared with every demo on that Redis.
async fn chat() -> Result<Chat, tower_context::chat::ChatError> {
    let chat = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let chat = RedisChat::new(&url).keys(keys()).rooms(["defaultRoom"]).connect().await?;
            println!("chat node {} on {url}", chat.id());
            chat
        }
        Err(_) => Chat::new().with_rooms(["defaultRoom"]),
    };
    chat.add_middleware(
        ChatMiddleware::new("announce")
            .join(|chat, conn, room| {
                let _ = chat.announce(room, format!("{} joined", conn.id()).into());
                Ok(())
            })
            .leave(|chat, conn, room| {
                let _ = chat.announce(room, format!("{} left", conn.id()).into());
                Ok(())
            }),
    );
    Ok(chat)
}

async fn login(ctx: Context) -> Result<String, HttpError> {
    let query = ctx.query();
    let Some(user) = query.get("user") else { throw!(400, "log in with /login?user=<name>") };
    ensure!(!user.is_empty() && user.len() <= 32, 400, "a user name is 1 to 32 characters");
    ctx.cookies().set_signed(Cookie::new("user", user.to_owned()))?;
    Ok(format!("logged in as {user}\n"))
}

async fn me(ctx: Context) -> Result<String, HttpError> {
    match ctx.cookies().get_signed("user")? {
        Some(user) => Ok(format!("you are {user}\n")),
        None => throw!(401, "not logged in (or the signature did not verify)"),
    }
}

async fn logout(ctx: Context) -> Result<&'static str, HttpError> {
    // `user.sig` goes too, even if this browser never sent it.
    ctx.cookies().remove_signed("user")?;
    Ok("logged out\n")
}

/// Five events, one every 200 ms; disconnect early and the server logs Close.
async fn events(ctx: Context) -> Result<Response<Body>, HttpError> {
    let ticks = futures_util::stream::unfold(0_u32, |n| async move {
        if n == 5 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from(format!("data: tick {n}\n\n"))), n + 1))
    });
    let mut response = Response::new(Body::new(ctx.catch_byte_stream(ticks)?));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(response)
}

fn failing_stream(ok: u32) -> impl futures_util::Stream<Item = Result<Bytes, HttpError>> + Send {
    futures_util::stream::unfold(0_u32, move |n| async move {
        // Slow enough that the head and the first chunks reach the client first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        match n {
            n if n < ok => Some((Ok(Bytes::from(format!("chunk {n}\n"))), n + 1)),
            n if n == ok => Some((Err(HttpError::new(404).message("no such file")), n + 1)),
            _ => None,
        }
    })
}

/// Two chunks, then the upstream fails: the 200 already went out, so the response
/// is cut short; the error reaches the context and the log.
async fn broken_stream(ctx: Context) -> Result<Response<Body>, HttpError> {
    Ok(Response::new(Body::new(ctx.catch_byte_stream(failing_stream(2))?)))
}

/// Fails before its first byte; with `FirstFrame` the layer waits for that first
/// frame, so the client gets a real 404 instead of a truncated 200.
async fn missing_file(ctx: Context) -> Result<Response<Body>, HttpError> {
    let mut response = Response::new(Body::new(ctx.catch_byte_stream(failing_stream(0))?));
    response.extensions_mut().insert(FirstFrame);
    Ok(response)
}

async fn negotiate(ctx: Context) -> Result<Response<Body>, HttpError> {
    let (content_type, body) = match ctx.accepts(&["json", "html", "text"]) {
        Some("json") => ("application/json", r#"{"greeting":"hello"}"#.to_owned()),
        Some("html") => ("text/html; charset=utf-8", "<p>hello</p>".to_owned()),
        Some(_) => ("text/plain; charset=utf-8", "hello".to_owned()),
        None => throw!(406, "json, html or text only"),
    };
    ctx.vary(header::ACCEPT);
    let mut response = Response::new(Body::from(format!("{body}\n")));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

async fn old(ctx: Context) -> Result<Response<Body>, HttpError> {
    Ok(redirect(&ctx, "/hello?name=redirected")?)
}

async fn page(ctx: Context) -> Result<(HeaderMap, &'static str), HttpError> {
    conditional_get(&ctx)?;
    let mut headers = HeaderMap::new();
    etag(&mut headers, "page-v1")?;
    Ok((headers, "a page worth caching\n"))
}

async fn connection(ctx: Context) -> Result<axum::Json<serde_json::Value>, HttpError> {
    let Some(conn) = ctx.connection() else { throw!(500, "not served by tower_context::serve") };
    // Params live as long as the connection: a keep-alive client sees this count up.
    let visits = conn.params().get("visits").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
    conn.params().insert("visits", visits);
    let connected_at = conn
        .connected_at()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    Ok(axum::Json(serde_json::json!({
        "id": conn.id(),
        "fingerprint": conn.fingerprint().map(|f| f.to_string()),
        "remote": conn.remote_addr().to_string(),
        "connected_at_ms": connected_at,
        "kind": conn.kind().as_str(),
        "pending": conn.pending(),
        "total": conn.total(),
        "message_id": conn.message_id(),
        "params": conn.params().to_map(),
    })))
}

#[derive(Clone)]
struct Greeting(String);

async fn hello(ctx: Context) -> Result<String, HttpError> {
    let name = ctx.uri().query().and_then(|q| q.strip_prefix("name=")).unwrap_or("world").to_owned();
    ensure!(name.len() <= 32, 400, "name too long");
    ctx.state().insert(Greeting(format!("hello, {name}")));
    ctx.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    ctx.vary(header::ACCEPT);
    // The greeting is read back from state by an after-hook.
    let c = ctx.clone();
    ctx.after(move |mut res| async move {
        if let Some(Greeting(text)) = c.state().get()
            && let Ok(value) = HeaderValue::from_str(&text)
        {
            res.headers_mut().insert("x-greeting", value);
        }
        Ok(res)
    })?;
    Ok(format!("request {} says hello to {name}\n", ctx.id()))
}

async fn end_from_task(ctx: Context) -> &'static str {
    let c = ctx.clone();
    ctx.spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = Response::builder().status(StatusCode::ACCEPTED).body(Body::from("ended by a task\n"));
        if let Ok(response) = response {
            let _ = c.end(response);
        }
        Ok::<(), HttpError>(())
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    "this line is never sent\n"
}

async fn stop(ctx: Context) -> Ended {
    ctx.end_with_message("process stopped")
}

async fn error(ctx: Context, Path(kind): Path<String>) -> Result<&'static str, HttpError> {
    match kind.as_str() {
        "400" => throw!(400, "name required", { "field": "name" }),
        "401" => throw!(401, "access_denied"),
        "404" => throw!(404),
        "500" => throw!("the database password is hunter2"),
        "panic" => panic!("a bug that must not leak"),
        "emit" => {
            ctx.emit_error(
                HttpError::new(503).message("down for maintenance").expose(true).header("retry-after", "120"),
            );
            std::future::pending::<()>().await;
            Ok("never")
        }
        _ => throw!(404, "no such error kind"),
    }
}

/// `examples/public/` at `/static/`: Actionhero's sendFile with ranges, `If-Range`,
/// 304 and 412; a missing file is the layer's rendered 404. `Path` decodes the URL
/// once; `send_file` refuses anything that leaves the public roots.
async fn static_file(ctx: Context, path: Option<Path<String>>) -> Result<Response<FileBody>, HttpError> {
    ctx.send_file(path.map(|Path(path)| path).unwrap_or_default()).await
}

/// The demo's public roots: `examples/public/`, wherever the demo is started from,
/// with gzip variants sent to clients that accept them (`notes.txt.gz`).
fn public_files() -> PublicFiles {
    PublicFiles::new([concat!(env!("CARGO_MANIFEST_DIR"), "/examples/public")]).precompressed_gzip()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "slow answer\n"
}

fn app(connections: Connections, chat: Chat, sessions: Sessions) -> Router {
    // The chat socket answers `{"event": "file", "file": "hello.txt"}` from the same roots.
    let chat = WebSocketChat::new(chat).registry(connections).public_files(public_files());
    Router::new()
        .route("/", get(index))
        .route("/chat", get(chat_page))
        .route("/ws", chat.route())
        .route("/hello", get(hello))
        .route("/end", get(end_from_task))
        .route("/stop", get(stop))
        .route("/error/{kind}", get(error))
        .route("/slow", get(slow))
        .route("/login", get(login))
        .route("/me", get(me))
        .route("/logout", get(logout))
        .route("/events", get(events))
        .route("/broken-stream", get(broken_stream))
        .route("/missing-file", get(missing_file))
        .route("/negotiate", get(negotiate))
        .route("/old", get(old))
        .route("/page", get(page))
        .route("/connection", get(connection))
        .route("/visits", get(visits))
        .route("/static/", get(static_file))
        .route("/static/{*path}", get(static_file))
        .layer(axum::middleware::from_fn(timing))
        .layer(
            ContextLayer::new()
                // Newest key first: it signs; the older one still verifies, and a
                // cookie it signed is re-signed with the newest on the way out.
                .keys(keys())
                .sessions(sessions)
                .signed_format(SignedFormat::KEYGRIP)
                // The demo runs on plain http; real apps behind TLS keep the default.
                .allow_secure_cookies_over_http(true)
                .public_files(public_files())
                .handle_error(|err, ctx| {
                    if !err.is_exposed() || ctx.is_ended() {
                        eprintln!("{} {} failed: {err:?}", ctx.id(), ctx.uri());
                    }
                    ErrorAction::Render(err)
                }),
        )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").ok().and_then(|p| p.parse::<u16>().ok()).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("tower-context demo on http://{}", listener.local_addr()?);
    let chat = chat().await.map_err(std::io::Error::other)?;
    let sessions = sessions().await.map_err(std::io::Error::other)?;
    let connections = Connections::new();
    tower_context::serve(listener, app(connections.clone(), chat, sessions))
        .with_connections(connections)
        .on_connection_open(|conn| println!("connection {} open from {}", conn.id(), conn.remote_addr()))
        .on_connection_close(|conn| {
            println!("connection {} closed after {} requests", conn.id(), conn.total())
        })
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
