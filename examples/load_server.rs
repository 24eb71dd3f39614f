//! The app the loopback load run drives: the same small axum app, bare or with
//! `ContextLayer::new()`, so the two can be compared side by side.
//!
//! ```text
//! cargo run --release --example load_server -- bare 127.0.0.1:4001
//! cargo run --release --example load_server -- context 127.0.0.1:4002
//! cargo run --release --example load_server -- wrapped 127.0.0.1:4003
//! cargo run --release --example load_server -- floor 127.0.0.1:4004
//! cargo run --release --example load_server -- cookies 127.0.0.1:4005
//! cargo run --release --example load_server -- lifecycle 127.0.0.1:4006
//! ```
//!
//! `context` adds the layer with `Router::layer`, the way the README shows; `wrapped`
//! puts it around the whole router instead (it then also sees requests that match
//! no route, and axum does not wrap each route in the layer separately). Two more
//! modes measure what any layer costs here, added with `Router::layer` too: `floor`
//! is the least a layer can do that hands the handler the request's head (method,
//! URI, version and two headers, in an `Arc` put into the extensions: the in-process
//! benches' head-floor row), and `cookies` is tower-cookies' `CookieManagerLayer`.
//! `lifecycle` is the benches' lifecycle floor: the head floor, plus the least a layer
//! must do to tell a handle the request's end (its future and body wrapped).
//! `benches/load.sh` starts them and drives them with wrk.

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::get;
use tower::Layer;
use tower_context::ContextLayer;

// The head floor, defined once with the in-process benches' floor row.
#[path = "../benches/scenarios/floor.rs"]
mod floor;

async fn hello() -> &'static str {
    "hello, world"
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "context".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4000".into());
    let app = Router::new().route("/", get(hello));
    // One worker thread: the load generator gets the other core.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("{mode} listening on {addr}");
        match mode.as_str() {
            "bare" => axum::serve(listener, app).await,
            "context" => axum::serve(listener, app.layer(ContextLayer::new())).await,
            "floor" => {
                let floor = tower::util::MapRequestLayer::new(floor::capture::<axum::body::Body>);
                axum::serve(listener, app.layer(floor)).await
            }
            "cookies" => axum::serve(listener, app.layer(tower_cookies::CookieManagerLayer::new())).await,
            "lifecycle" => axum::serve(listener, app.layer(floor::LifecycleLayer)).await,
            "wrapped" => {
                let svc = ContextLayer::new().layer(app);
                let svc = tower::ServiceExt::<Request>::map_response(svc, IntoResponse::into_response);
                axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(svc)).await
            }
            other => {
                eprintln!("mode must be bare, context, wrapped, floor, cookies or lifecycle, not {other}");
                std::process::exit(2);
            }
        }
    })
}
