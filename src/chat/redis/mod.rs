//! Chat across instances on Redis (feature `redis`): [`RedisChat`] connects a node,
//! with a [`RedisBus`] to reach the other nodes and [`RedisRooms`] to share rooms
//! and membership with them, both on one connection manager (RESP3, resubscribing
//! by itself after a reconnect).
//!
//! ```no_run
//! # async fn run() -> Result<(), tower_context::chat::ChatError> {
//! use tower_context::chat::RedisChat;
//! use tower_context::cookies::Keys;
//!
//! let chat = RedisChat::new("redis://127.0.0.1:6379/")
//!     .keys(Keys::new(["a long random secret shared by every instance"]))
//!     .rooms(["defaultRoom"])
//!     .connect()
//!     .await?;
//! chat.on_gap(|gap| eprintln!("lost {} messages from {}", gap.missed, gap.node));
//! # Ok(()) }
//! ```
//!
//! What is guaranteed, and what is not:
//! - A message said on one node reaches the members on every other node once, in
//!   the order its node said them, or the loss is reported: an `alert` frame to the
//!   room's members on the node that lost it and [`Chat::on_gap`]. Losses are told
//!   from the sequence numbers every envelope carries, and from marks exchanged
//!   after a reconnect, so a lost last message is seen too.
//! - Envelopes are authenticated with HMAC-SHA256 under [`Keys`] (sealed with the
//!   first key, opened with any): one that fails, is malformed or is over the size
//!   limit is dropped and counted ([`BusStats::rejected`](super::BusStats)).
//! - A node that dies without goodbye has its members swept within two leases
//!   (leave middleware runs for each on the node that swept it).
//! - Redis must be one server (or a primary): the scripts touch keys they compute,
//!   which Redis Cluster would refuse.

mod bus;
mod envelope;
mod rooms;

use std::sync::Arc;
use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use bus::RedisBus;
pub use rooms::RedisRooms;

use super::{Chat, ChatError};
use crate::cookies::Keys;

/// The names of a cluster's keys and channels, under its prefix.
#[derive(Debug)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    /// `PREFIX` + `what`.
    fn under(&self, what: std::fmt::Arguments<'_>) -> String {
        format!("{}{what}", self.prefix)
    }
    fn rooms(&self) -> String {
        self.under(format_args!("rooms"))
    }
    fn conns(&self) -> String {
        self.under(format_args!("conns"))
    }
    fn nodes(&self) -> String {
        self.under(format_args!("nodes"))
    }
    /// A room's member hash and its pub/sub channel: one name for both (keys and
    /// channels are apart in Redis).
    fn room(&self, room: &str) -> String {
        self.under(format_args!("room:{room}"))
    }
    fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.prefix.as_str())?.strip_prefix("room:")
    }
    fn node_conns(&self, node: &str) -> String {
        self.under(format_args!("conns:{node}"))
    }
    fn held(&self, node: &str) -> String {
        self.under(format_args!("held:{node}"))
    }
    fn lease(&self, node: &str) -> String {
        self.under(format_args!("lease:{node}"))
    }
    fn node_channel(&self, node: &str) -> String {
        self.under(format_args!("node:{node}"))
    }
    fn all_channel(&self) -> String {
        self.under(format_args!("all"))
    }
}

/// Every node in the registry, with whether its lease is there: two round trips
/// whatever the number of nodes.
async fn nodes_and_leases(
    conn: &mut ConnectionManager,
    names: &Names,
) -> redis::RedisResult<Vec<(String, bool)>> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(names.nodes()).query_async(conn).await?;
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut leases = redis::pipe();
    for node in &nodes {
        leases.cmd("EXISTS").arg(names.lease(node));
    }
    let alive: Vec<bool> = leases.query_async(conn).await?;
    Ok(nodes.into_iter().zip(alive).collect())
}

/// Connects a chat node to a cluster on Redis: see the [module docs](self).
#[derive(Clone, Debug)]
#[must_use = "a RedisChat does nothing until `connect` is awaited"]
pub struct RedisChat {
    url: String,
    prefix: String,
    keys: Option<Keys>,
    lease: Duration,
    node: Option<String>,
    rpc_timeout: Duration,
    rooms: Vec<String>,
    max_envelope: usize,
}

