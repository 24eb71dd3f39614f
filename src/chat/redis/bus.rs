//! [`RedisBus`]: chat nodes reaching each other through Redis pub/sub.
//!
//! Channels (under the prefix): `room:NAME` per room, subscribed by a node only while
//! it has members there; `node:ID` per node, for the commands addressed to it and
//! the answers to its own; `all`, for flush barriers. Every envelope carries its
//! sender and, on its channel, the sender's next sequence number: a receiver that
//! sees a number skipped knows how many it lost. Lost tails are caught by marks: a
//! node that subscribes or reconnects asks each room "where are you?" and every node
//! answers with its current number there; a node whose own publishes failed tells
//! its current numbers once it is connected again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::Names;
use super::envelope::{self, EnvelopeKeys, Header, Kind, Seal};
use crate::chat::ChatError;
use crate::chat::bus::{BoxFuture, Bus, BusStats, Command, Gap, Node};
use crate::cookies::Keys;

/// How many publishes go to Redis in one pipeline at most.
const BATCH: usize = 512;
/// How long a batch of publishes is retried while Redis cannot be reached before it
/// is given up (and its loss announced by marks once Redis is back).
const RETRY_FOR: Duration = Duration::from_secs(10);
/// The pause between two tries.
const RETRY_EVERY: Duration = Duration::from_millis(25);
/// How long a flush waits for every live node to answer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// [`RedisBus`]: chat nodes reaching each other through Redis pub/sub.
///
/// Channels (under the prefix): `room:NAME` per room, subscribed by a node only while
/// it has members there; `node:ID` per node, for the commands addressed to it and
/// the answers to its own; `all`, for flush barriers. Every envelope carries its
/// sender and, on its channel, the sender's next sequence number: a receiver that
/// sees a number skipped knows how many it lost. Lost tails are caught by marks: a
/// node that subscribes or reconnects asks each room "where are you?" and every node
/// answers with its current number there; a node whose own publishes failed tells
/// its current numbers once it is connected again.
///
/// Made by [`RedisChat`](super::RedisChat).
pub struct RedisBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").field("node", &self.shared.id).finish_non_exhaustive()
    }
}

struct Shared {
    conn: ConnectionManager,
    names: Arc<Names>,
    id: String,
    /// The node's own channel (its commands, and answers to its calls).
    own: String,
    /// This process, among the lives of node `id`: random, so a node restarted
    /// under the same id is a new sender to the others.
    incarnation: u64,
    keys: EnvelopeKeys,
    limit: usize,
    node: OnceLock<Node>,
    /// The ordered publish queue: (channel, sealed envelope).
    out: mpsc::UnboundedSender<(String, Bytes)>,
    state: Mutex<State>,
    /// Subscribing and unsubscribing one at a time, so a quick leave and join
    /// cannot end unsubscribed.
    subscriptions: tokio::sync::Mutex<()>,
    rejected: AtomicU64,
    gaps: AtomicU64,
    missed: AtomicU64,
    reconnects: AtomicU64,
    /// Dropped with the bus: stops its dispatch task.
    _stop: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    /// This node's last sequence number per channel it sent on.
    sent: HashMap<String, u64>,
    /// The last number seen per channel, sender and the sender's incarnation (one,
    /// or two across a restart); a room's entry exists while the room is watched,
    /// the node's own channel's always.
    seen: HashMap<String, HashMap<String, Vec<(u64, u64)>>>,
    /// The rooms watched.
    watched: HashSet<String>,
    /// Calls waiting for their answer, by request number.
    calls: HashMap<u64, oneshot::Sender<Result<(), ChatError>>>,
    /// Flushes waiting for answers, by token.
    pings: HashMap<u64, mpsc::UnboundedSender<String>>,
    next: u64,
}

fn store_error(err: &redis::RedisError) -> ChatError {
    ChatError::Store(err.to_string())
}

