//! The layer's settings, kept below the layer so that the context (which every
//! request carries) can read them without depending on the layer.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use http::Response;

use super::Context;
use crate::body::Body;
use crate::cookies::CookieConfig;
use crate::error::{ErrorFormat, HttpError};
use crate::proxy::TrustProxy;

/// What the app-level error policy ([`ContextLayer::handle_error`](crate::ContextLayer::handle_error))
/// decides.
#[derive(Debug)]
pub enum ErrorAction {
    /// Render this error (the one given, or a replacement).
    Render(HttpError),
    /// Send this response instead of a rendered error.
    Respond(Response<Body>),
    /// Swallow the error and send the response that was about to go out (Toa's
    /// `onerror` returning `true`): the response that carried the error, or an empty
    /// one with the deferred edits applied.
    Swallow,
}

pub(crate) type ErrorPolicy = dyn Fn(HttpError, &Context) -> ErrorAction + Send + Sync;
pub(crate) type Renderer = dyn Fn(&HttpError, &Context) -> Response<Body> + Send + Sync;

/// The layer's settings, shared by every request through the context.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) catch_panic: bool,
    pub(crate) error_format: ErrorFormat,
    pub(crate) handle_error: Option<Arc<ErrorPolicy>>,
    pub(crate) renderer: Option<Arc<Renderer>>,
    pub(crate) cookies: CookieConfig,
    pub(crate) trust_proxy: TrustProxy,
    pub(crate) first_frame: bool,
    /// Settings of optional features whose modules sit above the context (the
    /// session store, the public files), by type; made when the first is set.
    #[cfg_attr(not(any(feature = "sessions", feature = "files")), allow(dead_code))]
    features: Option<http::Extensions>,
}

impl Config {
    /// Every setting at its default: what [`SharedConfig`] shares without an `Arc`.
    const DEFAULT: Config = Config {
        catch_panic: true,
        error_format: ErrorFormat::Negotiate,
        handle_error: None,
        renderer: None,
        cookies: CookieConfig::DEFAULT,
        trust_proxy: TrustProxy::None,
        first_frame: false,
        features: None,
    };

    /// An optional feature's settings, if the layer was given them.
    #[cfg(any(feature = "sessions", feature = "files"))]
    pub(crate) fn feature<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.features.as_ref()?.get::<T>()
    }

    /// Sets an optional feature's settings.
    #[cfg(any(feature = "sessions", feature = "files"))]
    pub(crate) fn set_feature<T: Clone + Send + Sync + 'static>(&mut self, settings: T) {
        self.features.get_or_insert_with(http::Extensions::new).insert(settings);
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextLayer")
            .field("catch_panic", &self.catch_panic)
            .field("error_format", &self.error_format)
            .field("handle_error", &self.handle_error.is_some())
            .field("render_error", &self.renderer.is_some())
            .finish()
    }
}

/// The settings as the layer, its services and every request's context hold them.
///
/// A layer left at its defaults shares one static `Config`, which costs nothing to
/// clone or drop; a layer with settings of its own keeps them in an `Arc`. Every
/// request clones the settings twice (axum and `oneshot` clone the service, and the
/// context keeps its own), and each clone and drop of an `Arc` is a locked
/// instruction, among the dearest a request makes (BENCHMARKS.md).
#[derive(Clone, Default)]
pub(crate) struct SharedConfig(Option<Arc<Config>>);

impl SharedConfig {
    /// The settings to change: the first change leaves the shared defaults.
    pub(crate) fn make_mut(&mut self) -> &mut Config {
        Arc::make_mut(self.0.get_or_insert_with(|| Arc::new(Config::DEFAULT)))
    }
}

impl Deref for SharedConfig {
    type Target = Config;

    #[inline]
    fn deref(&self) -> &Config {
        static DEFAULTS: Config = Config::DEFAULT;
        match &self.0 {
            Some(config) => config,
            None => &DEFAULTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changing_a_layers_settings_leaves_the_shared_defaults_alone() {
        let defaults = SharedConfig::default();
        let mut changed = defaults.clone();
        changed.make_mut().catch_panic = false;
        changed.make_mut().first_frame = true;
        assert!(!changed.catch_panic && changed.first_frame);
        // Neither the handle it came from nor any later default sees the change.
        assert!(defaults.catch_panic && !defaults.first_frame);
        assert!(SharedConfig::default().catch_panic && !SharedConfig::default().first_frame);

        // Clones of changed settings share them; a change through one copies first.
        let mut copy = changed.clone();
        copy.make_mut().catch_panic = true;
        assert!(copy.catch_panic && !changed.catch_panic);
    }
}
