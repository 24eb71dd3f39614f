//! [`RedisRooms`]: the room registry and membership in Redis, with a lease per node.
//!
//! Keys (under the prefix): `rooms`, the set of rooms; `room:NAME`, a hash of member
//! id to `NODE\nJOINED_AT`; `conns`, a hash of connection id to the node holding it;
//! per node, `held:ID` (its memberships, `CONNECTION\nROOM`) and `conns:ID` (its
//! connections), so a dead node's records can be found without a scan; `nodes`,
//! the set of nodes, and `lease:ID`, a key that expires unless its node renews it.
//! Changes that touch several keys run as one Lua script: each is whole.
//!
//! Every node renews its lease every third of the lease and looks for nodes whose
//! lease has lapsed: one sweeper wins each dead node, removes its members and
//! connections, and runs the leave middleware for each member it removed.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::Names;
use crate::chat::ChatError;
use crate::chat::bus::{BoxFuture, Node};
use crate::chat::rooms::{Member, RoomStore};

/// [`RedisRooms`]: the room registry and membership in Redis, with a lease per node.
///
/// Keys (under the prefix): `rooms`, the set of rooms; `room:NAME`, a hash of member
/// id to `NODE\nJOINED_AT`; `conns`, a hash of connection id to the node holding it;
/// per node, `held:ID` (its memberships, `CONNECTION\nROOM`) and `conns:ID` (its
/// connections), so a dead node's records can be found without a scan; `nodes`,
/// the set of nodes, and `lease:ID`, a key that expires unless its node renews it.
/// Changes that touch several keys run as one Lua script: each is whole.
///
/// Every node renews its lease every third of the lease and looks for nodes whose
/// lease has lapsed: one sweeper wins each dead node, removes its members and
/// connections, and runs the leave middleware for each member it removed.
///
/// Made by [`RedisChat`](super::RedisChat).
#[derive(Clone)]
pub struct RedisRooms {
    conn: ConnectionManager,
    names: Arc<Names>,
    lease: Duration,
    /// The starting rooms, made again if Redis comes back empty.
    starting: Arc<[String]>,
}

impl std::fmt::Debug for RedisRooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRooms").field("prefix", &self.names.prefix).field("lease", &self.lease).finish()
    }
}

const JOIN: &str = r"
local p, room, conn, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('SISMEMBER', p .. 'rooms', room) == 0 then return 'no-room' end
if redis.call('HSETNX', p .. 'room:' .. room, conn, node .. '\n' .. ARGV[5]) == 0 then return 'in-room' end
redis.call('SADD', p .. 'held:' .. node, conn .. '\n' .. room)
redis.call('SADD', p .. 'nodes', node)
return 'ok'
";

const LEAVE: &str = r"
local p, room, conn = ARGV[1], ARGV[2], ARGV[3]
local entry = redis.call('HGET', p .. 'room:' .. room, conn)
if not entry then return 0 end
redis.call('HDEL', p .. 'room:' .. room, conn)
local node = string.match(entry, '^(.*)\n[^\n]*$')
if node then redis.call('SREM', p .. 'held:' .. node, conn .. '\n' .. room) end
return 1
";

const REMOVE_ROOM: &str = r"
local p, room = ARGV[1], ARGV[2]
if redis.call('SREM', p .. 'rooms', room) == 0 then return false end
local members = redis.call('HGETALL', p .. 'room:' .. room)
for i = 1, #members, 2 do
  local node = string.match(members[i + 1], '^(.*)\n[^\n]*$')
  if node then redis.call('SREM', p .. 'held:' .. node, members[i] .. '\n' .. room) end
end
redis.call('DEL', p .. 'room:' .. room)
return members
";

const MEMBERS: &str = r"
local p, room = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', p .. 'rooms', room) == 0 then return false end
return redis.call('HGETALL', p .. 'room:' .. room)
";

const REGISTER: &str = r"
local p, conn, node = ARGV[1], ARGV[2], ARGV[3]
local before = redis.call('HGET', p .. 'conns', conn)
if before then redis.call('SREM', p .. 'conns:' .. before, conn) end
redis.call('HSET', p .. 'conns', conn, node)
redis.call('SADD', p .. 'conns:' .. node, conn)
redis.call('SADD', p .. 'nodes', node)
return 1
";

const UNREGISTER: &str = r"
local p, conn = ARGV[1], ARGV[2]
local node = redis.call('HGET', p .. 'conns', conn)
if node then
  redis.call('HDEL', p .. 'conns', conn)
  redis.call('SREM', p .. 'conns:' .. node, conn)
end
return 1
";

