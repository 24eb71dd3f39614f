//! [`ChatError`]: Actionhero's chat errors, with its exact texts.

use std::fmt;

use crate::error::HttpError;

/// Why a chat operation failed. Its `Display` is Actionhero's text for the same
/// failure, byte for byte (a WebSocket client sees it as `Error: <text>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatError {
    /// `room exists`
    RoomExists,
    /// `room does not exist`
    NoSuchRoom,
    /// `a room is required`
    RoomRequired,
    /// `connection already in this room (ROOM)`
    AlreadyInRoom(String),
    /// `connection not in this room (ROOM)`
    NotInRoom(String),
    /// `both room and message are required`
    RoomAndMessageRequired,
    /// `verb not found or not allowed (VERB)`
    VerbNotAllowed(String),
    /// A join or leave middleware refused: its own message.
    Vetoed(String),
    /// `connection not found (ID)`: no node holds a connection with that id.
    NoSuchConnection(String),
    /// `this connection cannot chat`: a plain HTTP connection.
    CannotChat,
    /// `RPC Timeout`: the node holding the connection did not answer in time.
    RpcTimeout,
    /// A parameter verb without its key: `key is required`.
    KeyRequired,
    /// The room store or the bus could not be reached: `chat store unavailable
    /// (REASON)`. Nothing was changed.
    Store(String),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::RoomExists => f.write_str("room exists"),
            ChatError::NoSuchRoom => f.write_str("room does not exist"),
            ChatError::RoomRequired => f.write_str("a room is required"),
            ChatError::AlreadyInRoom(room) => write!(f, "connection already in this room ({room})"),
            ChatError::NotInRoom(room) => write!(f, "connection not in this room ({room})"),
            ChatError::RoomAndMessageRequired => f.write_str("both room and message are required"),
            ChatError::VerbNotAllowed(verb) => write!(f, "verb not found or not allowed ({verb})"),
            ChatError::Vetoed(message) => f.write_str(message),
            ChatError::NoSuchConnection(id) => write!(f, "connection not found ({id})"),
            ChatError::CannotChat => f.write_str("this connection cannot chat"),
            ChatError::RpcTimeout => f.write_str("RPC Timeout"),
            ChatError::KeyRequired => f.write_str("key is required"),
            ChatError::Store(reason) => write!(f, "chat store unavailable ({reason})"),
        }
    }
}

impl std::error::Error for ChatError {}

/// A chat error reached over HTTP is the client's mistake (400, its text shown),
/// except a timeout between nodes (504), a missing connection (404) and a store
/// that cannot be reached (503, its reason kept from the client).
impl From<ChatError> for HttpError {
    fn from(err: ChatError) -> Self {
        let status = match err {
            ChatError::RpcTimeout => 504,
            ChatError::Store(_) => 503,
            ChatError::NoSuchConnection(_) | ChatError::NoSuchRoom => 404,
            _ => 400,
        };
        let expose = !matches!(err, ChatError::Store(_));
        HttpError::new(status).message(err.to_string()).expose(expose)
    }
}

#[cfg(feature = "redis")]
impl ChatError {
    /// The error as it crosses the bus: a short code and its argument, so the
    /// calling node gets back the same variant the answering node returned.
    pub(crate) fn to_wire(&self) -> (&'static str, &str) {
        match self {
            ChatError::RoomExists => ("exists", ""),
            ChatError::NoSuchRoom => ("no-room", ""),
            ChatError::RoomRequired => ("room-required", ""),
            ChatError::AlreadyInRoom(room) => ("in-room", room),
            ChatError::NotInRoom(room) => ("not-in-room", room),
            ChatError::RoomAndMessageRequired => ("message-required", ""),
            ChatError::VerbNotAllowed(verb) => ("verb", verb),
            ChatError::Vetoed(message) => ("veto", message),
            ChatError::NoSuchConnection(id) => ("no-connection", id),
            ChatError::CannotChat => ("cannot-chat", ""),
            ChatError::RpcTimeout => ("timeout", ""),
            ChatError::KeyRequired => ("key-required", ""),
            ChatError::Store(reason) => ("store", reason),
        }
    }

    /// The inverse of [`to_wire`](Self::to_wire); an unknown code (a newer peer)
    /// reads as a veto carrying its argument.
    pub(crate) fn from_wire(code: &str, arg: &str) -> ChatError {
        match code {
            "exists" => ChatError::RoomExists,
            "no-room" => ChatError::NoSuchRoom,
            "room-required" => ChatError::RoomRequired,
            "in-room" => ChatError::AlreadyInRoom(arg.to_owned()),
            "not-in-room" => ChatError::NotInRoom(arg.to_owned()),
            "message-required" => ChatError::RoomAndMessageRequired,
            "verb" => ChatError::VerbNotAllowed(arg.to_owned()),
            "no-connection" => ChatError::NoSuchConnection(arg.to_owned()),
            "cannot-chat" => ChatError::CannotChat,
            "timeout" => ChatError::RpcTimeout,
            "key-required" => ChatError::KeyRequired,
            "store" => ChatError::Store(arg.to_owned()),
            _ => ChatError::Vetoed(arg.to_owned()),
        }
    }
}
