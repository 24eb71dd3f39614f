//! [`ChatMiddleware`]: Actionhero's chat middleware, `{name, priority, join, leave,
//! onSayReceive, say}`, each hook optional.
//!
//! - `join` / `leave` run before a connection joins or leaves a room; an `Err`
//!   vetoes it (the connection's rooms are unchanged) and its text is the error the
//!   client sees.
//! - `on_say_receive` runs once per message, on the sender's node, before the
//!   message is published; each gets the previous one's result, and `None` silences
//!   the message for everyone.
//! - `say` runs once per receiver: it may rewrite the payload for that receiver,
//!   drop it (`Ok(None)`), or fail (that receiver only gets nothing).
//!
//! Middleware runs in ascending `priority` (default 100), then in the order added.
//!
//! ```
//! use tower_context::chat::{Chat, ChatMiddleware};
//!
//! let chat = Chat::new().with_rooms(["lobby", "vipRoom"]);
//! chat.add_middleware(ChatMiddleware::new("vip only").join(|_chat, _conn, room| {
//!     if room == "vipRoom" { Err("joining rooms blocked".into()) } else { Ok(()) }
//! }));
//! ```

use std::fmt;
use std::sync::Arc;

use super::Chat;
use crate::connection::{Connection, SayPayload};

type Gate = dyn Fn(&Chat, &Connection, &str) -> Result<(), String> + Send + Sync;
type OnReceive = dyn Fn(&Connection, &str, SayPayload) -> Option<SayPayload> + Send + Sync;
type PerReceiver = dyn Fn(&Connection, &str, SayPayload) -> Result<Option<SayPayload>, String> + Send + Sync;

/// One chat middleware.
///
///
/// - `join` / `leave` run before a connection joins or leaves a room; an `Err`
///   vetoes it (the connection's rooms are unchanged) and its text is the error the
///   client sees.
/// - `on_say_receive` runs once per message, on the sender's node, before the
///   message is published; each gets the previous one's result, and `None` silences
///   the message for everyone.
/// - `say` runs once per receiver: it may rewrite the payload for that receiver,
///   drop it (`Ok(None)`), or fail (that receiver only gets nothing).
///
/// Middleware runs in ascending `priority` (default 100), then in the order added.
///
/// ```
/// use tower_context::chat::{Chat, ChatMiddleware};
///
/// let chat = Chat::new().with_rooms(["lobby", "vipRoom"]);
/// chat.add_middleware(ChatMiddleware::new("vip only").join(|_chat, _conn, room| {
///     if room == "vipRoom" { Err("joining rooms blocked".into()) } else { Ok(()) }
/// }));
/// ```
#[derive(Clone)]
pub struct ChatMiddleware {
    name: String,
    priority: i32,
    pub(super) join: Option<Arc<Gate>>,
    pub(super) leave: Option<Arc<Gate>>,
    pub(super) on_say_receive: Option<Arc<OnReceive>>,
    pub(super) say: Option<Arc<PerReceiver>>,
}

impl ChatMiddleware {
    /// A middleware with no hooks yet, priority 100.
    pub fn new(name: impl Into<String>) -> Self {
        ChatMiddleware {
            name: name.into(),
            priority: 100,
            join: None,
            leave: None,
            on_say_receive: None,
            say: None,
        }
    }

    /// Its place: lower runs first (Actionhero's `priority`, default 100).
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Runs before a connection joins a room; `Err(text)` refuses the join.
    #[must_use]
    pub fn join(
        mut self,
        f: impl Fn(&Chat, &Connection, &str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.join = Some(Arc::new(f));
        self
    }

    /// Runs before a connection leaves a room; `Err(text)` refuses the leave (a
    /// destroyed connection leaves all the same: check
    /// [`Connection::is_destroyed`]).
    #[must_use]
    pub fn leave(
        mut self,
        f: impl Fn(&Chat, &Connection, &str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.leave = Some(Arc::new(f));
        self
    }

    /// Runs once per message on the sender's node; `None` silences it.
    #[must_use]
    pub fn on_say_receive(
        mut self,
        f: impl Fn(&Connection, &str, SayPayload) -> Option<SayPayload> + Send + Sync + 'static,
    ) -> Self {
        self.on_say_receive = Some(Arc::new(f));
        self
    }

    /// Runs once per receiver; `Ok(None)` drops the message for that receiver, `Err`
    /// too.
    #[must_use]
    pub fn say(
        mut self,
        f: impl Fn(&Connection, &str, SayPayload) -> Result<Option<SayPayload>, String> + Send + Sync + 'static,
    ) -> Self {
        self.say = Some(Arc::new(f));
        self
    }

    /// The middleware's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn order(&self) -> i32 {
        self.priority
    }
}

impl fmt::Debug for ChatMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatMiddleware")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("join", &self.join.is_some())
            .field("leave", &self.leave.is_some())
            .field("on_say_receive", &self.on_say_receive.is_some())
            .field("say", &self.say.is_some())
            .finish()
    }
}
