//! [`Message`]: what is pushed to a live connection, in Actionhero's wire shapes.
//!
//! Every message carries a `context`: `response` (the answer to a client's frame,
//! with its `messageId`), `user` (a chat message, [`SayPayload`]), `api` (the server
//! speaking: the welcome, a goodbye) or `alert` (the transport's own news, such as
//! messages the client missed). A message is encoded once, to JSON bytes; a room's
//! fan-out clones those bytes into each mailbox.
//!
//! ```
//! use tower_context::connection::Message;
//!
//! let welcome = Message::api(serde_json::json!({ "welcome": "Hello" }));
//! assert_eq!(welcome.bytes(), r#"{"welcome":"Hello","context":"api"}"#.as_bytes());
//! let ok = Message::ok(serde_json::json!(true), "7");
//! assert_eq!(ok.bytes(), r#"{"status":"OK","context":"response","data":true,"messageId":"7"}"#.as_bytes());
//! ```

use bytes::Bytes;
use serde_json::Value;

/// A message for a live connection, encoded once.
///
/// Every message carries a `context`: `response` (the answer to a client's frame,
/// with its `messageId`), `user` (a chat message, [`SayPayload`]), `api` (the server
/// speaking: the welcome, a goodbye) or `alert` (the transport's own news, such as
/// messages the client missed). A message is encoded once, to JSON bytes; a room's
/// fan-out clones those bytes into each mailbox.
///
/// ```
/// use tower_context::connection::Message;
///
/// let welcome = Message::api(serde_json::json!({ "welcome": "Hello" }));
/// assert_eq!(welcome.bytes(), r#"{"welcome":"Hello","context":"api"}"#.as_bytes());
/// let ok = Message::ok(serde_json::json!(true), "7");
/// assert_eq!(ok.bytes(), r#"{"status":"OK","context":"response","data":true,"messageId":"7"}"#.as_bytes());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message(Bytes);

impl Message {
    /// The encoded JSON bytes, as they go on the wire.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Takes the encoded bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The server speaking (`context: "api"`): `fields` (a JSON object) with the
    /// context added last. Anything that is not an object is sent as `{"message": ..}`.
    pub fn api(fields: Value) -> Message {
        Message::with_context(fields, "api")
    }

    /// The transport's own news (`context: "alert"`).
    pub fn alert(message: impl Into<String>) -> Message {
        Message::with_context(Value::String(message.into()), "alert")
    }

    /// The alert a client gets when its mailbox was full and `missed` messages were
    /// dropped to make room: `{"message": "...", "missed": N, "context": "alert"}`.
    pub fn missed(missed: u64) -> Message {
        let text = Value::from(format!("you missed {missed} message{}", if missed == 1 { "" } else { "s" }));
        encode(&[("message", &text), ("missed", &missed.into()), ("context", &"alert".into())])
    }

    /// The alert a member of `room` gets when the bus lost `missed` messages from
    /// another node on the way: `{"message": "...", "room": ROOM, "missed": N,
    /// "context": "alert"}`.
    pub fn gap(room: &str, missed: u64) -> Message {
        let text = Value::from(format!(
            "{missed} message{} in this room may have been missed",
            if missed == 1 { "" } else { "s" }
        ));
        encode(&[
            ("message", &text),
            ("room", &room.into()),
            ("missed", &missed.into()),
            ("context", &"alert".into()),
        ])
    }

    /// A successful answer to the client's frame `message_id`:
    /// `{"status": "OK", "context": "response", "data": .., "messageId": ..}`. A `data` of
    /// `null` is left out, as Actionhero leaves it out of a `say`'s answer.
    pub fn ok(data: Value, message_id: impl Into<Value>) -> Message {
        let (ok, response, id) = (Value::from("OK"), Value::from("response"), message_id.into());
        if data.is_null() {
            return encode(&[("status", &ok), ("context", &response), ("messageId", &id)]);
        }
        encode(&[("status", &ok), ("context", &response), ("data", &data), ("messageId", &id)])
    }

    /// A successful answer whose fields sit beside `status` rather than under
    /// `data`, as Actionhero answers a `file` event: `{"status": "OK", "context":
    /// "response", ..fields, "messageId": ..}`.
    #[cfg(all(feature = "files", feature = "ws"))]
    pub(crate) fn ok_with_fields(fields: &[(&str, &Value)], message_id: Value) -> Message {
        let (ok, response) = (Value::from("OK"), Value::from("response"));
        let mut pairs = Vec::with_capacity(fields.len() + 3);
        pairs.extend([("status", &ok), ("context", &response)]);
        pairs.extend_from_slice(fields);
        pairs.push(("messageId", &message_id));
        encode(&pairs)
    }

