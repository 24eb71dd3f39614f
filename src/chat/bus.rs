//! [`Bus`]: how chat crosses instances. A node publishes each room message once on
//! the bus (its own members got theirs already: local receivers never wait on the
//! bus), and asks the node that holds a connection to join, leave or push to it.
//!
//! [`LocalBus`] connects nodes in one process; [`LocalBus::cluster`] makes `n` of them
//! sharing one room registry, so every multi-node behaviour can be tested on any
//! machine. A bus over Redis implements the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::rooms::{MemoryRooms, RoomStore};
use super::{Chat, ChatError, Inner};

/// A boxed future, for the bus's object-safe methods.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What one node asks the node holding a connection to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Join `room` (join middleware runs there).
    Join {
        /// The connection's id.
        connection: String,
        /// The room.
        room: String,
    },
    /// Leave `room` (leave middleware runs there; with `force`, its veto is ignored,
    /// as when the room is destroyed).
    Leave {
        /// The connection's id.
        connection: String,
        /// The room.
        room: String,
        /// Leave even if middleware refuses.
        force: bool,
    },
    /// Push these encoded message bytes to the connection.
    Send {
        /// The connection's id.
        connection: String,
        /// The message, as it goes on the wire.
        message: Bytes,
    },
}

impl Command {
    /// The connection the command is for.
    pub fn connection(&self) -> &str {
        match self {
            Command::Join { connection, .. }
            | Command::Leave { connection, .. }
            | Command::Send { connection, .. } => connection,
        }
    }
}

/// A chat node as a bus sees it: where it delivers what other nodes publish, and
/// the commands addressed to it. It does not keep the node alive.
#[derive(Clone)]
pub struct Node(pub(super) Weak<Inner>);

impl Node {
    /// The node's id, while it lives.
    pub fn id(&self) -> Option<String> {
        self.0.upgrade().map(|inner| inner.id.to_string())
    }

    /// A room message another node published: delivered to this node's members of
    /// `room` (none: nothing to do).
    pub fn deliver(&self, room: &str, payload: &Bytes) {
        if let Some(inner) = self.0.upgrade() {
            Chat { inner }.deliver_local(room, payload, None);
        }
    }

    /// Runs a command addressed to this node.
    pub fn handle(&self, command: Command) -> BoxFuture<Result<(), ChatError>> {
        let node = self.0.upgrade();
        Box::pin(async move {
            let Some(inner) = node else { return Err(ChatError::RpcTimeout) };
            Chat { inner }.handle(command).await
        })
    }

    /// Messages from another node were lost on the way (the bus saw a gap in its
    /// sequence): this node's members of the room get an `alert` frame saying so,
    /// and the app's [`Chat::on_gap`] callback is told.
    pub fn gap(&self, gap: &Gap) {
        if let Some(inner) = self.0.upgrade() {
            Chat { inner }.report_gap(gap);
        }
    }

    /// A member that a store swept (its node died without goodbye) left `room`:
    /// this node runs the leave middleware for it, which cannot refuse.
    pub fn swept(&self, room: &str, member: &str) {
        if let Some(inner) = self.0.upgrade() {
            Chat { inner }.run_swept_leave(room, member);
        }
    }

    /// What the node holds, for a store that lost its records (a Redis restarted
    /// empty, a lease that lapsed while the node lived) to record again: its
    /// connections, and its members of each room.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn holdings(&self) -> Option<Holdings> {
        self.0.upgrade().map(|inner| Chat { inner }.holdings())
    }

    /// Whether the node still lives.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// What a node holds: its connections' ids, and each room's members on the node.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) type Holdings = (Vec<String>, Vec<(String, Vec<String>)>);

/// Messages a bus knows were lost between nodes: `missed` envelopes from publisher
/// `node`, in `room` (or, with no room, on the node's own channel: commands, whose
/// callers got `RPC Timeout`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    /// The publishing node.
    pub node: String,
    /// The room, for room messages.
    pub room: Option<String>,
    /// How many envelopes were lost.
    pub missed: u64,
}

impl Gap {
    /// A gap of `missed` envelopes from `node`, in `room` if any.
    pub fn new(node: impl Into<String>, room: Option<String>, missed: u64) -> Gap {
        Gap { node: node.into(), room, missed }
    }
}

