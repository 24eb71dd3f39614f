//! Which proxies are believed about the client (placeholder, being built).

/// Which peers' `X-Forwarded-*` / `Forwarded` headers are believed.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum TrustProxy {
    /// Believe no proxy headers (the default).
    #[default]
    None,
}
