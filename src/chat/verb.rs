//! [`Verb`] and [`VerbSet`]: Actionhero's twelve connection verbs, parsed from
//! `(verb, words)`, and which transport may use which.
//!
//! ```
//! use tower_context::chat::{Verb, VerbSet};
//! use tower_context::connection::ConnectionKind;
//!
//! let verb = Verb::parse("say", ["lobby", "hello", "there"]).unwrap();
//! assert_eq!(verb, Verb::Say { room: "lobby".into(), message: "hello there".into() });
//! assert!(VerbSet::for_kind(ConnectionKind::WebSocket).allows(&verb));
//! assert!(!VerbSet::for_kind(ConnectionKind::Http1).allows(&verb));
//! assert_eq!(Verb::parse("paramAdd", ["a=b"]).unwrap(), Verb::ParamAdd { key: "a".into(), value: "b".into() });
//! ```

use serde_json::Value;

use super::{Chat, ChatError};
use crate::connection::{Connection, ConnectionKind};

/// One of Actionhero's connection verbs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verb {
    /// `quit`: destroy the connection.
    Quit,
    /// `exit`: destroy the connection.
    Exit,
    /// `paramAdd key value` or `paramAdd key=value`.
    ParamAdd {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// `paramDelete key`.
    ParamDelete(String),
    /// `paramView key`.
    ParamView(String),
    /// `paramsView`.
    ParamsView,
    /// `paramsDelete`.
    ParamsDelete,
    /// `roomAdd room`: join.
    RoomAdd(String),
    /// `roomLeave room`.
    RoomLeave(String),
    /// `roomView room`: the room's status, for a member.
    RoomView(String),
    /// `detailsView`.
    DetailsView,
    /// `say room words...`: the message is the words after the room, joined by a space.
    Say {
        /// The room.
        room: String,
        /// What is said.
        message: String,
    },
}

impl Verb {
    /// Parses `verb` with its `words`. Unknown verbs are
    /// [`ChatError::VerbNotAllowed`], as Actionhero answers them.
    pub fn parse<I, W>(verb: &str, words: I) -> Result<Verb, ChatError>
    where
        I: IntoIterator<Item = W>,
        W: Into<String>,
    {
        let mut words = words.into_iter().map(Into::into);
        let mut first = || words.next().unwrap_or_default();
        Ok(match verb {
            "quit" => Verb::Quit,
            "exit" => Verb::Exit,
            "paramAdd" => {
                let key = first();
                match key.split_once('=') {
                    Some((key, value)) => Verb::ParamAdd { key: key.to_owned(), value: value.to_owned() },
                    None => Verb::ParamAdd { key, value: first() },
                }
            }
            "paramDelete" => Verb::ParamDelete(first()),
            "paramView" => Verb::ParamView(first()),
            "paramsView" => Verb::ParamsView,
            "paramsDelete" => Verb::ParamsDelete,
            "roomAdd" => Verb::RoomAdd(first()),
            "roomLeave" => Verb::RoomLeave(first()),
            "roomView" => Verb::RoomView(first()),
            "detailsView" => Verb::DetailsView,
            "say" => {
                let room = first();
                let message = words.collect::<Vec<_>>().join(" ");
                Verb::Say { room, message }
            }
            other => return Err(ChatError::VerbNotAllowed(other.to_owned())),
        })
    }

    /// The verb's name, as a client writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Quit => "quit",
            Verb::Exit => "exit",
            Verb::ParamAdd { .. } => "paramAdd",
            Verb::ParamDelete(_) => "paramDelete",
            Verb::ParamView(_) => "paramView",
            Verb::ParamsView => "paramsView",
            Verb::ParamsDelete => "paramsDelete",
            Verb::RoomAdd(_) => "roomAdd",
            Verb::RoomLeave(_) => "roomLeave",
            Verb::RoomView(_) => "roomView",
            Verb::DetailsView => "detailsView",
            Verb::Say { .. } => "say",
        }
    }
}

/// Which verbs a transport allows: web none; WebSocket Actionhero's list (`quit`,
/// `exit`, `roomAdd`, `roomLeave`, `roomView`, `detailsView`, `say`); test all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerbSet(u16);

const ALL: [&str; 12] = [
    "quit",
    "exit",
    "paramAdd",
    "paramDelete",
    "paramView",
    "paramsView",
    "paramsDelete",
    "roomAdd",
    "roomLeave",
    "roomView",
    "detailsView",
    "say",
];

impl VerbSet {
    /// No verb.
    pub const NONE: VerbSet = VerbSet(0);
    /// Every verb.
    pub const ALL: VerbSet = VerbSet((1 << ALL.len()) - 1);

