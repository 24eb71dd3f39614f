//! [`Chat`]: Actionhero's rooms for live connections (WebSocket, SSE): a room
//! registry, membership, [`ChatMiddleware`], broadcast and `send_to`, across
//! instances through a [`Bus`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use tower_context::chat::Chat;
//! use tower_context::connection::{Connection, ConnectionKind, MailboxConfig};
//!
//! let chat = Chat::new().with_rooms(["defaultRoom"]);
//! let addr = "127.0.0.1:50000".parse().unwrap();
//! let ann = Connection::live(ConnectionKind::Test, addr, addr, MailboxConfig::default());
//! chat.register(&ann).await.unwrap();
//! chat.join(ann.id(), "defaultRoom").await.unwrap();
//! chat.say(&ann, "defaultRoom", "hello".into()).unwrap();
//! let frame = ann.next_message().await.unwrap(); // the sender gets its own message too
//! assert!(frame.starts_with(br#"{"message":"hello","room":"defaultRoom","from":""#));
//! # });
//! ```
//!
//! A message is encoded once and its bytes shared by every receiver's mailbox; only
//! per-receiver `say` middleware makes a copy for the receivers it rewrites.
//! Members on this node get a message before it is published on the bus.

mod bus;
mod error;
mod middleware;
#[cfg(feature = "redis")]
pub mod redis;
mod rooms;
pub mod sse;
mod verb;
#[cfg(feature = "ws")]
pub mod ws;

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::Value;

pub use bus::{BoxFuture, Bus, BusStats, Command, Gap, LocalBus, Node};
pub use error::ChatError;
pub use middleware::ChatMiddleware;
#[cfg(feature = "redis")]
pub use redis::{RedisBus, RedisChat, RedisRooms};
pub use rooms::{Member, MemoryRooms, RoomStore};
pub use verb::{Verb, VerbSet};

use crate::connection::{Connection, Message, SayPayload, Tag};

/// A chat node: see the [module docs](self). A cheap handle (one `Arc`).
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: Arc<str>,
    bus: Arc<dyn Bus>,
    rooms: Arc<dyn RoomStore>,
    /// The chat connections this node holds, by id.
    local: RwLock<HashMap<String, Connection>>,
    /// This node's members of each room, in join order: the fan-out list, with the
    /// room's message sequence and replay buffer on this node.
    members: RwLock<HashMap<String, Local>>,
    /// How many of each room's latest messages are kept for resuming clients (0:
    /// none, the default).
    replay: AtomicUsize,
    middleware: RwLock<Arc<[ChatMiddleware]>>,
    rpc_timeout: Duration,
    /// The app's callback for gaps the bus saw.
    on_gap: RwLock<Option<GapCallback>>,
}

type GapCallback = Arc<dyn Fn(&Gap) + Send + Sync>;

impl Default for Chat {
    fn default() -> Self {
        Chat::new()
    }
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat").field("node", &self.id()).finish_non_exhaustive()
    }
}

/// A room as this node holds it: its members here, in join order, its message
/// sequence on this node, and its latest messages when resuming is on.
struct Local {
    name: Arc<str>,
    members: Vec<Connection>,
    seq: AtomicU64,
    replay: Mutex<VecDeque<(u64, Bytes)>>,
}

impl Local {
    fn new(name: &str) -> Local {
        Local {
            name: Arc::from(name),
            members: Vec::new(),
            seq: AtomicU64::new(0),
            replay: Mutex::new(VecDeque::new()),
        }
    }

    /// Numbers the next message and keeps it when resuming is on.
    fn record(&self, bytes: &Bytes, keep: usize) -> Tag {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if keep > 0 {
            let mut replay = self.replay.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            replay.push_back((seq, bytes.clone()));
            while replay.len() > keep {
                replay.pop_front();
            }
        }
        Tag { room: Arc::clone(&self.name), seq }
    }
}

/// A message's place in its room, for the members whose transport resumes (SSE):
/// the others are spared a reference count per message.
fn tag_for(member: &Connection, tag: &Tag) -> Option<Tag> {
    (member.kind() == crate::connection::ConnectionKind::ServerSentEvents).then(|| tag.clone())
}

/// What a resuming client gets for one room: the messages after its last one still
/// kept, and whether some in between were no longer kept.
pub(crate) struct Replay {
    pub(crate) messages: Vec<(u64, Bytes)>,
    pub(crate) missed: u64,
}