impl RedisBus {
    /// Starts the bus of node `id`: subscribes to its own channel and the flush
    /// channel, and starts the tasks that publish in order and dispatch what
    /// arrives (`pushes`: the connection manager's push messages).
    pub(super) async fn start(
        conn: ConnectionManager,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        names: Arc<Names>,
        id: String,
        keys: Keys,
        limit: usize,
    ) -> Result<RedisBus, ChatError> {
        let (out, queue) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let own = names.node_channel(&id);
        let mut state = State::default();
        state.seen.insert(own.clone(), HashMap::new());
        let shared = Arc::new(Shared {
            conn,
            names,
            id,
            own,
            incarnation: getrandom::u64().unwrap_or_else(|_| {
                u64::from(std::process::id()) << 32 | u64::from(crate::chat::now_ms() as u32)
            }),
            keys: EnvelopeKeys::new(&keys),
            limit,
            node: OnceLock::new(),
            out,
            state: Mutex::new(state),
            subscriptions: tokio::sync::Mutex::new(()),
            rejected: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            _stop: stop,
        });
        let mut conn = shared.conn.clone();
        conn.subscribe(&[shared.own.as_str(), shared.names.all_channel().as_str()])
            .await
            .map_err(|e| store_error(&e))?;
        tokio::spawn(pump(shared.conn.clone(), queue, Arc::downgrade(&shared)));
        tokio::spawn(dispatch(pushes, Arc::downgrade(&shared), stopped));
        Ok(RedisBus { shared })
    }

