//! Long-lived connections taken from a deadpool pool and shared by concurrent calls.
//!
//! A deadpool-redis connection is multiplexed: clones share one socket and pipeline concurrent
//! requests. Checking one out per call would cost the pool's recycle `PING` (a round trip) on
//! every call, so each lane keeps its connection until it breaks, then takes a fresh one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::error::{Error, Result, unreachable};

/// A pooled connection object that lanes keep.
pub(crate) trait Pooled: Send + 'static {
    /// The cheap, cloneable handle calls use.
    type Conn: ConnectionLike + Clone + Send + 'static;

    fn handle(&self) -> Self::Conn;

    /// Removes the object from its pool for good (it is broken).
    fn detach(self);
}

impl Pooled for deadpool_redis::Connection {
    type Conn = MultiplexedConnection;

    fn handle(&self) -> MultiplexedConnection {
        MultiplexedConnection::clone(self)
    }

    fn detach(self) {
        drop(Self::take(self));
    }
}

#[cfg(feature = "cluster")]
impl Pooled for deadpool_redis::cluster::Connection {
    type Conn = deadpool_redis::cluster::ClusterConnection;

    fn handle(&self) -> Self::Conn {
        Self::Conn::clone(self)
    }

    fn detach(self) {
        drop(Self::take(self));
    }
}

pub(crate) struct Lanes<P> {
    slots: Box<[Lane<P>]>,
    next_lane: AtomicUsize,
    next_generation: AtomicU64,
}

struct Lane<P> {
    held: Mutex<Option<(u64, P)>>,
    /// Only one task per lane opens a connection; the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    /// Connection attempts so far: a waiter that sees it change knows the attempt it waited
    /// for failed, and fails too instead of queueing another one (which would make callers
    /// wait one connect timeout each, in turn, while Redis is unreachable).
    attempts: AtomicU64,
}

/// Which lane connection a call used, to drop exactly that one if it broke.
#[derive(Clone, Copy)]
pub(crate) struct Ticket {
    lane: usize,
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The slot is replaced whole, so a poisoned one is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<P: Pooled> Lanes<P> {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            slots: (0..n.max(1))
                .map(|_| Lane {
                    held: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                    attempts: AtomicU64::new(0),
                })
                .collect(),
            next_lane: AtomicUsize::new(0),
            next_generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn current(&self, lane: usize) -> Option<(Ticket, P::Conn)> {
        lock(&self.slots[lane].held)
            .as_ref()
            .map(|(generation, held)| {
                let ticket = Ticket {
                    lane,
                    generation: *generation,
                };
                (ticket, held.handle())
            })
    }

    /// The next lane's connection, taking one from the pool (`get`) if it has none.
    pub(crate) async fn checkout<F, Fut>(&self, get: F) -> Result<(Ticket, P::Conn)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<P>>,
    {
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        if let Some(co) = self.current(lane) {
            return Ok(co);
        }
        let slot = &self.slots[lane];
        let seen = slot.attempts.load(Ordering::Acquire);
        let _connecting = slot.connecting.lock().await;
        if let Some(co) = self.current(lane) {
            return Ok(co);
        }
        if slot.attempts.load(Ordering::Acquire) != seen {
            return Err(Error::Unavailable(
                "could not connect to redis (another call just tried)".into(),
            ));
        }
        slot.attempts.fetch_add(1, Ordering::AcqRel);
        let held = get().await?;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let conn = held.handle();
        *lock(&self.slots[lane].held) = Some((generation, held));
        Ok((Ticket { lane, generation }, conn))
    }

    /// Maps a reply to the crate error, dropping the lane's connection when it is broken so
    /// the next call on that lane opens a new one.
    pub(crate) fn settle<T>(&self, ticket: Ticket, reply: RedisResult<T>) -> Result<T> {
        reply.map_err(|err| {
            if unreachable(&err) {
                self.discard(ticket);
            }
            Error::from_redis(err)
        })
    }

    pub(crate) fn discard(&self, ticket: Ticket) {
        let mut held = lock(&self.slots[ticket.lane].held);
        if held.as_ref().is_some_and(|(g, _)| *g == ticket.generation)
            && let Some((_, conn)) = held.take()
        {
            // Detach rather than return it: the pool would only PING a dead socket.
            conn.detach();
        }
    }
}

/// A connection of either kind, so calls are written once.
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(deadpool_redis::cluster::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.get_db(),
        }
    }
}
