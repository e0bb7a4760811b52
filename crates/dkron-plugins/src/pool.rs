//! Connections kept per broker between runs, closed when idle.
//!
//! A job firing every second must not open a broker connection (TCP, TLS, AMQP or SASL
//! handshakes) per run, and a job deleted last week must not keep one open forever. Each
//! executor has a [`Pool`] keyed by everything that makes a connection different (addresses,
//! credentials, TLS settings); concurrent first runs for a key share one connect, a failed
//! connect is retried by the next run, a connection found broken is discarded, and a sweep
//! closes the ones no run used for [`IDLE`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// A connection unused this long is closed.
pub const IDLE: Duration = Duration::from_secs(60);
/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Connections one executor keeps at most (beyond it, the least recently used idle one goes).
const MAX_PER_POOL: usize = 128;

pub(crate) type Closing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A pooled connection: cheap to clone (a handle), closed explicitly when dropped from the pool.
pub(crate) trait Conn: Clone + Send + Sync + 'static {
    fn close(self) -> Closing;
    /// Whether two handles are the same connection.
    fn same(&self, other: &Self) -> bool;
}

impl<T: Send + Sync + 'static> Conn for Arc<T>
where
    Arc<T>: Closable,
{
    fn close(self) -> Closing {
        Closable::close_now(self)
    }
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

/// How an `Arc`-held connection closes.
pub(crate) trait Closable {
    fn close_now(self) -> Closing;
}

struct Entry<C> {
    cell: Arc<OnceCell<C>>,
    last_used: Instant,
    in_use: Arc<AtomicUsize>,
}

/// One executor's connections by key.
pub(crate) struct Pool<C> {
    entries: Mutex<HashMap<String, Entry<C>>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// A connection lent to one run; the pool does not close it while any lease is out.
pub(crate) struct Lease<C> {
    pub conn: C,
    _held: Held,
}

/// One run holding an entry (also while it connects, so a cancelled connect lets go).
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<C: Conn> Pool<C> {
    /// The connection for `key`, connecting with `connect` if there is none (one connect at
    /// a time per key; a failure leaves the key free for the next run to try).
    pub async fn get<F, Fut, E>(&self, key: &str, connect: F) -> Result<Lease<C>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let now = Instant::now();
        let (cell, in_use, evicted) = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let entry = entries.entry(key.to_owned()).or_insert_with(|| Entry {
                cell: Arc::new(OnceCell::new()),
                last_used: now,
                in_use: Arc::new(AtomicUsize::new(0)),
            });
            entry.last_used = now;
            entry.in_use.fetch_add(1, Ordering::AcqRel);
            let (cell, in_use) = (entry.cell.clone(), entry.in_use.clone());
            let evicted = if entries.len() > MAX_PER_POOL {
                evict_lru(&mut entries)
            } else {
                None
            };
            (cell, in_use, evicted)
        };
        if let Some(conn) = evicted {
            tokio::spawn(conn.close());
        }
        let held = Held(in_use);
        let conn = cell.get_or_try_init(connect).await?.clone();
        Ok(Lease { conn, _held: held })
    }

    /// Like [`Pool::get`], but a pooled connection `usable` finds stale (its broker went away
    /// since the last run) is discarded and replaced by a fresh connect, once, rather than
    /// left to reconnect in the background within this run's bound.
    pub async fn get_usable<F, Fut, E>(
        &self,
        key: &str,
        connect: F,
        usable: impl Fn(&C) -> bool,
    ) -> Result<Lease<C>, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let lease = self.get(key, &connect).await?;
        if usable(&lease.conn) {
            return Ok(lease);
        }
        self.discard(key, &lease.conn);
        drop(lease);
        self.get(key, connect).await
    }

    /// Drops `conn` from the pool (it was found broken), so the next run connects anew.
    pub fn discard(&self, key: &str, conn: &C) {
        let removed = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let same = entries
                .get(key)
                .and_then(|e| e.cell.get())
                .is_some_and(|c| c.same(conn));
            if same { entries.remove(key) } else { None }
        };
        if let Some(conn) = removed.and_then(|e| e.cell.get().cloned()) {
            tokio::spawn(conn.close());
        }
    }

    /// Removes the connections no run used for `idle` and that no run holds; returns them
    /// to be closed.
    fn sweep(&self, now: Instant, idle: Duration) -> Vec<C> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = entries
            .iter()
            .filter(|(_, e)| {
                e.in_use.load(Ordering::Acquire) == 0 && now.duration_since(e.last_used) >= idle
            })
            .map(|(k, _)| k.clone())
            .collect();
        stale
            .iter()
            .filter_map(|k| entries.remove(k))
            .filter_map(|e| e.cell.get().cloned())
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// The least recently used entry no run holds, removed; its connection if it had one.
fn evict_lru<C: Clone>(entries: &mut HashMap<String, Entry<C>>) -> Option<C> {
    let key = entries
        .iter()
        .filter(|(_, e)| e.in_use.load(Ordering::Acquire) == 0)
        .min_by_key(|(_, e)| e.last_used)
        .map(|(k, _)| k.clone())?;
    entries.remove(&key).and_then(|e| e.cell.get().cloned())
}

/// Every executor's pool, shared by the runs of one worker (clones share it). The first run
/// starts the sweep, which ends when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Connections(Arc<Pools>);

#[derive(Default)]
pub(crate) struct Pools {
    #[cfg(feature = "nats")]
    pub nats: Pool<async_nats::Client>,
    #[cfg(feature = "rabbitmq")]
    pub rabbitmq: Pool<Arc<lapin::Connection>>,
    #[cfg(feature = "kafka")]
    pub kafka: Pool<Arc<crate::kafka::Brokers>>,
    #[cfg(feature = "grpc")]
    pub grpc: Pool<Arc<crate::grpc::Server>>,
    #[cfg(feature = "gcppubsub")]
    pub http: std::sync::OnceLock<reqwest::Client>,
    sweeping: AtomicBool,
}

