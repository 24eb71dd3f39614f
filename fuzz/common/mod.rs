//! What every target shares: one runtime per process, header values from raw bytes,
//! and a request driven through a `ContextLayer` with the public API only.

#![allow(dead_code)]

use std::future::Future;
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower::{Layer, ServiceExt, service_fn};
use tower_context::{Context, ContextLayer, HttpError};

/// The runtime, built once per process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime builds")
    })
}

/// A header value made of `bytes`, less the bytes no header value may hold (controls
/// other than tab, and DEL). Bytes above 0x7f (obs-text) are kept.
pub fn header_value(bytes: &[u8]) -> HeaderValue {
    let clean: Vec<u8> = bytes.iter().copied().filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)).collect();
    HeaderValue::from_bytes(&clean).expect("only valid header bytes are left")
}

/// A response with its body collected.
pub struct Collected {
    pub head: http::response::Parts,
    pub body: Bytes,
}

/// Sends `request` through `layer` around a service that runs `handler` with the
/// request and its `Context`, and collects the response.
pub fn run<F, Fut>(layer: &ContextLayer, request: Request<()>, handler: F) -> Collected
where
    F: FnOnce(Request<()>, Context) -> Fut,
    Fut: Future<Output = Result<Response<Full<Bytes>>, HttpError>>,
{
    let mut handler = Some(handler);
    let inner = service_fn(move |request: Request<()>| {
        let handler = handler.take().expect("the service is called once");
        let ctx = request.extensions().get::<Context>().cloned().expect("the layer put a Context in");
        handler(request, ctx)
    });
    let service = layer.layer(inner);
    runtime().block_on(async move {
        let response = match service.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (head, body) = response.into_parts();
        let body = body.collect().await.expect("an in-memory body does not fail").to_bytes();
        Collected { head, body }
    })
}

/// Every header value of a response is a valid one without CR, LF or NUL.
pub fn assert_clean_headers(head: &http::response::Parts) {
    for (name, value) in &head.headers {
        assert!(
            !value.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "header {name} has CR/LF/NUL: {value:?}"
        );
    }
}

/// An empty 200.
pub fn ok() -> Result<Response<Full<Bytes>>, HttpError> {
    Ok(Response::new(Full::new(Bytes::new())))
}
