//! `throw!`, `http_error!`, `ensure!` and friends: Toa's `ctx.throw`, `ctx.createError`
//! and `ctx.assert`.
//!
//! Arguments come in any order, as in Toa: an integer or [`StatusCode`] sets the
//! status, a string sets the message, an [`HttpError`] is the starting point (its
//! status and message are kept unless later arguments change them), any other error
//! gives its text as the message and becomes the source (so `throw!(422, err)` answers
//! with `err`'s text, as Toa's `ctx.throw(422, new Error('test'))` answers `test`;
//! alone, `throw!(err)` is a 500 whose text stays hidden), and a trailing `{ ... }` is
//! a JSON object of properties (written as for `serde_json::json!`).

use std::borrow::Cow;

use http::StatusCode;

use super::{BoxError, HttpError, IntoStatus};

/// One argument of the error macros. Not for use outside them.
#[doc(hidden)]
pub trait ErrorArg {
    fn apply(self, err: HttpError) -> HttpError;
}

macro_rules! status_arg {
    ($($t:ty),*) => {$(
        impl ErrorArg for $t {
            fn apply(self, mut err: HttpError) -> HttpError {
                err.0.status = self.into_status();
                err
            }
        }
    )*};
}
status_arg!(StatusCode, u16, u32, u64, usize, i32, i64);

impl ErrorArg for &str {
    fn apply(self, err: HttpError) -> HttpError {
        err.message(self.to_owned())
    }
}

impl ErrorArg for String {
    fn apply(self, err: HttpError) -> HttpError {
        err.message(self)
    }
}

impl ErrorArg for Cow<'static, str> {
    fn apply(self, err: HttpError) -> HttpError {
        err.message(self)
    }
}

impl ErrorArg for HttpError {
    fn apply(self, _: HttpError) -> HttpError {
        self
    }
}

#[doc(hidden)]
pub fn __start() -> HttpError {
    HttpError::new(StatusCode::INTERNAL_SERVER_ERROR)
}

/// One macro argument, for the two-level dispatch below: a type with an [`ErrorArg`]
/// impl (status, message, `HttpError`) is applied as such; any other error becomes
/// the message and source (Toa's `throw(422, new Error('test'))` answers `test`).
/// The dispatch picks the first at compile time by auto-ref: `(&&Arg(x)).apply_arg(..)`
/// finds [`ApplyArg`] on `&Arg<T>` when `T: ErrorArg`, and only else [`ApplyError`]
/// on `Arg<T>`. Not for use outside the macros.
#[doc(hidden)]
pub struct Arg<T>(pub std::cell::Cell<Option<T>>);

impl<T> Arg<T> {
    pub fn new(value: T) -> Self {
        Arg(std::cell::Cell::new(Some(value)))
    }
}

#[doc(hidden)]
pub trait ApplyArg {
    fn apply_arg(&self, err: HttpError) -> HttpError;
}

impl<T: ErrorArg> ApplyArg for &Arg<T> {
    fn apply_arg(&self, err: HttpError) -> HttpError {
        match self.0.take() {
            Some(arg) => arg.apply(err),
            None => err,
        }
    }
}

#[doc(hidden)]
pub trait ApplyError {
    fn apply_arg(&self, err: HttpError) -> HttpError;
}

impl<E: Into<BoxError>> ApplyError for Arg<E> {
    fn apply_arg(&self, err: HttpError) -> HttpError {
        let Some(cause) = self.0.take() else { return err };
        match cause.into().downcast::<HttpError>() {
            // A boxed `HttpError` is the starting point, as an `HttpError` is.
            Ok(http) => *http,
            // Any other error keeps the status so far and gives its text as the
            // message: shown to the client only when that status exposes it (below
            // 500), as `http-errors` does.
            Err(other) => err.message(other.to_string()).with_source(other),
        }
    }
}