    /// The set of these verb names; unknown names are ignored.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> VerbSet {
        VerbSet(names.into_iter().filter_map(bit).fold(0, |set, b| set | b))
    }

    /// The set a transport of this kind allows.
    pub fn for_kind(kind: ConnectionKind) -> VerbSet {
        match kind {
            ConnectionKind::WebSocket | ConnectionKind::ServerSentEvents => {
                VerbSet::of(["quit", "exit", "roomAdd", "roomLeave", "roomView", "detailsView", "say"])
            }
            ConnectionKind::Test => VerbSet::ALL,
            _ => VerbSet::NONE,
        }
    }

    /// Whether `verb` is in the set.
    pub fn allows(self, verb: &Verb) -> bool {
        bit(verb.name()).is_some_and(|b| self.0 & b != 0)
    }
}

fn bit(name: &str) -> Option<u16> {
    ALL.iter().position(|v| *v == name).map(|i| 1 << i)
}

impl Chat {
    /// Runs a verb for `conn` (Actionhero's `connection.verbs`), if its transport
    /// allows it: the verb's answer as JSON (`true` for a join or leave, the params,
    /// the room's status, the details; `null` for say).
    ///
    /// # Errors
    ///
    /// [`ChatError::VerbNotAllowed`] when the transport does not allow it, else what
    /// the verb itself fails with.
    pub async fn verb(&self, conn: &Connection, verb: Verb) -> Result<Value, ChatError> {
        if !VerbSet::for_kind(conn.kind()).allows(&verb) {
            return Err(ChatError::VerbNotAllowed(verb.name().to_owned()));
        }
        let params = conn.params();
        match verb {
            Verb::Quit | Verb::Exit => {
                self.destroy(conn).await;
                Ok(Value::Bool(true))
            }
            Verb::ParamAdd { key, value } => {
                if key.is_empty() {
                    return Err(ChatError::KeyRequired);
                }
                params.insert(key, value);
                Ok(Value::Bool(true))
            }
            Verb::ParamDelete(key) => {
                params.remove(&key);
                Ok(Value::Bool(true))
            }
            Verb::ParamView(key) => Ok(params.get(&key).unwrap_or(Value::Null)),
            Verb::ParamsView => Ok(Value::Object(params.to_map())),
            Verb::ParamsDelete => {
                params.clear();
                Ok(Value::Bool(true))
            }
            Verb::RoomAdd(room) => self.join(conn.id(), &room).await.map(|()| Value::Bool(true)),
            Verb::RoomLeave(room) => self.leave(conn.id(), &room).await.map(|()| Value::Bool(true)),
            Verb::RoomView(room) => {
                if !conn.rooms_list().contains(&room) {
                    return Err(ChatError::NotInRoom(room));
                }
                self.room_status(&room).await
            }
            Verb::DetailsView => Ok(conn.details()),
            Verb::Say { room, message } => {
                self.say(conn, &room, Value::String(message)).map(|()| Value::Null)
            }
        }
    }
}

impl Connection {
    /// Runs a verb on this connection (Actionhero's `connection.verbs(verb, words)`):
    /// [`Chat::verb`] with the connection first.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use tower_context::chat::{Chat, Verb};
    /// use tower_context::connection::{Connection, ConnectionKind, MailboxConfig};
    ///
    /// let chat = Chat::new().with_rooms(["lobby"]);
    /// let addr = "127.0.0.1:50000".parse().unwrap();
    /// let conn = Connection::live(ConnectionKind::WebSocket, addr, addr, MailboxConfig::default());
    /// chat.register(&conn).await.unwrap();
    /// conn.verb(&chat, Verb::parse("roomAdd", ["lobby"]).unwrap()).await.unwrap();
    /// assert_eq!(conn.rooms(), ["lobby"]);
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Chat::verb`].
    pub async fn verb(&self, chat: &Chat, verb: Verb) -> Result<Value, ChatError> {
        chat.verb(self, verb).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_parses_and_names_itself() {
        for name in ALL {
            let verb = Verb::parse(name, ["a", "b", "c"]).unwrap();
            assert_eq!(verb.name(), name);
            assert!(VerbSet::ALL.allows(&verb));
            assert!(!VerbSet::NONE.allows(&verb));
        }
        assert_eq!(
            Verb::parse("paramAdd", ["k", "v"]).unwrap(),
            Verb::ParamAdd { key: "k".into(), value: "v".into() }
        );
        assert_eq!(
            Verb::parse("say", ["r"]).unwrap(),
            Verb::Say { room: "r".into(), message: String::new() }
        );
        assert_eq!(
            Verb::parse("documentation", Vec::<String>::new()).unwrap_err().to_string(),
            "verb not found or not allowed (documentation)"
        );
    }

    #[test]
    fn the_websocket_list_is_actionheros() {
        let ws = VerbSet::for_kind(ConnectionKind::WebSocket);
        let allowed: Vec<&str> =
            ALL.into_iter().filter(|v| ws.allows(&Verb::parse(v, ["x"]).unwrap())).collect();
        assert_eq!(allowed, ["quit", "exit", "roomAdd", "roomLeave", "roomView", "detailsView", "say"]);
        assert_eq!(VerbSet::for_kind(ConnectionKind::Http1), VerbSet::NONE);
        assert_eq!(VerbSet::for_kind(ConnectionKind::Test), VerbSet::ALL);
    }
}
