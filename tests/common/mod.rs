//! Helpers shared by the integration tests (each test file that needs them declares
//! `mod common;`; not every file uses every helper).
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tower_context::Context;

/// The request's `Context`, which `ContextLayer` inserted.
pub fn ctx_of<B>(req: &Request<B>) -> Context {
    req.extensions().get::<Context>().cloned().expect("ContextLayer inserts a Context")
}

/// The response's whole body, as UTF-8 text.
pub async fn body_string<B>(response: Response<B>) -> String
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Serves `svc` on `listener` with a plain hyper-util server (HTTP/1 or 2 by what the
/// client speaks), one task per connection, until the listener fails.
pub fn spawn_hyper<S, B>(listener: tokio::net::TcpListener, svc: S)
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower_context::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower_context::BoxError>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// A throwaway `redis-server` for the tests that need one.
#[cfg(feature = "redis")]
pub mod redis_server;