/// Builds an [`HttpError`](crate::HttpError) without returning it: Toa's
/// `ctx.createError`.
///
/// ```
/// use tower_context::http_error;
///
/// let user = 7;
/// let err = http_error!(401, "access_denied", { "user": user });
/// assert_eq!(err.status(), 401);
/// assert_eq!(err.message_str(), "access_denied");
/// assert_eq!(err.properties()["user"], 7);
///
/// // Any order, as in Toa; a message alone is a 500 that is not exposed.
/// assert_eq!(http_error!("name required", 400).status(), 400);
/// assert!(!http_error!("something exploded").is_exposed());
/// ```
#[macro_export]
macro_rules! http_error {
    () => { $crate::__private::__start() };
    ($a:expr, { $($props:tt)* } $(,)?) => {
        $crate::http_error!($a).properties_from($crate::__private::json!({ $($props)* }))
    };
    ($a:expr, $b:expr, { $($props:tt)* } $(,)?) => {
        $crate::http_error!($a, $b).properties_from($crate::__private::json!({ $($props)* }))
    };
    ($a:expr $(,)?) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ApplyArg as _, ApplyError as _};
        (&&$crate::__private::Arg::new($a)).apply_arg($crate::__private::__start())
    }};
    ($a:expr, $b:expr $(,)?) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ApplyArg as _, ApplyError as _};
        (&&$crate::__private::Arg::new($b)).apply_arg($crate::http_error!($a))
    }};
}

/// Returns early with an [`HttpError`](crate::HttpError): Toa's `ctx.throw`.
///
/// Works in any function whose error type an `HttpError` converts into: `HttpError`
/// itself (axum handlers, after-hooks), or a boxed error (plain tower services).
///
/// ```
/// use tower_context::{throw, HttpError};
///
/// fn find(name: &str) -> Result<u32, HttpError> {
///     if name.is_empty() {
///         throw!(400, "name required");
///     }
///     if name == "root" {
///         throw!(403);
///     }
///     throw!(404, "no such user", { "name": name })
/// }
///
/// assert_eq!(find("").unwrap_err().message_str(), "name required");
/// assert_eq!(find("root").unwrap_err().message_str(), "Forbidden");
/// assert_eq!(find("ann").unwrap_err().properties()["name"], "ann");
/// ```
#[macro_export]
macro_rules! throw {
    ($($args:tt)*) => {
        return ::core::result::Result::Err(::core::convert::From::from($crate::http_error!($($args)*)))
    };
}

/// Throws when a condition is false: Toa's `ctx.assert`.
///
/// ```
/// use tower_context::{ensure, HttpError};
///
/// fn me(user: Option<&str>) -> Result<&str, HttpError> {
///     ensure!(user.is_some(), 401, "User not found. Please login!");
///     Ok(user.unwrap_or_default())
/// }
/// assert_eq!(me(None).unwrap_err().status(), 401);
/// assert_eq!(me(Some("ann")).unwrap(), "ann");
/// ```
///
/// With no status and message, the error is a 500 (not exposed) that names the
/// condition.
#[macro_export]
macro_rules! ensure {
    ($cond:expr $(,)?) => {
        if !$cond {
            $crate::throw!(::core::concat!("assertion failed: ", ::core::stringify!($cond)));
        }
    };
    ($cond:expr, $($args:tt)+) => {
        if !$cond {
            $crate::throw!($($args)+);
        }
    };
}

/// Throws unless two values are equal: `http-assert`'s `assert.equal`.
///
/// ```
/// use tower_context::{ensure_eq, HttpError};
///
/// fn check(version: u32) -> Result<(), HttpError> {
///     ensure_eq!(version, 2, 400, "unsupported version");
///     Ok(())
/// }
/// assert!(check(2).is_ok());
/// assert_eq!(check(1).unwrap_err().status(), 400);
/// ```
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (left, right) => $crate::ensure!(
                *left == *right,
                ::core::concat!(
                    "assertion failed: ",
                    ::core::stringify!($left),
                    " == ",
                    ::core::stringify!($right)
                )
            ),
        }
    };
    ($left:expr, $right:expr, $($args:tt)+) => {
        match (&$left, &$right) {
            (left, right) => $crate::ensure!(*left == *right, $($args)+),
        }
    };
}