    /// Waits until every node with a live lease has handled everything this node
    /// published before the call: a barrier for tests and for orderly shutdowns.
    pub async fn flush(&self) -> Result<(), ChatError> {
        self.shared.flush().await
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seals and queues an envelope; numbered kinds take the next number on the
    /// channel (under the lock, so the queue holds them in number order). One over
    /// the size limit is not sent (nor numbered, so no node counts it lost): it is
    /// counted as rejected, and `false` returned.
    fn send(&self, channel: String, kind: Kind, fields: Map<String, Value>, payload: &[u8]) -> bool {
        let mut state = self.lock();
        let current = state.sent.get(&channel).copied().unwrap_or(0);
        let seq = if kind.numbered() { current + 1 } else { current };
        let head = Seal { node: &self.id, incarnation: self.incarnation, seq, kind, channel: &channel };
        let sealed = envelope::seal(&self.keys, head, fields, payload);
        if sealed.len() > self.limit {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if kind.numbered() {
            match state.sent.get_mut(&channel) {
                Some(last) => *last = seq,
                None => {
                    state.sent.insert(channel.clone(), seq);
                }
            }
        }
        // The pump lives as long as the bus.
        self.out.send((channel, sealed)).is_ok()
    }

    /// Tells every channel this node sent on where its numbers are.
    fn announce_marks(&self) {
        let channels: Vec<String> = self.lock().sent.keys().cloned().collect();
        for channel in channels {
            self.send(channel, Kind::Mark, Map::new(), &[]);
        }
    }

    /// Asks every node where its numbers are in every watched room.
    fn ask_marks(&self) {
        let rooms: Vec<String> = self.lock().watched.iter().cloned().collect();
        for room in rooms {
            self.ask_mark(&room);
        }
    }

    /// Asks every node (on the `all` channel: a node need not watch a room to
    /// publish there) where its numbers are in `room`.
    fn ask_mark(&self, room: &str) {
        let mut fields = Map::new();
        fields.insert("r".into(), Value::from(room));
        self.send(self.names.all_channel(), Kind::Sync, fields, &[]);
    }

    fn node(&self) -> Option<&Node> {
        self.node.get()
    }

    async fn flush(&self) -> Result<(), ChatError> {
        let nodes = super::nodes_and_leases(&mut self.conn.clone(), &self.names)
            .await
            .map_err(|e| store_error(&e))?;
        let mut expected: HashSet<String> =
            nodes.into_iter().filter_map(|(node, alive)| alive.then_some(node)).collect();
        expected.insert(self.id.clone());
        let (tx, mut answers) = mpsc::unbounded_channel();
        let token = {
            let mut state = self.lock();
            state.next += 1;
            let token = state.next;
            state.pings.insert(token, tx);
            token
        };
        let mut fields = Map::new();
        fields.insert("t".into(), Value::from(token));
        self.send(self.names.all_channel(), Kind::Ping, fields, &[]);
        // Forgotten however this ends (a caller that gives up drops the future).
        let _forget = Forget(self, Waiting::Ping(token));
        let waited = tokio::time::timeout(FLUSH_TIMEOUT, async {
            while !expected.is_empty() {
                match answers.recv().await {
                    Some(node) => {
                        expected.remove(&node);
                    }
                    None => break,
                }
            }
        })
        .await;
        waited.map_err(|_| ChatError::Store("flush timed out".into()))
    }

    /// Checks an envelope's number against the last one seen from its sender on
    /// its channel: `None` for a duplicate (a retried publish), else how many were
    /// skipped. Rooms not watched are not tracked.
    fn sequence(&self, header: &Header) -> Option<u64> {
        let mut state = self.lock();
        let Some(senders) = state.seen.get_mut(&header.channel) else { return Some(0) };
        let lives = match senders.get_mut(header.node.as_str()) {
            Some(lives) => lives,
            None => senders.entry(header.node.clone()).or_default(),
        };
        let at = lives.iter().position(|(incarnation, _)| *incarnation == header.incarnation);
        let last = at.map(|at| lives[at].1);
        let skipped = match (header.kind, last) {
            (Kind::Mark, Some(last)) => header.seq.saturating_sub(last),
            (Kind::Mark, None) => 0,
            (_, Some(last)) if header.seq <= last => return None,
            (_, Some(last)) => header.seq - last - 1,
            (_, None) => 0,
        };
        match at {
            Some(at) if header.seq > lives[at].1 => lives[at].1 = header.seq,
            Some(_) => {}
            None => {
                // Two lives are enough to tell a restart from its predecessor's last
                // envelopes; older ones are gone.
                if lives.len() >= 2 {
                    lives.remove(0);
                }
                lives.push((header.incarnation, header.seq));
            }
        }
        Some(skipped)
    }

    fn report_gap(&self, from: &str, room: Option<String>, missed: u64) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.missed.fetch_add(missed, Ordering::Relaxed);
        if let Some(node) = self.node() {
            node.gap(&Gap::new(from, room, missed));
        }
    }

    /// Handles one envelope, in arrival order.
    fn handle(self: &Arc<Self>, channel: &str, raw: &Bytes) {
        let (header, payload) = match envelope::open(&self.keys, channel, raw, self.limit) {
            Ok(opened) => opened,
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let own_channel = channel == self.own;
        let room = header.fields.get("r").and_then(Value::as_str);
        let ours = header.node == self.id && header.incarnation == self.incarnation;
        if !own_channel && ours && header.kind != Kind::Ping {
            // Our own room traffic, echoed: our members had it first.
            return;
        }
        if matches!(header.kind, Kind::Message | Kind::Command | Kind::Reply | Kind::Mark) {
            let Some(skipped) = self.sequence(&header) else { return };
            if skipped > 0 {
                let gap_room =
                    if own_channel { None } else { self.names.room_of(channel).map(str::to_owned) };
                self.report_gap(&header.node, gap_room, skipped);
            }
        }
        match header.kind {
            Kind::Message => {
                if let (Some(node), Some(room)) = (self.node(), room)
                    && self.names.room_of(channel) == Some(room)
                {
                    node.deliver(room, &payload);
                }
            }
            Kind::Command if own_channel => self.run_command(&header, payload),
            Kind::Reply if own_channel => {
                let Some(q) = header.fields.get("q").and_then(Value::as_u64) else { return };
                if header.fields.get("ri").and_then(Value::as_u64) != Some(self.incarnation) {
                    // An answer to this node's previous life.
                    return;
                }
                let result = match header.fields.get("e").and_then(Value::as_str) {
                    None => Ok(()),
                    Some(code) => Err(ChatError::from_wire(
                        code,
                        header.fields.get("a").and_then(Value::as_str).unwrap_or(""),
                    )),
                };
                if let Some(waiting) = self.lock().calls.remove(&q) {
                    let _ = waiting.send(result);
                }
            }
            // Every node answers, its number 0 if it never spoke there: the asker's
            // starting point for it.
            Kind::Sync => {
                if let Some(room) = room {
                    self.send(self.names.room(room), Kind::Mark, Map::new(), &[]);
                }
            }
            Kind::Ping => {
                let mut fields = Map::new();
                fields.insert("t".into(), header.fields.get("t").cloned().unwrap_or(Value::Null));
                fields.insert("ri".into(), Value::from(header.incarnation));
                self.send(self.names.node_channel(&header.node), Kind::Pong, fields, &[]);
            }
            Kind::Pong if own_channel => {
                let Some(token) = header.fields.get("t").and_then(Value::as_u64) else { return };
                if header.fields.get("ri").and_then(Value::as_u64) != Some(self.incarnation) {
                    return;
                }
                if let Some(waiting) = self.lock().pings.get(&token) {
                    let _ = waiting.send(header.node);
                }
            }
            _ => {}
        }
    }

    /// Runs a command from another node in a task and sends back the answer.
    fn run_command(self: &Arc<Self>, header: &Header, payload: Bytes) {
        let field = |key: &str| header.fields.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let connection = field("conn");
        let command = match field("op").as_str() {
            "join" => Command::Join { connection, room: field("room") },
            "leave" => Command::Leave {
                connection,
                room: field("room"),
                force: header.fields.get("force").and_then(Value::as_bool).unwrap_or(false),
            },
            "send" => Command::Send { connection, message: payload },
            _ => return,
        };
        let Some(node) = self.node().cloned() else { return };
        let q = header.fields.get("q").cloned().unwrap_or(Value::Null);
        let caller = header.incarnation;
        let answer_to = self.names.node_channel(&header.node);
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            let result = node.handle(command).await;
            let Some(shared) = shared.upgrade() else { return };
            let mut fields = Map::new();
            fields.insert("q".into(), q);
            fields.insert("ri".into(), Value::from(caller));
            if let Err(err) = result {
                let (code, arg) = err.to_wire();
                fields.insert("e".into(), Value::from(code));
                fields.insert("a".into(), Value::from(arg));
            }
            shared.send(answer_to, Kind::Reply, fields, &[]);
        });
    }
}