    /// A failed answer: `{"status": "Error: ..", "error": "Error: ..", "context":
    /// "response", "data": .., "messageId": ..}`, Actionhero's shape (the text is
    /// prefixed with `Error: ` as JavaScript prints an error).
    pub fn error(error: &str, data: Value, message_id: impl Into<Value>) -> Message {
        let text = Value::from(format!("Error: {error}"));
        let (response, id) = (Value::from("response"), message_id.into());
        encode(&[
            ("status", &text),
            ("error", &text),
            ("context", &response),
            ("data", &data),
            ("messageId", &id),
        ])
    }

    /// A chat message for one receiver.
    pub fn say(payload: &SayPayload) -> Message {
        let (room, from) = (Value::from(payload.room.as_str()), Value::from(payload.from.as_str()));
        let (user, sent_at) = (Value::from("user"), Value::from(payload.sent_at));
        encode(&[
            ("message", &payload.message),
            ("room", &room),
            ("from", &from),
            ("context", &user),
            ("sentAt", &sent_at),
        ])
    }

    fn with_context(fields: Value, context: &str) -> Message {
        let context = Value::from(context);
        match &fields {
            Value::Object(map) => {
                let mut pairs: Vec<(&str, &Value)> = map
                    .iter()
                    .filter(|(k, _)| k.as_str() != "context")
                    .map(|(k, v)| (k.as_str(), v))
                    .collect();
                pairs.push(("context", &context));
                encode(&pairs)
            }
            other => encode(&[("message", other), ("context", &context)]),
        }
    }
}

/// Encodes fields in the order given (a JSON map would sort them; the wire shapes
/// are compared byte for byte with Actionhero's).
fn encode(pairs: &[(&str, &Value)]) -> Message {
    use serde::ser::{SerializeMap, Serializer};
    let mut out = Vec::with_capacity(64);
    let mut serializer = serde_json::Serializer::new(&mut out);
    let written = (|| {
        let mut map = serializer.serialize_map(Some(pairs.len()))?;
        for (key, value) in pairs {
            map.serialize_entry(key, value)?;
        }
        map.end()
    })();
    // Serializing strings and JSON values into memory cannot fail.
    debug_assert!(written.is_ok());
    Message(Bytes::from(out))
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Message").field(&String::from_utf8_lossy(&self.0)).finish()
    }
}

/// A chat message as each receiver gets it (Actionhero's say payload):
/// `{"message", "room", "from", "context": "user", "sentAt"}`. `from` is the sender's
/// connection id, or `"0"` for the server.
#[derive(Clone, Debug, PartialEq)]
pub struct SayPayload {
    /// What was said: any JSON value (usually text).
    pub message: Value,
    /// The room it was said in.
    pub room: String,
    /// The sender's connection id, `"0"` for a server-side broadcast.
    pub from: String,
    /// When it was said, in milliseconds since the Unix epoch (`sentAt`).
    pub sent_at: u64,
}

impl SayPayload {
    /// Reads a payload back from the bytes [`Message::say`] made (what another node
    /// published); `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<SayPayload> {
        let Value::Object(mut fields) = serde_json::from_slice(bytes).ok()? else { return None };
        Some(SayPayload {
            message: fields.remove("message")?,
            room: fields.remove("room")?.as_str()?.to_owned(),
            from: fields.remove("from")?.as_str()?.to_owned(),
            sent_at: fields.remove("sentAt")?.as_u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shapes_match_actionhero() {
        let err = Message::error("room does not exist", json!({}), 8);
        assert_eq!(
            err.bytes(),
            r#"{"status":"Error: room does not exist","error":"Error: room does not exist","context":"response","data":{},"messageId":8}"#
                .as_bytes()
        );
        assert_eq!(
            Message::ok(Value::Null, 4).bytes(),
            r#"{"status":"OK","context":"response","messageId":4}"#.as_bytes()
        );
        let say = SayPayload {
            message: json!("hello there"),
            room: "defaultRoom".into(),
            from: "c1".into(),
            sent_at: 1_796_120_220_170,
        };
        assert_eq!(SayPayload::from_bytes(Message::say(&say).bytes()).as_ref(), Some(&say));
        assert_eq!(SayPayload::from_bytes(b"garbage"), None);
        assert_eq!(
            Message::say(&say).bytes(),
            r#"{"message":"hello there","room":"defaultRoom","from":"c1","context":"user","sentAt":1796120220170}"#
                .as_bytes()
        );
        assert_eq!(
            Message::missed(3).bytes(),
            r#"{"message":"you missed 3 messages","missed":3,"context":"alert"}"#.as_bytes()
        );
        assert_eq!(Message::api(json!("bye")).bytes(), r#"{"message":"bye","context":"api"}"#.as_bytes());
    }
}
