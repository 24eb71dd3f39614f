//! The tower-context demo: an axum app that shows each feature on its own route.
//!
//! ```text
//! cargo run --example demo            # listens on 127.0.0.1:3000
//! PORT=8080 cargo run --example demo  # another port
//! ```
//!
//! The README walks through it with curl.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tower_context::{Body, Context, ContextLayer, Ended, ErrorAction, HttpError, ensure, throw};

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
    ctx.on_close(|ctx| println!("{} {} {} closed: the client left first", ctx.id(), ctx.method(), ctx.uri()));
    next.run(request).await
}

async fn index() -> &'static str {
    "tower-context demo\n\
     GET /hello?name=ann        Context id, state, deferred headers, after-hooks\n\
     GET /end                   end() from a spawned task stops the handler\n\
     GET /stop                  end_with_message, Toa's ctx.end(msg)\n\
     GET /error/{kind}          thrown errors: 400, 401, 404, 500, panic, emit\n\
     GET /slow                  a slow handler: disconnect to see Close\n"
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
        if let Some(Greeting(text)) = c.state().get() {
            if let Ok(value) = HeaderValue::from_str(&text) {
                res.headers_mut().insert("x-greeting", value);
            }
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

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "slow answer\n"
}

fn app() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/hello", get(hello))
        .route("/end", get(end_from_task))
        .route("/stop", get(stop))
        .route("/error/{kind}", get(error))
        .route("/slow", get(slow))
        .layer(axum::middleware::from_fn(timing))
        .layer(ContextLayer::new().on_error(|err, ctx| {
            if !err.is_exposed() {
                eprintln!("{} {} failed: {err:?}", ctx.id(), ctx.uri());
            }
            ErrorAction::Render(err)
        }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").ok().and_then(|p| p.parse::<u16>().ok()).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("tower-context demo on http://{}", listener.local_addr()?);
    axum::serve(listener, app()).await
}