/// Removes a node whose lease lapsed (or, with `force`, a node's previous life);
/// returns `room, member` pairs it removed (none if another sweeper was first, or
/// the lease is back).
const SWEEP: &str = r"
local p, id, force = ARGV[1], ARGV[2], ARGV[3]
if force ~= '1' and redis.call('EXISTS', p .. 'lease:' .. id) == 1 then return {} end
local swept = {}
for _, entry in ipairs(redis.call('SMEMBERS', p .. 'held:' .. id)) do
  local conn, room = string.match(entry, '^([^\n]*)\n(.*)$')
  if conn and redis.call('HDEL', p .. 'room:' .. room, conn) == 1 then
    table.insert(swept, room)
    table.insert(swept, conn)
  end
end
for _, conn in ipairs(redis.call('SMEMBERS', p .. 'conns:' .. id)) do
  if redis.call('HGET', p .. 'conns', conn) == id then redis.call('HDEL', p .. 'conns', conn) end
end
redis.call('DEL', p .. 'held:' .. id, p .. 'conns:' .. id)
redis.call('SREM', p .. 'nodes', id)
return swept
";

fn store_error(err: &redis::RedisError) -> ChatError {
    ChatError::Store(err.to_string())
}

/// `NODE\nJOINED_AT` back into a member.
fn member(id: String, entry: &str) -> Member {
    let (node, joined_at) = entry.rsplit_once('\n').unwrap_or((entry, "0"));
    Member { id, node: node.to_owned(), joined_at: joined_at.parse().unwrap_or(0) }
}

fn members(flat: Vec<String>) -> Vec<Member> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(id), Some(entry)) = (items.next(), items.next()) {
        out.push(member(id, &entry));
    }
    out
}

impl RedisRooms {
    pub(super) fn new(
        conn: ConnectionManager,
        names: Arc<Names>,
        lease: Duration,
        starting: Vec<String>,
    ) -> RedisRooms {
        RedisRooms { conn, names, lease, starting: starting.into() }
    }

