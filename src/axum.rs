//! Every axum impl of the crate, in one file (feature `axum`, which needs only
//! `axum-core`): [`Context`], [`Cookies`] and [`Connection`] as extractors;
//! [`HttpError`], [`Ended`] and [`InvalidRedirect`] as responses. With feature
//! `connect-info` (which brings the `axum` crate), `Connection` is also axum's
//! connect info, for `into_make_service_with_connect_info::<Connection>()`.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_context::cookies::Cookies;
//! use tower_context::{Context, ContextLayer, HttpError, throw};
//!
//! async fn hello(ctx: Context, cookies: Cookies) -> Result<String, HttpError> {
//!     let Some(name) = cookies.get("name") else { throw!(401, "who are you?") };
//!     Ok(format!("hello {name}, this is request {}", ctx.id()))
//! }
//!
//! let app: Router = Router::new().route("/", get(hello)).layer(ContextLayer::new());
//! ```

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::connection::Connection;
use crate::context::{Context, Ended};
use crate::cookies::Cookies;
use crate::error::HttpError;
use crate::response::InvalidRedirect;

fn missing_layer() -> HttpError {
    HttpError::new(500).message("tower_context::ContextLayer is not installed")
}

/// Takes the request's [`Context`]; a route without [`ContextLayer`](crate::ContextLayer)
/// around it answers 500 (the message, not exposed, says the layer is missing).
impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Context>().cloned().ok_or_else(missing_layer)
    }
}

/// Takes the request's session (feature `sessions`): what
/// [`Context::session`](crate::Context::session) returns. A route without
/// [`ContextLayer`](crate::ContextLayer) around it answers 500.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_context::session::{Session, Sessions};
/// use tower_context::{ContextLayer, HttpError, Keys};
///
/// async fn visits(session: Session) -> Result<String, HttpError> {
///     let n = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
///     session.insert("visits", n).await?;
///     Ok(n.to_string())
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(visits))
///     .layer(ContextLayer::new().keys(Keys::new(["secret"])).sessions(Sessions::memory()));
/// ```
#[cfg(feature = "sessions")]
impl<S: Send + Sync> FromRequestParts<S> for crate::session::Session {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Context>().map(Context::session).ok_or_else(missing_layer)
    }
}

/// Takes the request's [`Cookies`]; a route without
/// [`ContextLayer`](crate::ContextLayer) around it answers 500.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_context::ContextLayer;
/// use tower_context::cookies::Cookies;
///
/// async fn handler(cookies: Cookies) -> String {
///     cookies.get("name").unwrap_or_else(|| "stranger".into())
/// }
///
/// let app: Router = Router::new().route("/", get(handler)).layer(ContextLayer::new());
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Cookies {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Context>().map(|ctx| ctx.cookies().clone()).ok_or_else(missing_layer)
    }
}

fn find_connection(parts: &Parts) -> Option<Connection> {
    Connection::from_extensions(&parts.extensions)
        .or_else(|| parts.extensions.get::<Context>().and_then(|ctx| ctx.connection().cloned()))
}

/// Takes the request's [`Connection`]; when no server recorded one, answers 500
/// (the message, not exposed, says how to get one).
impl<S: Send + Sync> FromRequestParts<S> for Connection {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        find_connection(parts).ok_or_else(|| {
            HttpError::new(500).message(
                "no Connection: serve the app with tower_context::serve, or axum::serve with \
                 into_make_service_with_connect_info::<Connection>()",
            )
        })
    }
}

/// `Option<Connection>`: `None` when no server recorded one.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Connection {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(find_connection(parts))
    }
}

/// An error returned from a handler: rendered as JSON on its own, and marked so that
/// a [`ContextLayer`](crate::ContextLayer) around the route renders it with the
/// request's negotiation, kept headers and error policy.
impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        self.into_http_response().map(axum_core::body::Body::new)
    }
}

/// A handler may return what [`Context::end`] gave it; the layer sends the ended
/// response in its place.
impl IntoResponse for Ended {
    fn into_response(self) -> Response {
        Response::default()
    }
}

/// Renders as the [`HttpError`] it converts to, so a handler can return
/// `Result<Response<Body>, InvalidRedirect>` as it is.
impl IntoResponse for InvalidRedirect {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}

#[cfg(feature = "connect-info")]
mod connect_info {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use axum::extract::connect_info::Connected;
    use axum::serve::IncomingStream;
    use tokio::net::TcpListener;

    use crate::connection::Connection;

    /// `app.into_make_service_with_connect_info::<Connection>()`: one `Connection`
    /// per socket accepted by `axum::serve`.
    impl Connected<IncomingStream<'_, TcpListener>> for Connection {
        fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
            // `0.0.0.0:0` for a local address the socket could not report.
            let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
            Connection::new(*stream.remote_addr(), stream.io().local_addr().unwrap_or(unspecified))
        }
    }
}
