//! The room registry and membership, shared by the nodes of one cluster: which rooms
//! exist, who is in each (with the node holding them and when they joined), and
//! which node holds each chat connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

use super::ChatError;

#[derive(Default)]
pub(crate) struct Rooms {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rooms: BTreeMap<String, BTreeMap<String, Member>>,
    /// Connection id -> the node that holds it.
    directory: HashMap<String, Arc<str>>,
}

#[derive(Clone)]
struct Member {
    joined_at: u64,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn add(&self, room: &str) -> Result<(), ChatError> {
        if room.is_empty() {
            return Err(ChatError::RoomRequired);
        }
        let mut state = self.lock();
        if state.rooms.contains_key(room) {
            return Err(ChatError::RoomExists);
        }
        state.rooms.insert(room.to_owned(), BTreeMap::new());
        Ok(())
    }

    /// Deletes a room, returning its members' ids.
    pub(crate) fn remove(&self, room: &str) -> Result<Vec<String>, ChatError> {
        let members = self.lock().rooms.remove(room).ok_or(ChatError::NoSuchRoom)?;
        Ok(members.into_keys().collect())
    }

    pub(crate) fn exists(&self, room: &str) -> bool {
        self.lock().rooms.contains_key(room)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Records a member: refused when it is one already (two joins at once record
    /// it once) or the room is gone.
    pub(crate) fn join(&self, room: &str, connection: &str, joined_at: u64) -> Result<(), ChatError> {
        let mut state = self.lock();
        let members = state.rooms.get_mut(room).ok_or(ChatError::NoSuchRoom)?;
        if members.contains_key(connection) {
            return Err(ChatError::AlreadyInRoom(room.to_owned()));
        }
        members.insert(connection.to_owned(), Member { joined_at });
        Ok(())
    }

    /// Removes a member; whether it was one.
    pub(crate) fn leave(&self, room: &str, connection: &str) -> bool {
        self.lock().rooms.get_mut(room).is_some_and(|members| members.remove(connection).is_some())
    }

    /// Actionhero's `roomStatus`: `{room, members: {id: {id, joinedAt}}, membersCount}`.
    pub(crate) fn status(&self, room: &str) -> Result<Value, ChatError> {
        if room.is_empty() {
            return Err(ChatError::RoomRequired);
        }
        let state = self.lock();
        let members = state.rooms.get(room).ok_or(ChatError::NoSuchRoom)?;
        let listed: Map<String, Value> = members
            .iter()
            .map(|(id, member)| (id.clone(), serde_json::json!({ "id": id, "joinedAt": member.joined_at })))
            .collect();
        Ok(serde_json::json!({ "room": room, "members": listed, "membersCount": members.len() }))
    }

    pub(crate) fn register(&self, connection: &str, node: &Arc<str>) {
        self.lock().directory.insert(connection.to_owned(), Arc::clone(node));
    }

    pub(crate) fn unregister(&self, connection: &str) {
        self.lock().directory.remove(connection);
    }

    pub(crate) fn node_of(&self, connection: &str) -> Option<Arc<str>> {
        self.lock().directory.get(connection).cloned()
    }
}