/// Milliseconds since the Unix epoch, as Actionhero stamps `joinedAt` and `sentAt`.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

thread_local! {
    /// Messages said while join or leave middleware runs on this thread, held until
    /// the membership change is recorded (or refused): as in Actionhero, whose bus
    /// delivers after the change, a joiner hears its own announcement and a leaver
    /// does not hear its farewell.
    static DEFERRED: std::cell::RefCell<Option<Vec<(Chat, SayPayload)>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (middleware) holding back what it says; returns its result and what
/// was held back, for the caller to send once the change is made. A nested call
/// leaves the holding to the outer one.
fn holding_messages<T>(f: impl FnOnce() -> T) -> (T, Vec<(Chat, SayPayload)>) {
    let outer = DEFERRED.with(|d| d.borrow().is_some());
    if outer {
        return (f(), Vec::new());
    }
    DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::new()));
    // Taken back even if `f` unwinds, so a panic cannot leave this thread holding.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = DEFERRED.try_with(|d| d.borrow_mut().take());
        }
    }
    let release = Release;
    let result = f();
    let held = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
    drop(release);
    (result, held)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `task` as far as it goes now (all the way, on the in-process store), and
/// the rest in a task of the current tokio runtime, if there is one.
fn drive(task: impl Future<Output = ()> + Send + 'static) {
    let mut task = Box::pin(task);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if task.as_mut().poll(&mut cx).is_pending()
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        runtime.spawn(task);
    }
}

/// Sends what middleware said while a membership change was being made.
fn release(held: Vec<(Chat, SayPayload)>) {
    for (chat, payload) in held {
        chat.publish(&payload.room.clone(), &payload);
    }
}

impl Chat {
    /// One node on its own: an in-process bus and room registry of its own.
    pub fn new() -> Chat {
        let id = format!("node-{:08x}", getrandom::u32().unwrap_or_else(|_| std::process::id()));
        Chat::node(id, Arc::new(LocalBus::default()), Arc::new(MemoryRooms::default()))
    }

    /// A node of a cluster: its id (unique in the cluster), the bus it reaches the
    /// other nodes by, and the store of rooms they share. [`LocalBus::cluster`] and
    /// `RedisChat` (feature `redis`) make these for you.
    pub fn node(id: impl Into<String>, bus: Arc<dyn Bus>, rooms: Arc<dyn RoomStore>) -> Chat {
        Chat::node_with(id.into(), bus, rooms, Duration::from_secs(5))
    }

    /// A node whose calls to other nodes time out after `rpc_timeout`.
    pub(crate) fn node_with(
        id: String,
        bus: Arc<dyn Bus>,
        rooms: Arc<dyn RoomStore>,
        rpc_timeout: Duration,
    ) -> Chat {
        let chat = Chat {
            inner: Arc::new(Inner {
                id: Arc::from(id),
                bus,
                rooms,
                local: RwLock::new(HashMap::new()),
                members: RwLock::new(HashMap::new()),
                replay: AtomicUsize::new(0),
                middleware: RwLock::new(Arc::from(Vec::new())),
                rpc_timeout,
                on_gap: RwLock::new(None),
            }),
        };
        chat.inner.bus.attach(Node(Arc::downgrade(&chat.inner)));
        chat.inner.rooms.attach(Node(Arc::downgrade(&chat.inner)));
        chat
    }

