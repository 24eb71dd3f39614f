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

use super::rooms::Rooms;
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
            Chat { inner }.handle(command)
        })
    }
}

/// How chat nodes reach each other.
///
/// bus), and asks the node that holds a connection to join, leave or push to it.
///
/// [`LocalBus`] connects nodes in one process; [`LocalBus::cluster`] makes `n` of them
/// sharing one room registry, so every multi-node behaviour can be tested on any
/// machine. A bus over Redis implements the same trait.
pub trait Bus: Send + Sync + 'static {
    /// Connects a node: from now on it gets what others publish and the commands
    /// addressed to it.
    fn attach(&self, node: Node);

    /// Publishes a room message from node `from` to every other node.
    fn publish(&self, from: &str, room: &str, payload: Bytes);

    /// Sends `command` to node `to`, failing with [`ChatError::RpcTimeout`] when it
    /// does not answer within `timeout`.
    fn call(&self, to: &str, command: Command, timeout: Duration) -> BoxFuture<Result<(), ChatError>>;
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
    /// let nodes = LocalBus::cluster(3);
    /// nodes[0].add_room("lobby").unwrap();
    /// assert!(nodes[2].room_exists("lobby"));
    /// ```
    pub fn cluster(n: usize) -> Vec<Chat> {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let rooms = Arc::new(Rooms::default());
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
