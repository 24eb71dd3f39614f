//! Precompressed variants: `site.css.gz` beside `site.css`, sent to a client that
//! accepts gzip. tower-http's `ServeDir` negotiates and labels them; the search
//! opens the ones the request names, in its one trip, so `ServeDir` finds them
//! through the same backend as the file itself.

use http::HeaderValue;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend, DefaultServeDirFallback};

/// A content coding a file may be stored in beside the file itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    const ALL: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

    /// What tower-http appends to the file's name for this coding.
    pub(super) fn extension(self) -> &'static str {
        match self {
            Coding::Gzip => ".gz",
            Coding::Deflate => ".zz",
            Coding::Brotli => ".br",
            Coding::Zstd => ".zst",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The coding an `Accept-Encoding` token names, as tower-http reads it.
    fn named(token: &str) -> Option<Coding> {
        let is = |name: &str| token.eq_ignore_ascii_case(name);
        if is("gzip") || is("x-gzip") {
            Some(Coding::Gzip)
        } else if is("deflate") {
            Some(Coding::Deflate)
        } else if is("br") {
            Some(Coding::Brotli)
        } else if is("zstd") {
            Some(Coding::Zstd)
        } else {
            None
        }
    }
}

/// A set of codings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Codings(u8);

impl Codings {
    pub(super) fn with(self, coding: Coding) -> Codings {
        Codings(self.0 | coding.bit())
    }

    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(super) fn iter(self) -> impl Iterator<Item = Coding> {
        Coding::ALL.into_iter().filter(move |coding| self.0 & coding.bit() != 0)
    }

    /// Those of these codings an `Accept-Encoding` value accepts (names with a
    /// weight above 0; tower-http weighs them to choose), read with the crate's
    /// header parser.
    pub(super) fn named_in(self, accept_encoding: Option<&HeaderValue>) -> Codings {
        // Nothing to look for (the usual case): the header is not read.
        if self.is_empty() {
            return self;
        }
        let Some(value) = accept_encoding.and_then(|value| value.to_str().ok()) else {
            return Codings::default();
        };
        let named = crate::negotiate::entries(value)
            .filter(|entry| entry.q > 0)
            .filter_map(|entry| Coding::named(entry.value))
            .fold(Codings::default(), Codings::with);
        Codings(self.0 & named.0)
    }

    /// `service`, told to look for these variants.
    pub(super) fn configure<B: Backend>(
        self,
        mut service: ServeDir<DefaultServeDirFallback, B>,
    ) -> ServeDir<DefaultServeDirFallback, B> {
        for coding in self.iter() {
            service = match coding {
                Coding::Gzip => service.precompressed_gzip(),
                Coding::Deflate => service.precompressed_deflate(),
                Coding::Brotli => service.precompressed_br(),
                Coding::Zstd => service.precompressed_zstd(),
            };
        }
        service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_names_the_codings_asked_for() {
        let all = Coding::ALL.into_iter().fold(Codings::default(), Codings::with);
        let named = |value: &'static str| {
            all.named_in(Some(&HeaderValue::from_static(value))).iter().collect::<Vec<_>>()
        };
        assert_eq!(named("gzip, deflate, br, zstd"), Coding::ALL);
        assert_eq!(named("BR;q=0.5 , X-GZIP"), [Coding::Gzip, Coding::Brotli]);
        assert_eq!(named("gzip;q=0, br"), [Coding::Brotli]);
        assert_eq!(named("identity, *;q=1, compress"), []);
        assert_eq!(named(""), []);
        assert!(all.named_in(None).is_empty());
        let gzip_only = Codings::default().with(Coding::Gzip);
        assert_eq!(gzip_only.named_in(Some(&HeaderValue::from_static("br, gzip"))), gzip_only);
    }
}
