//! Panics caught by the layer become 500 errors whose message is never exposed.

use std::any::Any;
use std::fmt;

use http::StatusCode;

use super::HttpError;

/// The source of an error made from a caught panic: the panic's message, for logs.
#[derive(Debug)]
pub(crate) struct PanicError(String);

impl fmt::Display for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panic: {}", self.0)
    }
}

impl std::error::Error for PanicError {}

/// A 500 that keeps the panic's message as its source, hidden from the client.
pub(crate) fn panic_error(payload: Box<dyn Any + Send>) -> HttpError {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "opaque panic payload".to_owned()
    };
    HttpError::new(StatusCode::INTERNAL_SERVER_ERROR).expose(false).with_source(PanicError(message))
}