/// What a caller waits for: an RPC answer or a flush's pongs.
enum Waiting {
    Call(u64),
    Ping(u64),
}

/// Forgets a waiter when its future ends or is dropped, so nothing waits forever.
struct Forget<'a>(&'a Shared, Waiting);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        match self.1 {
            Waiting::Call(q) => {
                state.calls.remove(&q);
            }
            Waiting::Ping(token) => {
                state.pings.remove(&token);
            }
        }
    }
}

/// Publishes the queue in order, a pipeline per batch; a batch that fails is tried
/// again until Redis is back (receivers drop what they already had), or given up
/// after [`RETRY_FOR`], and then this node's marks tell the others what was lost.
async fn pump(
    mut conn: ConnectionManager,
    mut queue: mpsc::UnboundedReceiver<(String, Bytes)>,
    shared: Weak<Shared>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for (channel, envelope) in &batch {
            pipe.cmd("PUBLISH").arg(channel).arg(envelope.as_ref()).ignore();
        }
        let started = tokio::time::Instant::now();
        let mut failed = false;
        while let Err(_err) = pipe.query_async::<()>(&mut conn).await {
            failed = true;
            if started.elapsed() > RETRY_FOR {
                break;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
        batch.clear();
        if failed {
            let Some(shared) = shared.upgrade() else { return };
            shared.announce_marks();
        }
    }
}

/// Handles what Redis pushes, in order, until the bus is dropped.
async fn dispatch(
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    shared: Weak<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let push = tokio::select! {
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
            _ = &mut stop => return,
        };
        let Some(shared) = shared.upgrade() else { return };
        if shared.node().is_some_and(|node| !node.is_alive()) {
            return;
        }
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(redis::Value::BulkString(channel)), Some(redis::Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    continue;
                };
                let Ok(channel) = String::from_utf8(channel) else { continue };
                shared.handle(&channel, &Bytes::from(payload));
            }
            PushKind::Disconnection => {
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                // Once the manager has reconnected (it resubscribes before anything
                // else goes out), find out what was lost both ways.
                let resync = Arc::downgrade(&shared);
                let mut conn = shared.conn.clone();
                tokio::spawn(async move {
                    let mut pause = RETRY_EVERY;
                    while redis::cmd("PING").query_async::<()>(&mut conn).await.is_err() {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(250));
                        if resync.strong_count() == 0 {
                            return;
                        }
                    }
                    if let Some(resync) = resync.upgrade() {
                        resync.ask_marks();
                        resync.announce_marks();
                    }
                });
            }
            _ => {}
        }
    }
}