    /// Runs `script` with the prefix first among its arguments.
    fn eval<T: redis::FromRedisValue + Send + 'static>(
        &self,
        script: &'static str,
        args: &[&str],
    ) -> BoxFuture<Result<T, ChatError>> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(0).arg(&self.names.prefix);
        for arg in args {
            cmd.arg(*arg);
        }
        self.query(cmd)
    }

    fn query<T: redis::FromRedisValue + Send + 'static>(
        &self,
        cmd: redis::Cmd,
    ) -> BoxFuture<Result<T, ChatError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move { cmd.query_async(&mut conn).await.map_err(|e| store_error(&e)) })
    }

    /// Clears what a previous life of node `id` left (a process restarted under the
    /// same id before its lease ran out): its members and connections. Returns how
    /// many memberships it removed.
    pub(super) async fn reclaim(&self, id: &str) -> Result<usize, redis::RedisError> {
        Ok(self.sweep(id, true).await?.len() / 2)
    }

    /// Runs [`SWEEP`] on node `id` (with `force`, whether or not its lease is there):
    /// the `room, member` pairs it removed.
    async fn sweep(&self, id: &str, force: bool) -> Result<Vec<String>, redis::RedisError> {
        redis::cmd("EVAL")
            .arg(SWEEP)
            .arg(0)
            .arg(&self.names.prefix)
            .arg(id)
            .arg(if force { "1" } else { "0" })
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Records node `id` and (re)starts its lease; whether the lease was there.
    pub(super) async fn renew(&self, id: &str) -> Result<bool, redis::RedisError> {
        let mut conn = self.conn.clone();
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let (previous,): (Option<String>,) = redis::pipe()
            .cmd("SADD")
            .arg(self.names.nodes())
            .arg(id)
            .ignore()
            .cmd("SET")
            .arg(self.names.lease(id))
            .arg(1)
            .arg("PX")
            .arg(lease_ms)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        Ok(previous.is_some())
    }

    /// Records again what `node` holds, after its records were lost (Redis came
    /// back empty, or the lease lapsed while the node lived and it was swept): its
    /// connections, its members (joined now, as far as the store knows), the rooms
    /// they are in and the starting rooms.
    async fn restore(&self, node: &Node, id: &str) -> Result<(), redis::RedisError> {
        let Some((connections, rooms)) = node.holdings() else { return Ok(()) };
        let joined = format!("{id}\n{}", crate::chat::now_ms());
        let mut pipe = redis::pipe();
        for room in self.starting.iter().chain(rooms.iter().map(|(room, _)| room)) {
            pipe.cmd("SADD").arg(self.names.rooms()).arg(room).ignore();
        }
        for connection in &connections {
            pipe.cmd("HSET").arg(self.names.conns()).arg(connection).arg(id).ignore();
            pipe.cmd("SADD").arg(self.names.node_conns(id)).arg(connection).ignore();
        }
        for (room, members) in &rooms {
            for member in members {
                pipe.cmd("HSETNX").arg(self.names.room(room)).arg(member).arg(&joined).ignore();
                pipe.cmd("SADD").arg(self.names.held(id)).arg(format!("{member}\n{room}")).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    /// Renews `node`'s lease (recording again what it holds if the store lost
    /// it), then sweeps the nodes whose lease lapsed.
    async fn tend(&self, node: &Node, id: &str) -> Result<(), redis::RedisError> {
        if !self.renew(id).await? {
            self.restore(node, id).await?;
        }
        let nodes = super::nodes_and_leases(&mut self.conn.clone(), &self.names).await?;
        // The sweep checks the lease again, whole, so two sweepers cannot both win.
        for (other, _) in nodes.iter().filter(|(other, alive)| !alive && other != id) {
            for pair in self.sweep(other, false).await?.chunks_exact(2) {
                node.swept(&pair[0], &pair[1]);
            }
        }
        Ok(())
    }
}

impl RoomStore for RedisRooms {
    fn add_room(&self, room: &str) -> BoxFuture<Result<(), ChatError>> {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(self.names.rooms()).arg(room);
        let added = self.query::<u64>(cmd);
        Box::pin(async move { if added.await? == 1 { Ok(()) } else { Err(ChatError::RoomExists) } })
    }

    fn remove_room(&self, room: &str) -> BoxFuture<Result<Vec<Member>, ChatError>> {
        let removed = self.eval::<Option<Vec<String>>>(REMOVE_ROOM, &[room]);
        Box::pin(async move { removed.await?.map(members).ok_or(ChatError::NoSuchRoom) })
    }

    fn room_exists(&self, room: &str) -> BoxFuture<Result<bool, ChatError>> {
        let mut cmd = redis::cmd("SISMEMBER");
        cmd.arg(self.names.rooms()).arg(room);
        self.query(cmd)
    }

    fn rooms(&self) -> BoxFuture<Result<Vec<String>, ChatError>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.names.rooms());
        let rooms = self.query::<Vec<String>>(cmd);
        Box::pin(async move {
            let mut rooms = rooms.await?;
            rooms.sort();
            Ok(rooms)
        })
    }

    fn join(&self, room: &str, member: Member) -> BoxFuture<Result<(), ChatError>> {
        let joined_at = member.joined_at.to_string();
        let outcome = self.eval::<String>(JOIN, &[room, &member.id, &member.node, &joined_at]);
        let room = room.to_owned();
        Box::pin(async move {
            match outcome.await?.as_str() {
                "ok" => Ok(()),
                "in-room" => Err(ChatError::AlreadyInRoom(room)),
                _ => Err(ChatError::NoSuchRoom),
            }
        })
    }

    fn leave(&self, room: &str, connection: &str) -> BoxFuture<Result<bool, ChatError>> {
        let left = self.eval::<u64>(LEAVE, &[room, connection]);
        Box::pin(async move { Ok(left.await? == 1) })
    }

    fn members(&self, room: &str) -> BoxFuture<Result<Vec<Member>, ChatError>> {
        let listed = self.eval::<Option<Vec<String>>>(MEMBERS, &[room]);
        Box::pin(async move { listed.await?.map(members).ok_or(ChatError::NoSuchRoom) })
    }

    fn register(&self, connection: &str, node: &str) -> BoxFuture<Result<(), ChatError>> {
        let done = self.eval::<u64>(REGISTER, &[connection, node]);
        Box::pin(async move { done.await.map(drop) })
    }

    fn unregister(&self, connection: &str) -> BoxFuture<Result<(), ChatError>> {
        let done = self.eval::<u64>(UNREGISTER, &[connection]);
        Box::pin(async move { done.await.map(drop) })
    }

    fn node_of(&self, connection: &str) -> BoxFuture<Result<Option<String>, ChatError>> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.names.conns()).arg(connection);
        self.query(cmd)
    }

    /// Starts renewing the node's lease and sweeping dead nodes, every third of the
    /// lease, until the node is dropped.
    fn attach(&self, node: Node) {
        let Some(id) = node.id() else { return };
        let store = self.clone();
        let every = self.lease / 3;
        tokio::spawn(async move {
            while node.is_alive() {
                // A failure (Redis away) is tried again next time round; the lease
                // outlives two misses.
                let _ = store.tend(&node, &id).await;
                tokio::time::sleep(every).await;
            }
        });
    }
}
