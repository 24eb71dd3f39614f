//! [`RoomStore`]: the room registry and membership shared by the nodes of one
//! cluster: which rooms exist, who is in each (with the node holding them and when
//! they joined), and which node holds each chat connection.
//!
//! [`MemoryRooms`] keeps them in the process (one node, or [`LocalBus::cluster`]);
//! `RedisRooms` (feature `redis`) keeps them in Redis, with a lease per node.
//!
//! [`LocalBus::cluster`]: super::LocalBus::cluster

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value};

use super::ChatError;
use super::bus::{BoxFuture, Node};

/// One member of a room: the connection, the node that holds it, and when it
/// joined (milliseconds since the Unix epoch, Actionhero's `joinedAt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The connection's id.
    pub id: String,
    /// The id of the node holding the connection.
    pub node: String,
    /// When it joined, in milliseconds since the Unix epoch.
    pub joined_at: u64,
}

/// Where a cluster keeps its rooms and members. Every method may fail with
/// [`ChatError::Store`] when the store cannot be reached; a store keeps each
/// change whole (a failed call changes nothing).
pub trait RoomStore: Send + Sync + 'static {
    /// Makes a room. Errors: `room exists`.
    fn add_room(&self, room: &str) -> BoxFuture<Result<(), ChatError>>;

    /// Deletes a room, returning its members. Error: `room does not exist`.
    fn remove_room(&self, room: &str) -> BoxFuture<Result<Vec<Member>, ChatError>>;

    /// Whether a room exists.
    fn room_exists(&self, room: &str) -> BoxFuture<Result<bool, ChatError>>;

    /// Every room, by name, sorted.
    fn rooms(&self) -> BoxFuture<Result<Vec<String>, ChatError>>;

    /// Records a member: refused with `connection already in this room (ROOM)`
    /// when it is one already (two joins at once record it once), `room does not
    /// exist` when the room is gone.
    fn join(&self, room: &str, member: Member) -> BoxFuture<Result<(), ChatError>>;

    /// Removes a member; whether it was one.
    fn leave(&self, room: &str, connection: &str) -> BoxFuture<Result<bool, ChatError>>;

    /// A room's members, by id. Error: `room does not exist`.
    fn members(&self, room: &str) -> BoxFuture<Result<Vec<Member>, ChatError>>;

    /// Records that `node` holds `connection`.
    fn register(&self, connection: &str, node: &str) -> BoxFuture<Result<(), ChatError>>;

    /// Forgets where `connection` is held.
    fn unregister(&self, connection: &str) -> BoxFuture<Result<(), ChatError>>;

    /// The node holding `connection`, if any.
    fn node_of(&self, connection: &str) -> BoxFuture<Result<Option<String>, ChatError>>;

    /// A node starts using this store (a store with leases starts renewing the
    /// node's, and sweeping the members of nodes that died). Nothing by default.
    fn attach(&self, node: Node) {
        let _ = node;
    }
}

/// Actionhero's `roomStatus`: `{room, members: {id: {id, joinedAt}}, membersCount}`,
/// members in id order.
pub(crate) fn status(room: &str, mut members: Vec<Member>) -> Value {
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let count = members.len();
    let listed: Map<String, Value> = members
        .into_iter()
        .map(|m| {
            let entry = serde_json::json!({ "id": m.id, "joinedAt": m.joined_at });
            (m.id, entry)
        })
        .collect();
    serde_json::json!({ "room": room, "members": listed, "membersCount": count })
}

/// The in-process store: rooms and members kept in this process, for one node or
/// the nodes of a [`LocalBus::cluster`](super::LocalBus::cluster).
#[derive(Default)]
pub struct MemoryRooms {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryRooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRooms").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    rooms: BTreeMap<String, BTreeMap<String, Member>>,
    /// Connection id -> the node that holds it.
    directory: HashMap<String, String>,
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<T> {
    Box::pin(std::future::ready(value))
}

impl MemoryRooms {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RoomStore for MemoryRooms {
    fn add_room(&self, room: &str) -> BoxFuture<Result<(), ChatError>> {
        let mut state = self.lock();
        if state.rooms.contains_key(room) {
            return ready(Err(ChatError::RoomExists));
        }
        state.rooms.insert(room.to_owned(), BTreeMap::new());
        ready(Ok(()))
    }

    fn remove_room(&self, room: &str) -> BoxFuture<Result<Vec<Member>, ChatError>> {
        ready(self.lock().rooms.remove(room).map(|m| m.into_values().collect()).ok_or(ChatError::NoSuchRoom))
    }

    fn room_exists(&self, room: &str) -> BoxFuture<Result<bool, ChatError>> {
        ready(Ok(self.lock().rooms.contains_key(room)))
    }

    fn rooms(&self) -> BoxFuture<Result<Vec<String>, ChatError>> {
        ready(Ok(self.lock().rooms.keys().cloned().collect()))
    }

    fn join(&self, room: &str, member: Member) -> BoxFuture<Result<(), ChatError>> {
        let mut state = self.lock();
        let Some(members) = state.rooms.get_mut(room) else { return ready(Err(ChatError::NoSuchRoom)) };
        if members.contains_key(&member.id) {
            return ready(Err(ChatError::AlreadyInRoom(room.to_owned())));
        }
        members.insert(member.id.clone(), member);
        ready(Ok(()))
    }

    fn leave(&self, room: &str, connection: &str) -> BoxFuture<Result<bool, ChatError>> {
        let left =
            self.lock().rooms.get_mut(room).is_some_and(|members| members.remove(connection).is_some());
        ready(Ok(left))
    }

    fn members(&self, room: &str) -> BoxFuture<Result<Vec<Member>, ChatError>> {
        let state = self.lock();
        ready(state.rooms.get(room).map(|m| m.values().cloned().collect()).ok_or(ChatError::NoSuchRoom))
    }

    fn register(&self, connection: &str, node: &str) -> BoxFuture<Result<(), ChatError>> {
        self.lock().directory.insert(connection.to_owned(), node.to_owned());
        ready(Ok(()))
    }

    fn unregister(&self, connection: &str) -> BoxFuture<Result<(), ChatError>> {
        self.lock().directory.remove(connection);
        ready(Ok(()))
    }

    fn node_of(&self, connection: &str) -> BoxFuture<Result<Option<String>, ChatError>> {
        ready(Ok(self.lock().directory.get(connection).cloned()))
    }
}
