//! The app the loopback load run drives: the same small axum app, bare or with
//! `ContextLayer::new()`, so the two can be compared side by side.
//!
//! ```text
//! cargo run --release --example load_server -- bare 127.0.0.1:4001
//! cargo run --release --example load_server -- context 127.0.0.1:4002
//! ```
//!
//! `benches/load.sh` starts both and drives them with wrk.

use axum::Router;
use axum::routing::get;
use tower_context::ContextLayer;

async fn hello() -> &'static str {
    "hello, world"
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "context".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4000".into());
    let app = Router::new().route("/", get(hello));
    let app = match mode.as_str() {
        "bare" => app,
        "context" => app.layer(ContextLayer::new()),
        other => {
            eprintln!("mode must be bare or context, not {other}");
            std::process::exit(2);
        }
    };
    // One worker thread: the load generator gets the other core.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("{mode} listening on {addr}");
        axum::serve(listener, app).await
    })
}
