//! axum integration: [`Context`] as an extractor, [`HttpError`] and [`Ended`] as
//! responses.

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::{Context, Ended, HttpError};

/// Takes the request's [`Context`]; a route without [`ContextLayer`](crate::ContextLayer)
/// around it answers 500 (the message, not exposed, says the layer is missing).
impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Context>()
            .cloned()
            .ok_or_else(|| HttpError::new(500).message("tower_context::ContextLayer is not installed"))
    }
}

/// An error returned from a handler: rendered as JSON on its own, and marked so that
/// a [`ContextLayer`](crate::ContextLayer) around the route renders it with the
/// request's negotiation, kept headers and error hook.
impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        HttpError::into_response(self).map(axum_core::body::Body::new)
    }
}

/// A handler may return what [`Context::end`] gave it; the layer sends the ended
/// response in its place.
impl IntoResponse for Ended {
    fn into_response(self) -> Response {
        Response::default()
    }
}