impl Pools {
    fn sweep(&self, now: Instant) -> Vec<Closing> {
        #[allow(unused_mut)]
        let mut closing: Vec<Closing> = Vec::new();
        #[cfg(feature = "nats")]
        closing.extend(self.nats.sweep(now, IDLE).into_iter().map(Conn::close));
        #[cfg(feature = "rabbitmq")]
        closing.extend(self.rabbitmq.sweep(now, IDLE).into_iter().map(Conn::close));
        #[cfg(feature = "kafka")]
        closing.extend(self.kafka.sweep(now, IDLE).into_iter().map(Conn::close));
        #[cfg(feature = "grpc")]
        closing.extend(self.grpc.sweep(now, IDLE).into_iter().map(Conn::close));
        let _ = now;
        closing
    }
}

impl Connections {
    /// The pools, with the idle sweep running (started on first use, in the caller's runtime).
    pub(crate) fn pools(&self) -> &Pools {
        if !self.0.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep_while_alive(Arc::downgrade(&self.0)));
        }
        &self.0
    }
}

async fn sweep_while_alive(pools: Weak<Pools>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pools) = pools.upgrade() else { return };
        let closing = pools.sweep(Instant::now());
        drop(pools);
        if !closing.is_empty() {
            tracing::debug!(
                connections = closing.len(),
                "closing idle broker connections"
            );
        }
        for close in closing {
            close.await;
        }
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections")
    }
}

/// Two run contexts are equal whatever connections they share.
impl PartialEq for Connections {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Connections {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that counts its closes.
    #[derive(Clone)]
    struct Fake(Arc<AtomicUsize>);

    impl Conn for Fake {
        fn close(self) -> Closing {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::AcqRel);
            })
        }
        fn same(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.0, &other.0)
        }
    }

    fn fake() -> Fake {
        Fake(Arc::new(AtomicUsize::new(0)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_connects_once_and_idle_connections_are_swept() {
        let pool = Pool::<Fake>::default();
        let connects = AtomicUsize::new(0);
        let connect = || async {
            connects.fetch_add(1, Ordering::AcqRel);
            Ok::<_, ()>(fake())
        };
        let a = pool.get("a", connect).await.unwrap();
        let a2 = pool.get("a", connect).await.unwrap();
        assert!(a.conn.same(&a2.conn));
        assert_eq!(connects.load(Ordering::Acquire), 1);
        drop((a, a2));

        let held = pool.get("b", connect).await.unwrap();
        tokio::time::advance(IDLE).await;
        let swept = pool.sweep(Instant::now(), IDLE);
        // "a" is idle; "b" is held by a run and stays however old it is.
        assert_eq!(swept.len(), 1);
        assert_eq!(pool.len(), 1);
        drop(held);
        assert_eq!(pool.sweep(Instant::now(), IDLE).len(), 1);
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_leaves_the_key_for_the_next_run() {
        let pool = Pool::<Fake>::default();
        let failed = pool.get("a", || async { Err::<Fake, _>("refused") }).await;
        assert_eq!(failed.err(), Some("refused"));
        let ok = pool.get("a", || async { Ok::<_, &str>(fake()) }).await;
        assert!(ok.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_discarded_connection_is_closed_and_replaced() {
        let pool = Pool::<Fake>::default();
        let first = pool
            .get("a", || async { Ok::<_, ()>(fake()) })
            .await
            .unwrap();
        let conn = first.conn.clone();
        drop(first);
        pool.discard("a", &conn);
        tokio::task::yield_now().await;
        assert_eq!(conn.0.load(Ordering::Acquire), 1, "closed once");
        let second = pool
            .get("a", || async { Ok::<_, ()>(fake()) })
            .await
            .unwrap();
        assert!(!second.conn.same(&conn));
        // Discarding a connection that is no longer the pool's leaves the new one alone.
        pool.discard("a", &conn);
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_connection_is_replaced_before_a_run_uses_it() {
        let pool = Pool::<Fake>::default();
        let first = pool
            .get("a", || async { Ok::<_, ()>(fake()) })
            .await
            .unwrap();
        let stale = first.conn.clone();
        drop(first);
        let fresh = pool
            .get_usable("a", || async { Ok::<_, ()>(fake()) }, |c| !c.same(&stale))
            .await
            .unwrap();
        assert!(!fresh.conn.same(&stale));
        tokio::task::yield_now().await;
        assert_eq!(
            stale.0.load(Ordering::Acquire),
            1,
            "the stale one was closed"
        );
        let again = pool
            .get_usable("a", || async { Ok::<_, ()>(fake()) }, |_| true)
            .await
            .unwrap();
        assert!(again.conn.same(&fresh.conn), "a usable one is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_is_bounded_by_evicting_the_least_recently_used() {
        let pool = Pool::<Fake>::default();
        let first = pool
            .get("k0", || async { Ok::<_, ()>(fake()) })
            .await
            .unwrap();
        let oldest = first.conn.clone();
        drop(first);
        for i in 1..=MAX_PER_POOL {
            tokio::time::advance(Duration::from_millis(1)).await;
            drop(
                pool.get(&format!("k{i}"), || async { Ok::<_, ()>(fake()) })
                    .await
                    .unwrap(),
            );
        }
        tokio::task::yield_now().await;
        assert_eq!(pool.len(), MAX_PER_POOL);
        assert_eq!(oldest.0.load(Ordering::Acquire), 1, "the oldest was closed");
    }
}