/// What a bus counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Envelopes dropped because they failed authentication, were malformed or
    /// were over the size limit.
    pub rejected: u64,
    /// Gaps seen (each reported to the app and to the room's members).
    pub gaps: u64,
    /// Envelopes known lost, summed over the gaps.
    pub missed: u64,
    /// Times the bus lost its connection and subscribed again.
    pub reconnects: u64,
}

/// How chat crosses instances. A node publishes each room message once on
/// the bus (its own members got theirs already: local receivers never wait on the
/// bus), and asks the node that holds a connection to join, leave or push to it.
///
/// [`LocalBus`] connects nodes in one process; [`LocalBus::cluster`] makes `n` of them
/// sharing one room registry, so every multi-node behaviour can be tested on any
/// machine. `RedisBus` (feature `redis`) implements it over
/// Redis.
pub trait Bus: Send + Sync + 'static {
    /// Connects a node: from now on it gets what others publish and the commands
    /// addressed to it.
    fn attach(&self, node: Node);

    /// Publishes a room message from node `from` to every other node.
    fn publish(&self, from: &str, room: &str, payload: Bytes);

    /// Sends `command` to node `to`, failing with [`ChatError::RpcTimeout`] when it
    /// does not answer within `timeout`.
    fn call(&self, to: &str, command: Command, timeout: Duration) -> BoxFuture<Result<(), ChatError>>;

    /// A member of this node joins `room`: from when this resolves, the node gets
    /// the room's messages from other nodes. Called for every join, so each joiner
    /// learns whether the room is heard: a bus subscribes once, and a join that
    /// comes while that subscription is under way should wait for it. A bus that
    /// delivers every room to every node has nothing to do (the default).
    fn watch(&self, node: &str, room: &str) -> BoxFuture<Result<(), ChatError>> {
        let _ = (node, room);
        Box::pin(std::future::ready(Ok(())))
    }

    /// This node has no member left in `room`. Called while the node holds the lock
    /// its joins take (so no join comes between the last leave and this call): note
    /// it and leave anything slow to a task, and never call back into the chat.
    /// Nothing by default.
    fn unwatch(&self, node: &str, room: &str) {
        let _ = (node, room);
    }

    /// Resolves once every node has handled what this node published before the
    /// call (a barrier: tests, orderly shutdowns). A bus that delivers as it
    /// publishes has nothing to wait for (the default).
    fn flush(&self) -> BoxFuture<Result<(), ChatError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// What the bus counted. Zeros by default.
    fn stats(&self) -> BusStats {
        BusStats::default()
    }
}

/// The in-process bus: see the [module docs](super).
#[derive(Default)]
pub struct LocalBus {
    nodes: RwLock<Vec<(String, Node)>>,
}

impl LocalBus {
    /// `n` chat nodes in one process, sharing one room registry and this bus: a
    /// message said on one reaches members on all, and a connection held by one can
    /// be joined, left and pushed to from any.
    ///
    /// ```
    /// use tower_context::chat::LocalBus;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let nodes = LocalBus::cluster(3);
    /// nodes[0].add_room("lobby").await.unwrap();
    /// assert!(nodes[2].room_exists("lobby").await.unwrap());
    /// # });
    /// ```
    pub fn cluster(n: usize) -> Vec<Chat> {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let rooms: Arc<dyn RoomStore> = Arc::new(MemoryRooms::default());
        (0..n).map(|i| Chat::node(format!("node-{i}"), Arc::clone(&bus), Arc::clone(&rooms))).collect()
    }

    fn nodes(&self) -> Vec<(String, Node)> {
        self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Bus for LocalBus {
    fn attach(&self, node: Node) {
        let Some(id) = node.id() else { return };
        let mut nodes = self.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        nodes.retain(|(_, n)| n.0.strong_count() > 0);
        nodes.push((id, node));
    }

    fn publish(&self, from: &str, room: &str, payload: Bytes) {
        for (id, node) in self.nodes() {
            if id != from {
                node.deliver(room, &payload);
            }
        }
    }

    fn call(&self, to: &str, command: Command, timeout: Duration) -> BoxFuture<Result<(), ChatError>> {
        let node = self.nodes().into_iter().find(|(id, _)| id == to).map(|(_, node)| node);
        Box::pin(async move {
            let Some(node) = node else { return Err(ChatError::RpcTimeout) };
            tokio::time::timeout(timeout, node.handle(command)).await.unwrap_or(Err(ChatError::RpcTimeout))
        })
    }
}