/// Throws if two values are equal: `http-assert`'s `assert.notEqual`.
///
/// ```
/// use tower_context::{ensure_ne, HttpError};
///
/// fn rename(old: &str, new: &str) -> Result<(), HttpError> {
///     ensure_ne!(old, new, 409, "name unchanged");
///     Ok(())
/// }
/// assert_eq!(rename("a", "a").unwrap_err().status(), 409);
/// ```
#[macro_export]
macro_rules! ensure_ne {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (left, right) => $crate::ensure!(
                *left != *right,
                ::core::concat!(
                    "assertion failed: ",
                    ::core::stringify!($left),
                    " != ",
                    ::core::stringify!($right)
                )
            ),
        }
    };
    ($left:expr, $right:expr, $($args:tt)+) => {
        match (&$left, &$right) {
            (left, right) => $crate::ensure!(*left != *right, $($args)+),
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{BoxError, HttpError};

    fn throws_props(id: u32) -> Result<(), HttpError> {
        crate::throw!(401, "access_denied", { "user": id, "scopes": ["read"] });
    }

    fn boxed() -> Result<(), BoxError> {
        crate::throw!(409, "conflict");
    }

    #[test]
    fn properties_are_kept() {
        let err = throws_props(9).unwrap_err();
        assert_eq!(err.status(), 401);
        assert_eq!(err.properties()["user"], 9);
        assert_eq!(err.properties()["scopes"][0], "read");
    }

    #[test]
    fn throw_works_with_boxed_errors() {
        let err = HttpError::from(boxed().unwrap_err());
        assert_eq!(err.status(), 409);
        assert_eq!(err.message_str(), "conflict");
    }

    #[test]
    fn an_error_argument_keeps_its_status() {
        let base = HttpError::new(422).message("bad");
        let err = crate::http_error!(base, "worse");
        assert_eq!(err.status(), 422);
        assert_eq!(err.message_str(), "worse");
        let err = crate::http_error!("only a message", { "a": 1 });
        assert_eq!(err.status(), 500);
        assert_eq!(err.properties()["a"], 1);
    }

    #[test]
    fn any_error_gives_its_text_as_the_message() {
        use std::error::Error as _;

        // Toa's `ctx.throw(422, new Error('test'))`: a client status exposes the text.
        let err = crate::http_error!(422, std::io::Error::other("test"));
        assert_eq!(err.status(), 422);
        assert_eq!(err.message_str(), "test");
        assert!(err.is_exposed());
        assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("test"));
        // Either order; alone it is a 500 whose text stays hidden.
        let err = crate::http_error!(std::io::Error::other("test"), 409);
        assert_eq!((err.status().as_u16(), err.message_str()), (409, "test"));
        let err = crate::http_error!(std::io::Error::other("disk full"));
        assert_eq!(err.status(), 500);
        assert!(!err.is_exposed());
        // A boxed error, and a boxed `HttpError`, which is recovered as it is.
        let boxed: BoxError = "boxed text".into();
        assert_eq!(crate::http_error!(400, boxed).message_str(), "boxed text");
        let boxed: BoxError = Box::new(HttpError::new(403).message("no"));
        let err = crate::http_error!(400, boxed);
        assert_eq!((err.status().as_u16(), err.message_str()), (403, "no"));
    }

    #[test]
    fn ensure_family() {
        fn f(x: i32) -> Result<(), HttpError> {
            crate::ensure!(x > 0);
            crate::ensure_ne!(x, 5);
            crate::ensure_eq!(x % 2, 0, 400, "odd");
            Ok(())
        }
        assert_eq!(f(-1).unwrap_err().message_str(), "assertion failed: x > 0");
        assert_eq!(f(5).unwrap_err().message_str(), "assertion failed: x != 5");
        assert_eq!(f(3).unwrap_err().status(), 400);
        assert!(f(4).is_ok());
    }
}
