//! What travels between nodes on Redis: an envelope, authenticated with
//! HMAC-SHA256 under the app's [`Keys`].
//!
//! On the wire: the 32-byte MAC, then a one-line JSON header, a newline, and the
//! payload (a room message or a pushed message, as its bytes go to clients). The MAC
//! covers everything after it, so neither header nor payload can be changed, and the
//! header names the channel it was meant for, so a valid envelope replayed onto
//! another channel is refused too.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::cookies::Keys;

/// The label that turns each of the app's secrets into the chat's own key, so an
/// envelope's MAC can never stand for a cookie signature or the other way round.
const LABEL: &[u8] = b"tower-context/chat-envelopes/v1";

/// The keys envelopes are sealed with (the first) and opened with (any): one
/// HMAC-SHA256 state per secret, keyed with a key derived from it.
#[derive(Clone)]
pub(super) struct EnvelopeKeys(Vec<Hmac<Sha256>>);

impl EnvelopeKeys {
    pub(super) fn new(keys: &Keys) -> EnvelopeKeys {
        let derived = keys
            .secrets()
            .iter()
            .filter_map(|secret| {
                let key = secret.keygrip.sha256.clone().chain_update(LABEL).finalize().into_bytes();
                <Hmac<Sha256> as Mac>::new_from_slice(&key).ok()
            })
            .collect();
        EnvelopeKeys(derived)
    }
}

/// The length of an HMAC-SHA256 tag.
const MAC_LEN: usize = 32;

/// An envelope's header: who sent it, its place in the sender's sequence on its
/// channel, what it is, and the rest of its fields.
#[derive(Debug)]
pub(super) struct Header {
    pub(super) node: String,
    /// The sending process: a node restarted under the same id numbers afresh.
    pub(super) incarnation: u64,
    pub(super) seq: u64,
    pub(super) kind: Kind,
    pub(super) channel: String,
    pub(super) fields: Map<String, Value>,
}

/// What an envelope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A room message (payload: its bytes).
    Message,
    /// A command for the node owning the channel (payload: a pushed message).
    Command,
    /// The answer to a command.
    Reply,
    /// "Tell me where your sequence on this channel is": a node that just subscribed
    /// or reconnected asks, every node answers with a `Mark`.
    Sync,
    /// "My last envelope on this channel was number `seq`."
    Mark,
    /// A flush barrier: answer with a `Pong` once everything before it is handled.
    Ping,
    /// The answer to a `Ping`.
    Pong,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Message => "m",
            Kind::Command => "c",
            Kind::Reply => "r",
            Kind::Sync => "y",
            Kind::Mark => "k",
            Kind::Ping => "p",
            Kind::Pong => "o",
        }
    }

    fn from_code(code: &str) -> Option<Kind> {
        Some(match code {
            "m" => Kind::Message,
            "c" => Kind::Command,
            "r" => Kind::Reply,
            "y" => Kind::Sync,
            "k" => Kind::Mark,
            "p" => Kind::Ping,
            "o" => Kind::Pong,
            _ => return None,
        })
    }

    /// Whether the envelope takes a number in its sender's sequence on the channel
    /// (the ones whose loss matters: a `Mark` repeats the current number).
    pub(super) fn numbered(self) -> bool {
        matches!(self, Kind::Message | Kind::Command | Kind::Reply)
    }
}

/// The fixed part of an envelope's header as the sender seals it, borrowed: sealing
/// copies nothing it does not write.
#[derive(Clone, Copy)]
pub(super) struct Seal<'a> {
    pub(super) node: &'a str,
    pub(super) incarnation: u64,
    pub(super) seq: u64,
    pub(super) kind: Kind,
    pub(super) channel: &'a str,
}

/// Seals an envelope: MAC, header (`head` and the kind's own `fields`), newline,
/// payload.
pub(super) fn seal(
    keys: &EnvelopeKeys,
    head: Seal<'_>,
    mut fields: Map<String, Value>,
    payload: &[u8],
) -> Bytes {
    fields.insert("n".into(), Value::from(head.node));
    fields.insert("i".into(), Value::from(head.incarnation));
    fields.insert("s".into(), Value::from(head.seq));
    fields.insert("k".into(), Value::from(head.kind.code()));
    fields.insert("c".into(), Value::from(head.channel));
    let json = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
    let mut out = BytesMut::with_capacity(MAC_LEN + json.len() + 1 + payload.len());
    out.put_bytes(0, MAC_LEN);
    out.put_slice(&json);
    out.put_u8(b'\n');
    out.put_slice(payload);
    if let Some(mac) = keys.0.first() {
        let tag = mac.clone().chain_update(&out[MAC_LEN..]).finalize().into_bytes();
        out[..MAC_LEN].copy_from_slice(&tag);
    }
    out.freeze()
}

