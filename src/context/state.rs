//! The typed per-request map: Toa's `ctx.state`.

use std::sync::MutexGuard;

use http::Extensions;

use super::Context;

/// The typed per-request map: see [`Context::state`].
///
/// Each call takes a short lock of the map alone, never held while other context
/// methods run; do not call `state()` methods from inside [`StateMap::with_mut`].
pub struct StateMap<'a> {
    ctx: &'a Context,
}

impl Context {
    /// The typed per-request map (Toa's `ctx.state`).
    ///
    /// It lives until the request completes: `on_finish` and `on_close` listeners can
    /// still read it, then it is cleared (so a value that holds this context does not
    /// keep it alive), and stays empty.
    ///
    /// ```
    /// # use tower_context::Context;
    /// # fn f(ctx: Context) {
    /// #[derive(Clone)]
    /// struct User(String);
    /// ctx.state().insert(User("ann".into()));
    /// let user: Option<User> = ctx.state().get();
    /// # }
    /// ```
    pub fn state(&self) -> StateMap<'_> {
        StateMap { ctx: self }
    }

    pub(crate) fn state_map(&self) -> MutexGuard<'_, Extensions> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StateMap<'_> {
    fn map(&self) -> MutexGuard<'_, Extensions> {
        self.ctx.state_map()
    }

    /// Inserts a value, returning the one of the same type it replaced. Once the
    /// request has completed the map stays empty: a value inserted then is dropped
    /// at once (nothing would release it, and it may hold this context).
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let mut map = self.map();
        if !self.ctx.inner.phase.note_state() {
            drop(map);
            drop(value);
            return None;
        }
        map.insert(value)
    }

    /// A clone of the value of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.map().get::<T>().cloned()
    }

    /// Whether a value of type `T` is present.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.map().get::<T>().is_some()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.map().remove::<T>()
    }

    /// Runs `f` on the value of type `T` in place.
    pub fn with_mut<T: Send + Sync + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.map().get_mut::<T>().map(f)
    }
}