impl RedisChat {
    /// A node on the Redis server at `url` (`redis://[user:password@]host:port/[db]`).
    /// Defaults: prefix `tower-context:chat:`, a 3 s lease, a random node id, a 5 s
    /// RPC timeout, envelopes up to 1 MiB. [`keys`](Self::keys) must be set.
    pub fn new(url: impl Into<String>) -> RedisChat {
        RedisChat {
            url: url.into(),
            prefix: "tower-context:chat:".into(),
            keys: None,
            lease: Duration::from_secs(3),
            node: None,
            rpc_timeout: Duration::from_secs(5),
            rooms: Vec::new(),
            max_envelope: 1 << 20,
        }
    }

    /// The prefix of every key and channel: clusters sharing a Redis differ here.
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisChat {
        self.prefix = prefix.into();
        self
    }

    /// The keys envelopes are sealed and opened with: the same on every node (the
    /// app's cookie [`Keys`] will do). Required.
    pub fn keys(mut self, keys: Keys) -> RedisChat {
        self.keys = Some(keys);
        self
    }

    /// How long a node's lease lasts: it is renewed every third of it, and a node
    /// that stops renewing has its members swept within two leases. At least 30 ms.
    pub fn lease(mut self, lease: Duration) -> RedisChat {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// This node's id, unique in the cluster (a random one by default).
    pub fn node_id(mut self, id: impl Into<String>) -> RedisChat {
        self.node = Some(id.into());
        self
    }

    /// How long a call to another node (join, leave, `send_to` a connection held
    /// there) waits before `RPC Timeout`.
    pub fn rpc_timeout(mut self, timeout: Duration) -> RedisChat {
        self.rpc_timeout = timeout;
        self
    }

    /// Rooms made at connect unless they exist (Actionhero's starting rooms).
    pub fn rooms<'a>(mut self, rooms: impl IntoIterator<Item = &'a str>) -> RedisChat {
        self.rooms.extend(rooms.into_iter().map(str::to_owned));
        self
    }

    /// The largest envelope accepted (larger ones are dropped and counted).
    pub fn max_envelope(mut self, bytes: usize) -> RedisChat {
        self.max_envelope = bytes;
        self
    }

    /// Connects, subscribes, takes the node's lease and makes the starting rooms.
    /// Errors: [`ChatError::Store`] when Redis cannot be reached, the URL is not
    /// one, or no keys were given.
    pub async fn connect(self) -> Result<Chat, ChatError> {
        let keys = self
            .keys
            .filter(|keys| !keys.is_empty())
            .ok_or_else(|| ChatError::Store("RedisChat needs keys: envelopes are authenticated".into()))?;
        let store_error = |err: redis::RedisError| ChatError::Store(err.to_string());
        let info = self.url.as_str().into_connection_info().map_err(store_error)?;
        let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(store_error)?;
        let (pushes, pushed) = tokio::sync::mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(pushes)
            .set_automatic_resubscription()
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200))
            .set_number_of_retries(8)
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(store_error)?;
        let id = self.node.unwrap_or_else(|| {
            format!("node-{:016x}", getrandom::u64().unwrap_or_else(|_| u64::from(std::process::id())))
        });
        let names = Arc::new(Names { prefix: self.prefix });
        let rooms = RedisRooms::new(conn.clone(), Arc::clone(&names), self.lease, self.rooms.clone());
        // A previous life of this node (restarted under the same id before its
        // lease ran out) leaves nothing behind: no ghost members.
        rooms.reclaim(&id).await.map_err(store_error)?;
        rooms.renew(&id).await.map_err(store_error)?;
        let bus = RedisBus::start(conn, pushed, names, id.clone(), keys, self.max_envelope).await?;
        let chat = Chat::node_with(id, Arc::new(bus), Arc::new(rooms), self.rpc_timeout);
        for room in &self.rooms {
            match chat.add_room(room).await {
                Ok(()) | Err(ChatError::RoomExists) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(chat)
    }
}