    /// Makes these rooms unless they exist (Actionhero's starting rooms).
    ///
    /// On the in-process store they exist when this returns. A store that answers
    /// later (Redis) makes them in a task of the current tokio runtime: there, prefer
    /// [`add_room`](Self::add_room) and await it (`RedisChat::rooms` does).
    #[must_use]
    pub fn with_rooms<'a>(self, rooms: impl IntoIterator<Item = &'a str>) -> Chat {
        for room in rooms {
            let adding = self.inner.rooms.add_room(room);
            drive(async move {
                let _ = adding.await;
            });
        }
        self
    }

    /// Calls `f` for each gap the bus sees (messages from another node lost on the
    /// way); the room's members on this node get an `alert` frame as well.
    pub fn on_gap(&self, f: impl Fn(&Gap) + Send + Sync + 'static) {
        *write(&self.inner.on_gap) = Some(Arc::new(f));
    }

    /// What the bus counted: envelopes rejected, gaps and the messages they lost,
    /// reconnects.
    pub fn bus_stats(&self) -> BusStats {
        self.inner.bus.stats()
    }

    /// Waits until the other nodes have handled what this node published so far
    /// (on Redis, a round trip to every live node; nothing to wait for in process).
    /// Error: [`ChatError::Store`] when a node does not answer in time.
    pub async fn flush(&self) -> Result<(), ChatError> {
        self.inner.bus.flush().await
    }

    fn report_gap(&self, gap: &Gap) {
        if let Some(room) = &gap.room {
            let alert = Message::gap(room, gap.missed).into_bytes();
            if let Some(local) = read(&self.inner.members).get(room.as_str()) {
                for member in &local.members {
                    let _ = member.push(alert.clone());
                }
            }
        }
        let callback = read(&self.inner.on_gap).clone();
        if let Some(callback) = callback {
            callback(gap);
        }
    }

    /// Leave middleware for a member whose node died (its record is gone already).
    fn run_swept_leave(&self, room: &str, member: &str) {
        let ghost = Connection::ghost(member, room);
        let ((), held) = holding_messages(|| {
            for middleware in self.middleware().iter() {
                if let Some(leave) = &middleware.leave {
                    let _ = leave(self, &ghost, room);
                }
            }
        });
        release(held);
    }

    /// The connections this node holds, and its members of each room.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn holdings(&self) -> bus::Holdings {
        let connections = read(&self.inner.local).keys().cloned().collect();
        let rooms = read(&self.inner.members)
            .iter()
            .filter(|(_, local)| !local.members.is_empty())
            .map(|(room, local)| (room.clone(), local.members.iter().map(|m| m.id().to_owned()).collect()))
            .collect();
        (connections, rooms)
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Adds a middleware; all run in ascending priority, then in the order added.
    pub fn add_middleware(&self, middleware: ChatMiddleware) {
        let mut all = write(&self.inner.middleware);
        let mut list: Vec<ChatMiddleware> = all.to_vec();
        list.push(middleware);
        // Stable: equal priorities keep the order they were added in.
        list.sort_by_key(ChatMiddleware::order);
        *all = Arc::from(list);
    }

    fn middleware(&self) -> Arc<[ChatMiddleware]> {
        Arc::clone(&read(&self.inner.middleware))
    }

    // ---- The registry ---------------------------------------------------------------

    /// Makes a room. Errors: `room exists`, `a room is required`.
    pub async fn add_room(&self, room: &str) -> Result<(), ChatError> {
        if room.is_empty() {
            return Err(ChatError::RoomRequired);
        }
        self.inner.rooms.add_room(room).await
    }

    /// Whether a room exists.
    pub async fn room_exists(&self, room: &str) -> Result<bool, ChatError> {
        self.inner.rooms.room_exists(room).await
    }

    /// Every room, by name, sorted.
    pub async fn rooms(&self) -> Result<Vec<String>, ChatError> {
        self.inner.rooms.rooms().await
    }

    /// Actionhero's `roomStatus`: `{room, members: {id: {id, joinedAt}}, membersCount}`.
    /// Errors: `a room is required`, `room does not exist`.
    pub async fn room_status(&self, room: &str) -> Result<Value, ChatError> {
        if room.is_empty() {
            return Err(ChatError::RoomRequired);
        }
        Ok(rooms::status(room, self.inner.rooms.members(room).await?))
    }

    /// Destroys a room: its members are told "this room has been deleted" (from
    /// `"0"`), each leaves (leave middleware runs; it cannot refuse here), then the
    /// room is gone. Error: `room does not exist`.
    pub async fn destroy_room(&self, room: &str) -> Result<(), ChatError> {
        self.broadcast(room, Value::from("this room has been deleted")).await?;
        for member in self.inner.rooms.remove_room(room).await? {
            // Each member's node drops it from its connection's rooms and fan-out.
            let _ = self.leave_on_node(&member.id, room, true).await;
        }
        Ok(())
    }

    // ---- Connections ----------------------------------------------------------------

    /// Makes a live connection known to this node, so rooms, `send_to` and the bus
    /// can reach it. Errors: `this connection cannot chat` for a plain HTTP one;
    /// the store's.
    pub async fn register(&self, conn: &Connection) -> Result<(), ChatError> {
        if !conn.can_chat() {
            return Err(ChatError::CannotChat);
        }
        write(&self.inner.local).insert(conn.id().to_owned(), conn.clone());
        if let Err(err) = self.inner.rooms.register(conn.id(), &self.inner.id).await {
            write(&self.inner.local).remove(conn.id());
            return Err(err);
        }
        Ok(())
    }

    /// A connection this node holds.
    pub fn connection(&self, id: &str) -> Option<Connection> {
        read(&self.inner.local).get(id).cloned()
    }

    /// Destroys a connection (Actionhero's `destroy`): it leaves every room (leave
    /// middleware runs and cannot refuse), its mailbox closes so the transport says
    /// goodbye and closes, and the node forgets it.
    pub async fn destroy(&self, conn: &Connection) {
        conn.destroy();
        for room in conn.rooms() {
            let _ = self.leave_local(conn, &room, true).await;
        }
        write(&self.inner.local).remove(conn.id());
        let _ = self.inner.rooms.unregister(conn.id()).await;
    }

    /// [`destroy`](Self::destroy) from code that cannot await (a stream being
    /// dropped): the connection closes now; on a store that answers later, leaving
    /// its rooms finishes in a task.
    pub(crate) fn destroy_now(&self, conn: &Connection) {
        let (chat, conn) = (self.clone(), conn.clone());
        drive(async move { chat.destroy(&conn).await });
    }

    /// [`destroy_now`](Self::destroy_now) for a connection dropped while it joined
    /// `rooms`: a join the store recorded but this node never finished is taken out
    /// of the store as well.
    pub(crate) fn destroy_joining(&self, conn: &Connection, rooms: Vec<String>) {
        let (chat, conn) = (self.clone(), conn.clone());
        drive(async move {
            chat.destroy(&conn).await;
            for room in rooms {
                let _ = chat.inner.rooms.leave(&room, conn.id()).await;
            }
        });
    }

    // ---- Membership -----------------------------------------------------------------

    /// Adds a connection, held by any node, to a room. Errors, in Actionhero's
    /// order: `connection already in this room (ROOM)`, `room does not exist`, a
    /// join middleware's veto; `RPC Timeout` when the node holding it does not answer;
    /// `connection not found (ID)` when no node holds it, or it is destroyed before
    /// the join is recorded.
    pub async fn join(&self, connection: &str, room: &str) -> Result<(), ChatError> {
        self.on_holder(Command::Join { connection: connection.to_owned(), room: room.to_owned() }).await
    }

    /// Removes a connection, held by any node, from a room. Errors: `connection not
    /// in this room (ROOM)`, a leave middleware's veto, `RPC Timeout`.
    pub async fn leave(&self, connection: &str, room: &str) -> Result<(), ChatError> {
        self.leave_on_node(connection, room, false).await
    }

    async fn leave_on_node(&self, connection: &str, room: &str, force: bool) -> Result<(), ChatError> {
        self.on_holder(Command::Leave { connection: connection.to_owned(), room: room.to_owned(), force })
            .await
    }

    /// Runs `command` on the node holding its connection: here, or there through the
    /// bus (`RPC Timeout` when it does not answer). Error: `connection not found
    /// (ID)` when no node holds it.
    async fn on_holder(&self, command: Command) -> Result<(), ChatError> {
        let connection = command.connection();
        if self.connection(connection).is_some() {
            return self.handle(command).await;
        }
        let node = self
            .inner
            .rooms
            .node_of(connection)
            .await?
            .ok_or_else(|| ChatError::NoSuchConnection(connection.to_owned()))?;
        self.inner.bus.call(&node, command, self.inner.rpc_timeout).await
    }

    async fn join_local(&self, conn: &Connection, room: &str) -> Result<(), ChatError> {
        if conn.rooms_list().iter().any(|r| r == room) {
            return Err(ChatError::AlreadyInRoom(room.to_owned()));
        }
        if !self.inner.rooms.room_exists(room).await? {
            return Err(ChatError::NoSuchRoom);
        }
        let (allowed, held) = holding_messages(|| {
            for middleware in self.middleware().iter() {
                if let Some(join) = &middleware.join {
                    join(self, conn, room).map_err(ChatError::Vetoed)?;
                }
            }
            Ok(())
        });
        let joined = match allowed {
            // The check above and this record are apart (middleware ran between):
            // the store decides, so two joins at once record the member once.
            Ok(()) => self.record_join(conn, room).await,
            Err(veto) => Err(veto),
        };
        release(held);
        joined
    }

    /// Records a member in the store, then on this node, and has the bus hear the
    /// room for this node (it subscribes once, for the first member here).
    async fn record_join(&self, conn: &Connection, room: &str) -> Result<(), ChatError> {
        let member =
            Member { id: conn.id().to_owned(), node: self.inner.id.to_string(), joined_at: now_ms() };
        self.inner.rooms.join(room, member).await?;
        // A connection destroyed while the store worked must not stay a member. Its
        // `destroy` marks it, then takes its rooms under this lock: either that sees
        // this room (and leaves it), or this sees the mark.
        let gone = || ChatError::NoSuchConnection(conn.id().to_owned());
        let destroyed = {
            let mut rooms = conn.rooms_list();
            if rooms.iter().any(|r| r == room) {
                // Joined meanwhile through another path: the store said yes once.
                return Ok(());
            }
            let destroyed = conn.is_destroyed();
            if !destroyed {
                rooms.push(room.to_owned());
            }
            destroyed
        };
        if destroyed {
            let _ = self.inner.rooms.leave(room, conn.id()).await;
            return Err(gone());
        }
        {
            let mut members = write(&self.inner.members);
            if conn.is_destroyed() {
                // Its `destroy` has this room listed, and leaves it here and in the store.
                return Err(gone());
            }
            members.entry(room.to_owned()).or_insert_with(|| Local::new(room)).members.push(conn.clone());
        }
        // Every joiner asks the bus, not only the first: one that comes while the
        // first one's subscription is under way waits for it, and if that fails, the
        // next one tries again rather than staying a member nobody hears for.
        if let Err(err) = self.inner.bus.watch(&self.inner.id, room).await {
            conn.rooms_list().retain(|r| r != room);
            if let Some(local) = write(&self.inner.members).get_mut(room) {
                local.members.retain(|member| member != conn);
            }
            let _ = self.inner.rooms.leave(room, conn.id()).await;
            return Err(err);
        }
        if conn.is_destroyed() {
            // Destroyed while the bus subscribed: its `destroy` leaves (or has left)
            // this room, and if it let the room go before the subscription was made,
            // the node would hear a room it has no member in. Let it go again.
            let mut members = write(&self.inner.members);
            let kept = match members.get(room) {
                // Let go already (by the last leave, or as a room destroyed): nothing
                // here is kept for it, resuming or not.
                None => false,
                Some(local) => !local.members.is_empty() || self.resuming(),
            };
            if !kept {
                self.let_go(&mut members, room);
            }
            return Err(gone());
        }
        Ok(())
    }

    async fn leave_local(&self, conn: &Connection, room: &str, force: bool) -> Result<(), ChatError> {
        if !conn.rooms_list().iter().any(|r| r == room) {
            return Err(ChatError::NotInRoom(room.to_owned()));
        }
        let (allowed, held) = holding_messages(|| {
            for middleware in self.middleware().iter() {
                if let Some(leave) = &middleware.leave {
                    match leave(self, conn, room) {
                        Err(veto) if !force => return Err(ChatError::Vetoed(veto)),
                        _ => {}
                    }
                }
            }
            Ok(())
        });
        if let Err(veto) = allowed {
            release(held);
            return Err(veto);
        }
        let recorded = self.inner.rooms.leave(room, conn.id()).await;
        match recorded {
            Err(err) if !force => {
                release(held);
                return Err(err);
            }
            // Forced (the connection is going): the store is told again in the
            // background until it hears, so no ghost member stays behind.
            Err(_) => self.retry_leave(room, conn.id()),
            Ok(_) => {}
        }
        conn.rooms_list().retain(|r| r != room);
        let kept = {
            let mut members = write(&self.inner.members);
            match members.get_mut(room) {
                Some(local) => {
                    local.members.retain(|member| member != conn);
                    let empty = local.members.is_empty();
                    // Kept while resuming is on, so the room's sequence goes on and
                    // the node keeps hearing the room: what it keeps for a client
                    // coming back has no hole.
                    let keep = self.resuming();
                    if empty && !keep {
                        self.let_go(&mut members, room);
                    }
                    empty && keep
                }
                None => false,
            }
        };
        // Unless the room is gone (destroyed): then nothing of it is kept, and a room
        // made again under its name starts afresh.
        if kept && !self.inner.rooms.room_exists(room).await.unwrap_or(true) {
            let mut members = write(&self.inner.members);
            if members.get(room).is_some_and(|local| local.members.is_empty()) {
                self.let_go(&mut members, room);
            }
        }
        release(held);
        Ok(())
    }

    /// Whether rooms are kept for clients that resume ([`keep_replay`](Self::keep_replay)):
    /// then a room this node has no member in is still heard and kept.
    fn resuming(&self) -> bool {
        self.inner.replay.load(Ordering::Relaxed) > 0
    }

    /// Forgets a room this node has no member in, and stops hearing it. Called with
    /// the lock a joiner takes held: no join can come between the last leave and the
    /// bus hearing of it, and find the room still watched just before it is not.
    fn let_go(&self, members: &mut HashMap<String, Local>, room: &str) {
        members.remove(room);
        self.inner.bus.unwatch(&self.inner.id, room);
    }

    /// Tells the store that `connection` left `room`, again and again (backing off
    /// to every 5 s) until it hears, while the node lives.
    fn retry_leave(&self, room: &str, connection: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (weak, room, connection) = (Arc::downgrade(&self.inner), room.to_owned(), connection.to_owned());
        runtime.spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                tokio::time::sleep(pause).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.rooms.leave(&room, &connection).await.is_ok() {
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Runs a command from another node.
    async fn handle(&self, command: Command) -> Result<(), ChatError> {
        let id = command.connection();
        let conn = self.connection(id).ok_or_else(|| ChatError::NoSuchConnection(id.to_owned()))?;
        match command {
            Command::Join { room, .. } => self.join_local(&conn, &room).await,
            Command::Leave { room, force, .. } => self.leave_local(&conn, &room, force).await,
            Command::Send { message, .. } => conn.push(message).map_err(|_| ChatError::CannotChat),
        }
    }

    // ---- Messages -------------------------------------------------------------------

    /// A connection says `message` in `room` (the `say` verb). Errors: `both room and
    /// message are required`, `connection not in this room (ROOM)`.
    ///
    /// `on_say_receive` middleware runs once, here; the message then reaches every
    /// member of the room, the sender included, on every node.
    pub fn say(&self, conn: &Connection, room: &str, message: Value) -> Result<(), ChatError> {
        self.say_answering(conn, room, message, |_| {})
    }

    /// `say`, telling `answer` the outcome before the message is delivered: a
    /// transport queues its answer first, so the sender reads "OK" before its own
    /// message, as from Actionhero.
    pub(crate) fn say_answering(
        &self,
        conn: &Connection,
        room: &str,
        message: Value,
        answer: impl FnOnce(Result<(), ChatError>),
    ) -> Result<(), ChatError> {
        let checked = if room.is_empty() || message.is_null() || message.as_str() == Some("") {
            Err(ChatError::RoomAndMessageRequired)
        } else if !conn.rooms_list().iter().any(|r| r == room) {
            Err(ChatError::NotInRoom(room.to_owned()))
        } else {
            Ok(())
        };
        answer(checked.clone());
        checked?;
        let mut payload =
            SayPayload { message, room: room.to_owned(), from: conn.id().to_owned(), sent_at: now_ms() };
        for middleware in self.middleware().iter() {
            if let Some(on_receive) = &middleware.on_say_receive {
                match on_receive(conn, room, payload) {
                    Some(next) => payload = next,
                    // Silenced for everyone.
                    None => return Ok(()),
                }
            }
        }
        self.publish(room, &payload);
        Ok(())
    }

    /// A server-side message to a room, from `"0"`: no membership needed. Errors:
    /// `both room and message are required`, `room does not exist`.
    pub async fn broadcast(&self, room: &str, message: Value) -> Result<(), ChatError> {
        if room.is_empty() || message.is_null() {
            return Err(ChatError::RoomAndMessageRequired);
        }
        if !self.inner.rooms.room_exists(room).await? {
            return Err(ChatError::NoSuchRoom);
        }
        self.announce(room, message)
    }

    /// [`broadcast`](Self::broadcast) without asking the store whether the room
    /// exists: for chat middleware, which runs synchronously and is given a room
    /// that exists. A message to a room that does not exist reaches nobody. Error:
    /// `both room and message are required`.
    pub fn announce(&self, room: &str, message: Value) -> Result<(), ChatError> {
        if room.is_empty() || message.is_null() {
            return Err(ChatError::RoomAndMessageRequired);
        }
        let payload = SayPayload { message, room: room.to_owned(), from: "0".to_owned(), sent_at: now_ms() };
        self.publish(room, &payload);
        Ok(())
    }

    /// Pushes a message to a connection held by any node. Errors: `connection not
    /// found (ID)`, `RPC Timeout`, and what [`Connection::send_message`] refuses.
    pub async fn send_to(&self, connection: &str, message: Message) -> Result<(), ChatError> {
        self.on_holder(Command::Send { connection: connection.to_owned(), message: message.into_bytes() })
            .await
    }

    /// Encodes once, delivers to this node's members, then publishes to the others
    /// (held back while join or leave middleware runs: see `holding_messages`).
    fn publish(&self, room: &str, payload: &SayPayload) {
        let held = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
            Some(held) => {
                held.push((self.clone(), payload.clone()));
                true
            }
            None => false,
        });
        if held {
            return;
        }
        let bytes = Message::say(payload).into_bytes();
        self.deliver_local(room, &bytes, Some(payload));
        self.inner.bus.publish(&self.inner.id, room, bytes);
    }

    /// Hands a room message to this node's members: the same bytes to each, unless
    /// per-receiver `say` middleware rewrites it for some.
    fn deliver_local(&self, room: &str, bytes: &Bytes, payload: Option<&SayPayload>) {
        let middleware = self.middleware();
        let keep = self.inner.replay.load(Ordering::Relaxed);
        if !middleware.iter().any(|m| m.say.is_some()) {
            if let Some(local) = read(&self.inner.members).get(room) {
                let tag = local.record(bytes, keep);
                for member in &local.members {
                    // A closed or overflowing mailbox is the member's transport's
                    // business (it was counted, or the connection destroyed).
                    let _ = member.push_tagged(bytes.clone(), tag_for(member, &tag));
                }
            }
            return;
        }
        // User code runs per receiver: not under the members lock.
        let (members, tag) = match read(&self.inner.members).get(room) {
            Some(local) => (local.members.clone(), local.record(bytes, keep)),
            None => return,
        };
        let decoded;
        let payload = match payload {
            Some(payload) => payload,
            None => match SayPayload::from_bytes(bytes) {
                Some(parsed) => {
                    decoded = parsed;
                    &decoded
                }
                None => return,
            },
        };
        for member in members {
            let mut current = Some(payload.clone());
            for m in middleware.iter() {
                let Some(say) = &m.say else { continue };
                let Some(next) = current.take() else { break };
                // An error drops the message for this receiver only.
                current = say(&member, room, next).ok().flatten();
            }
            if let Some(rewritten) = current {
                let _ = member.push_tagged(Message::say(&rewritten).into_bytes(), tag_for(&member, &tag));
            }
        }
    }

    /// Keeps each room's latest `per_room` messages on this node, for clients that
    /// resume (an SSE stream's `Last-Event-ID`). Off (0) by default. While it is on, a
    /// room whose members here have all left is still heard and kept, until the
    /// room is destroyed while it has members here; destroy rooms you are done with.
    pub fn keep_replay(&self, per_room: usize) {
        self.inner.replay.store(per_room, Ordering::Relaxed);
    }

    /// The messages of `room` after sequence `after` still kept, and how many after
    /// it are no longer kept; `None` when `after` is past this node's sequence for
    /// the room (another node's position, or one from before a restart), which says
    /// nothing of what the client missed here.
    pub(crate) fn replay_since(&self, room: &str, after: u64) -> Option<Replay> {
        let members = read(&self.inner.members);
        let Some(local) = members.get(room) else {
            return (after == 0).then(|| Replay { messages: Vec::new(), missed: 0 });
        };
        let current = local.seq.load(Ordering::Relaxed);
        if after > current {
            return None;
        }
        let replay = local.replay.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let messages: Vec<(u64, Bytes)> = replay.iter().filter(|(seq, _)| *seq > after).cloned().collect();
        let first_kept = messages.first().map_or(current + 1, |(seq, _)| *seq);
        Some(Replay { messages, missed: first_kept.saturating_sub(after + 1) })
    }
}
