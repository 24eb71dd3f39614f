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