/// Why an envelope was dropped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rejected {
    TooLarge,
    BadMac,
    Malformed,
}

/// Opens an envelope that arrived on `channel`: its header and payload, or why it
/// is refused. Any of the keys may have sealed it (keys rotate).
pub(super) fn open(
    keys: &EnvelopeKeys,
    channel: &str,
    raw: &Bytes,
    limit: usize,
) -> Result<(Header, Bytes), Rejected> {
    if raw.len() > limit {
        return Err(Rejected::TooLarge);
    }
    if raw.len() <= MAC_LEN {
        return Err(Rejected::Malformed);
    }
    let (tag, body) = raw.split_at(MAC_LEN);
    let valid = keys.0.iter().any(|mac| mac.clone().chain_update(body).verify_slice(tag).is_ok());
    if !valid {
        return Err(Rejected::BadMac);
    }
    let newline = body.iter().position(|&b| b == b'\n').ok_or(Rejected::Malformed)?;
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&body[..newline]) else {
        return Err(Rejected::Malformed);
    };
    let mut take_str = |key: &str| match fields.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let node = take_str("n").ok_or(Rejected::Malformed)?;
    let kind = take_str("k").as_deref().and_then(Kind::from_code).ok_or(Rejected::Malformed)?;
    let meant_for = take_str("c").ok_or(Rejected::Malformed)?;
    if meant_for != channel {
        return Err(Rejected::Malformed);
    }
    let seq = fields.remove("s").and_then(|s| s.as_u64()).ok_or(Rejected::Malformed)?;
    let incarnation = fields.remove("i").and_then(|i| i.as_u64()).ok_or(Rejected::Malformed)?;
    let payload = raw.slice(MAC_LEN + newline + 1..);
    Ok((Header { node, incarnation, seq, kind, channel: meant_for, fields }, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals `header` as a sender would.
    fn seal_header(keys: &EnvelopeKeys, header: &Header, payload: &[u8]) -> Bytes {
        let head = Seal {
            node: &header.node,
            incarnation: header.incarnation,
            seq: header.seq,
            kind: header.kind,
            channel: &header.channel,
        };
        seal(keys, head, header.fields.clone(), payload)
    }

    fn header(channel: &str) -> Header {
        let mut fields = Map::new();
        fields.insert("q".into(), Value::from(7));
        Header {
            node: "a".into(),
            incarnation: 9,
            seq: 3,
            kind: Kind::Message,
            channel: channel.into(),
            fields,
        }
    }

    #[test]
    fn sealed_envelopes_open_under_any_current_key() {
        let old = EnvelopeKeys::new(&Keys::new(["old"]));
        let sealed = seal_header(&old, &header("ch"), b"payload\nwith newline");
        let rotated = EnvelopeKeys::new(&Keys::new(["new", "old"]));
        let (h, payload) = open(&rotated, "ch", &sealed, 1 << 20).unwrap();
        assert_eq!(
            (h.node.as_str(), h.seq, h.kind, h.fields["q"].as_u64()),
            ("a", 3, Kind::Message, Some(7))
        );
        assert_eq!(&payload[..], b"payload\nwith newline");
    }

    #[test]
    fn tampered_foreign_replayed_and_oversized_envelopes_are_refused() {
        let keys = EnvelopeKeys::new(&Keys::new(["k"]));
        let sealed = seal_header(&keys, &header("ch"), b"hi");
        let other = EnvelopeKeys::new(&Keys::new(["other"]));
        assert_eq!(open(&other, "ch", &sealed, 1 << 20).unwrap_err(), Rejected::BadMac);
        let mut flipped = sealed.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(open(&keys, "ch", &Bytes::from(flipped), 1 << 20).unwrap_err(), Rejected::BadMac);
        assert_eq!(open(&keys, "elsewhere", &sealed, 1 << 20).unwrap_err(), Rejected::Malformed);
        assert_eq!(open(&keys, "ch", &sealed, 10).unwrap_err(), Rejected::TooLarge);
        assert_eq!(
            open(&keys, "ch", &Bytes::from_static(b"garbage"), 1 << 20).unwrap_err(),
            Rejected::Malformed
        );
        assert_eq!(open(&keys, "ch", &Bytes::from(vec![0u8; 80]), 1 << 20).unwrap_err(), Rejected::BadMac);
    }
}
