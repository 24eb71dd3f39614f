//! The head floor: the least a layer can do that hands the handler the request's
//! head (method, URI, version, and the two headers the benches' requests carry), in
//! an `Arc` put into the extensions. One definition, shared by the in-process benches
//! (`scenarios`) and the loopback load run's `floor` app (`examples/load_server.rs`).

use std::sync::Arc;

use http::header::{ACCEPT, COOKIE, HeaderValue};
use http::{Method, Request, Uri, Version};

/// What the floor keeps of the request.
#[allow(dead_code)]
pub struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    accept: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
}

/// Captures the head into the request's extensions: the function a
/// `tower::util::MapRequestLayer` runs for every request. Always inlined, as a
/// closure written in its place is: left to the compiler, this shared function was
/// called instead (about 160 instructions a request more), which would flatter every
/// ratio against the floor.
#[inline(always)]
pub fn capture<B>(mut request: Request<B>) -> Request<B> {
    let head = Head {
        method: request.method().clone(),
        uri: request.uri().clone(),
        version: request.version(),
        accept: request.headers().get(ACCEPT).cloned(),
        cookie: request.headers().get(COOKIE).cloned(),
    };
    request.extensions_mut().insert(Arc::new(head));
    request
}