impl Bus for RedisBus {
    fn attach(&self, node: Node) {
        let _ = self.shared.node.set(node);
    }

    fn publish(&self, _from: &str, room: &str, payload: Bytes) {
        let mut fields = Map::new();
        fields.insert("r".into(), Value::from(room));
        self.shared.send(self.shared.names.room(room), Kind::Message, fields, &payload);
    }

    fn call(&self, to: &str, command: Command, timeout: Duration) -> BoxFuture<Result<(), ChatError>> {
        let shared = Arc::clone(&self.shared);
        let mut fields = Map::new();
        let payload = match command {
            Command::Join { connection, room } => {
                fields.insert("op".into(), "join".into());
                fields.insert("conn".into(), connection.into());
                fields.insert("room".into(), room.into());
                Bytes::new()
            }
            Command::Leave { connection, room, force } => {
                fields.insert("op".into(), "leave".into());
                fields.insert("conn".into(), connection.into());
                fields.insert("room".into(), room.into());
                fields.insert("force".into(), force.into());
                Bytes::new()
            }
            Command::Send { connection, message } => {
                fields.insert("op".into(), "send".into());
                fields.insert("conn".into(), connection.into());
                message
            }
        };
        let (tx, rx) = oneshot::channel();
        let q = {
            let mut state = shared.lock();
            state.next += 1;
            let q = state.next;
            state.calls.insert(q, tx);
            q
        };
        fields.insert("q".into(), q.into());
        shared.send(shared.names.node_channel(to), Kind::Command, fields, &payload);
        Box::pin(async move {
            let _forget = Forget(&shared, Waiting::Call(q));
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                _ => Err(ChatError::RpcTimeout),
            }
        })
    }

    fn watch(&self, _node: &str, room: &str) -> BoxFuture<Result<(), ChatError>> {
        let shared = Arc::clone(&self.shared);
        let room = room.to_owned();
        Box::pin(async move {
            let _one_at_a_time = shared.subscriptions.lock().await;
            let channel = shared.names.room(&room);
            let fresh = {
                let mut state = shared.lock();
                // Tracked from before the subscription, so its first envelopes count.
                state.seen.entry(channel.clone()).or_default();
                !state.watched.contains(&room)
            };
            if !fresh {
                // Subscribed already (a join that came while that was under way
                // waited for it, on the lock above).
                return Ok(());
            }
            let mut conn = shared.conn.clone();
            if let Err(err) = conn.subscribe(&channel).await {
                shared.lock().seen.remove(&channel);
                return Err(store_error(&err));
            }
            // Only now: a join given up halfway leaves the room unwatched, and the
            // next one subscribes.
            shared.lock().watched.insert(room.clone());
            // Where is everyone's numbering here? Their marks set this node's
            // starting points, so a loss from now on is seen.
            shared.ask_mark(&room);
            Ok(())
        })
    }

    fn unwatch(&self, _node: &str, room: &str) {
        let channel = self.shared.names.room(room);
        {
            let mut state = self.shared.lock();
            state.watched.remove(room);
            state.seen.remove(&channel);
        }
        let shared = Arc::clone(&self.shared);
        let room = room.to_owned();
        tokio::spawn(async move {
            let _one_at_a_time = shared.subscriptions.lock().await;
            if !shared.lock().watched.contains(&room) {
                let mut conn = shared.conn.clone();
                let _ = conn.unsubscribe(&channel).await;
            }
        });
    }

    fn flush(&self) -> BoxFuture<Result<(), ChatError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { shared.flush().await })
    }

    fn stats(&self) -> BusStats {
        BusStats {
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            gaps: self.shared.gaps.load(Ordering::Relaxed),
            missed: self.shared.missed.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
        }
    }
}
