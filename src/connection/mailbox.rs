//! The bounded mailbox of a push-capable connection (WebSocket, SSE): what
//! [`Connection::send_message`](super::Connection::send_message) and room fan-out put
//! in, and the transport takes out.
//!
//! A client that reads slower than messages arrive fills its mailbox; what happens
//! then is the [`Overflow`] policy, never a silent loss and never unbounded memory:
//! - [`Overflow::DropOldest`] (the default) drops the oldest message to make room,
//!   counts it, and the next time the transport takes a message it first gets an
//!   `alert` frame saying how many were missed;
//! - [`Overflow::Disconnect`] destroys the connection: the transport tells the
//!   client why (over WebSocket, a close with code 1008 and the reason `mailbox
//!   full`; over SSE, a last `alert` event), and it reconnects.
//!
//! Pushing never allocates once the queue has grown to its capacity: the message's
//! bytes are shared (a reference count), the queue is a ring.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

use super::Message;

/// What a full mailbox does.
///
/// in, and the transport takes out.
///
/// A client that reads slower than messages arrive fills its mailbox; what happens
/// then is the [`Overflow`] policy, never a silent loss and never unbounded memory:
/// - [`Overflow::DropOldest`] (the default) drops the oldest message to make room,
///   counts it, and the next time the transport takes a message it first gets an
///   `alert` frame saying how many were missed;
/// - [`Overflow::Disconnect`] destroys the connection: the transport tells the
///   client why (over WebSocket, a close with code 1008 and the reason `mailbox
///   full`; over SSE, a last `alert` event), and it reconnects.
///
/// Pushing never allocates once the queue has grown to its capacity: the message's
/// bytes are shared (a reference count), the queue is a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the oldest message, count it, and tell the client how many it missed.
    #[default]
    DropOldest,
    /// Destroy the connection.
    Disconnect,
}

/// A mailbox's size and overflow policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxConfig {
    /// How many messages may wait (at least 1; default 256).
    pub capacity: usize,
    /// What a full mailbox does.
    pub overflow: Overflow,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig { capacity: 256, overflow: Overflow::DropOldest }
    }
}

/// Why a message was not put in a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection cannot be pushed to (plain HTTP).
    NotPushCapable,
    /// The connection was destroyed or its transport closed.
    Closed,
    /// The mailbox was full and the policy is [`Overflow::Disconnect`]: the
    /// connection is now destroyed.
    Full,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::NotPushCapable => "this connection cannot be pushed to",
            SendError::Closed => "the connection is closed",
            SendError::Full => "the connection's mailbox was full; it was disconnected",
        })
    }
}

impl std::error::Error for SendError {}

pub(crate) struct Mailbox {
    config: MailboxConfig,
    state: Mutex<State>,
    ready: Notify,
    /// Messages dropped by `DropOldest`, over the connection's life.
    dropped: AtomicU64,
}

/// Where a room message stands in its room's sequence on this node: what an SSE
/// stream writes as the event id, so a client can resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) room: std::sync::Arc<str>,
    pub(crate) seq: u64,
}

/// A message as it waits: its bytes, and its place in its room when it has one.
pub(crate) type Delivery = (Bytes, Option<Tag>);

struct State {
    queue: VecDeque<Delivery>,
    /// Dropped since the client was last told.
    untold: u64,
    closed: bool,
    /// Closed because it was full under [`Overflow::Disconnect`].
    overflowed: bool,
}

/// What a push did.
pub(crate) enum Pushed {
    Queued,
    /// The policy is `Disconnect` and the mailbox was full: the caller destroys the
    /// connection.
    Overflowed,
}

impl Mailbox {
    pub(crate) fn new(config: MailboxConfig) -> Mailbox {
        let config = MailboxConfig { capacity: config.capacity.max(1), ..config };
        Mailbox {
            config,
            state: Mutex::new(State { queue: VecDeque::new(), untold: 0, closed: false, overflowed: false }),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No user code runs under this lock.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn push(&self, message: Bytes, tag: Option<Tag>) -> Result<Pushed, SendError> {
        let mut state = self.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        if state.queue.len() >= self.config.capacity {
            match self.config.overflow {
                Overflow::DropOldest => {
                    state.queue.pop_front();
                    state.untold += 1;
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Overflow::Disconnect => {
                    state.closed = true;
                    state.overflowed = true;
                    drop(state);
                    self.ready.notify_one();
                    return Ok(Pushed::Overflowed);
                }
            }
        }
        state.queue.push_back((message, tag));
        drop(state);
        self.ready.notify_one();
        Ok(Pushed::Queued)
    }

    /// The next message for the transport: first an alert for what was dropped
    /// since the last one taken, then the oldest waiting. `None` once the mailbox is
    /// closed and empty.
    pub(crate) async fn recv(&self) -> Option<Delivery> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.lock();
                if state.untold > 0 {
                    let missed = std::mem::take(&mut state.untold);
                    return Some((Message::missed(missed).into_bytes(), None));
                }
                if let Some(delivery) = state.queue.pop_front() {
                    return Some(delivery);
                }
                if state.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Closes the mailbox: pushes are refused, the transport drains what is left.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Whether it was closed for being full (under [`Overflow::Disconnect`]).
    pub(crate) fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: u32) -> Bytes {
        Bytes::from(n.to_string())
    }

    #[tokio::test]
    async fn drop_oldest_counts_and_tells_the_client() {
        let mailbox = Mailbox::new(MailboxConfig { capacity: 2, overflow: Overflow::DropOldest });
        for n in 0..5 {
            assert!(matches!(mailbox.push(bytes(n), None), Ok(Pushed::Queued)));
        }
        assert_eq!(mailbox.dropped(), 3);
        assert_eq!(mailbox.recv().await.unwrap().0, Message::missed(3).into_bytes());
        assert_eq!(mailbox.recv().await.unwrap().0, "3");
        assert_eq!(mailbox.recv().await.unwrap().0, "4");
        mailbox.close();
        assert_eq!(mailbox.recv().await, None);
        assert_eq!(mailbox.push(bytes(9), None).err(), Some(SendError::Closed));
    }

    #[tokio::test]
    async fn disconnect_refuses_and_closes() {
        let mailbox = Mailbox::new(MailboxConfig { capacity: 1, overflow: Overflow::Disconnect });
        assert!(matches!(mailbox.push(bytes(1), None), Ok(Pushed::Queued)));
        assert!(matches!(mailbox.push(bytes(2), None), Ok(Pushed::Overflowed)));
        assert_eq!(mailbox.recv().await.unwrap().0, "1");
        assert_eq!(mailbox.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let mailbox = std::sync::Arc::new(Mailbox::new(MailboxConfig::default()));
        let m = mailbox.clone();
        let waiter = tokio::spawn(async move { m.recv().await });
        tokio::task::yield_now().await;
        mailbox.push(bytes(7), None).ok();
        assert_eq!(waiter.await.unwrap().unwrap().0, "7");
    }
}
