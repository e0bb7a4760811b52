//! The tokio runtime around foca: one task owns the UDP socket, the `Foca`
//! instance and the timer queue, and `select!`s over incoming datagrams, the
//! next timer deadline and commands from [`Membership`] handles.
//!
//! Timers live in one ordered queue inside that task rather than in a spawned
//! sleep per timer: foca needs them delivered in deadline order (a probe's
//! indirect phase must run before the next probe starts), which independent
//! sleeps racing each other do not guarantee.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, Notification, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::identity::NodeId;
use crate::keyring::{self, Keyring, OpenError};
use crate::{
    Config, JoinError, MAX_DATAGRAM, MAX_IDENTITY_BYTES, Member, MemberStatus, SetTagsError,
    StartError, Stats,
};

type FocaInstance = Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// How long a join waits before re-sending its Announce to addresses that have
/// not answered yet (UDP may drop the first one).
const ANNOUNCE_RETRY: Duration = Duration::from_millis(500);
/// At most one decryption warning per peer address per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on the per-address bookkeeping maps (warnings, "heard from").
const MAX_TRACKED_ADDRS: usize = 4096;

enum Command {
    Announce(Vec<SocketAddr>),
    SetTags {
        tags: BTreeMap<String, String>,
        reply: oneshot::Sender<Result<(), SetTagsError>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// State the task shares with handles without a round trip through it.
struct Shared {
    local_addr: SocketAddr,
    advertise: SocketAddr,
    /// When we last got a datagram foca accepted, by UDP source address; this is
    /// how `join` knows an address answered.
    heard: Mutex<HashMap<SocketAddr, Instant>>,
    /// Bumped whenever `heard` changes, to wake waiting joins.
    heard_tx: watch::Sender<u64>,
    decrypt_failures: AtomicU64,
    malformed: AtomicU64,
    probe_rounds: AtomicU64,
}

/// Handle to a running gossip member. Cheap to clone; when every handle is
/// dropped the task stops without leaving (peers will mark the node failed).
#[derive(Clone)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Vec<Member>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("local_addr", &self.shared.local_addr)
            .field("advertise", &self.shared.advertise)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Binds the gossip socket and starts the membership task. The node is alone
    /// until [`Membership::join`] succeeds (or another node joins through it).
    pub async fn start(config: Config) -> Result<Membership, StartError> {
        if config.name.is_empty() {
            return Err(StartError::EmptyName);
        }
        let socket = UdpSocket::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let advertise = config.advertise.unwrap_or(local_addr);
        if advertise.ip().is_unspecified() || advertise.port() == 0 {
            return Err(StartError::Advertise(advertise));
        }

        let identity = NodeId {
            name: config.name,
            addr: advertise,
            tags: config.tags,
            bump: config.incarnation,
            leaving: false,
        };
        let size = identity.encoded_len();
        if size > MAX_IDENTITY_BYTES {
            return Err(StartError::IdentityTooLarge {
                size,
                max: MAX_IDENTITY_BYTES,
                packet: MAX_DATAGRAM,
            });
        }

        let foca = Foca::new(
            identity,
            config.profile.foca_config(),
            rand::make_rng::<StdRng>(),
            PostcardCodec,
        );
        let shared = Arc::new(Shared {
            local_addr,
            advertise,
            heard: Mutex::new(HashMap::new()),
            heard_tx: watch::Sender::new(0),
            decrypt_failures: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            probe_rounds: AtomicU64::new(0),
        });
        let (view_tx, view) = watch::channel(Vec::new());
        let (commands, commands_rx) = mpsc::channel(64);
        let mut driver = Driver {
            foca,
            socket,
            keyring: config.keyring,
            effects: Effects::default(),
            view_tx,
            shared: shared.clone(),
            warned: HashMap::new(),
            left: false,
        };
        driver.publish();
        info!(
            name = %driver.foca.identity().name,
            %local_addr,
            %advertise,
            encrypted = driver.keyring.is_some(),
            "gossip membership started"
        );
        tokio::spawn(driver.run(commands_rx));
        Ok(Membership {
            commands,
            view,
            shared,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address other members know us by.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.shared.advertise
    }

    /// Announces this node to each address and waits up to `timeout` for them to
    /// answer. `Ok(n)` is how many of the (distinct, non-self) addresses answered;
    /// a peer that cannot decrypt our gossip never answers, so a node with the
    /// wrong key gets `Ok(0)`.
    pub async fn join(&self, addrs: &[SocketAddr], timeout: Duration) -> Result<usize, JoinError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut seen = HashSet::new();
        let targets: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| *a != self.shared.local_addr && *a != self.shared.advertise)
            .filter(|a| seen.insert(*a))
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let mut wake = self.shared.heard_tx.subscribe();
        self.send(Command::Announce(targets.clone()))
            .await
            .map_err(|()| JoinError::Stopped)?;
        let mut next_retry = start + ANNOUNCE_RETRY;
        loop {
            let pending = self.unanswered_since(&targets, start);
            if pending.is_empty() {
                return Ok(targets.len());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(targets.len() - pending.len());
            }
            if now >= next_retry {
                self.send(Command::Announce(pending))
                    .await
                    .map_err(|()| JoinError::Stopped)?;
                next_retry = now + ANNOUNCE_RETRY;
                continue;
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        return Err(JoinError::Stopped);
                    }
                }
                () = sleep_until(deadline.min(next_retry)) => {}
            }
        }
    }

    fn unanswered_since(&self, targets: &[SocketAddr], since: Instant) -> Vec<SocketAddr> {
        let heard = self
            .shared
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        targets
            .iter()
            .copied()
            .filter(|a| heard.get(a).is_none_or(|at| *at < since))
            .collect()
    }

    /// All known members including this node, sorted by name. Left and failed
    /// members stay listed until foca forgets them.
    pub fn members(&self) -> Vec<Member> {
        self.view.borrow().clone()
    }

    /// Reads the member list in place (no copy: a leader asks for an address on every run).
    /// `f` must not wait: gossip cannot publish a change while it runs.
    pub fn with_members<T>(&self, f: impl FnOnce(&[Member]) -> T) -> T {
        f(&self.view.borrow())
    }

    /// A receiver that sees the member list after every change.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Member>> {
        self.view.clone()
    }

    /// Replaces this node's tags and gossips the change (foca `change_identity`
    /// with a bumped identity; peers see the member renamed in place).
    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), SetTagsError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetTags { tags, reply })
            .await
            .map_err(|()| SetTagsError::Stopped)?;
        rx.await.unwrap_or(Err(SetTagsError::Stopped))
    }

    /// Leaves gracefully (peers will show this node as Left), then stops the task.
    /// Does nothing if the task has already stopped.
    pub async fn leave(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Leave { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the task and closes the socket *without* leaving, as a crash would;
    /// peers will eventually mark this node Failed.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Counters of refused datagrams.
    pub fn stats(&self) -> Stats {
        Stats {
            decrypt_failures: self.shared.decrypt_failures.load(Ordering::Relaxed),
            malformed: self.shared.malformed.load(Ordering::Relaxed),
            probe_rounds: self.shared.probe_rounds.load(Ordering::Relaxed),
        }
    }

    async fn send(&self, command: Command) -> Result<(), ()> {
        self.commands.send(command).await.map_err(|_| ())
    }
}

/// Deadline-ordered timer queue; the sequence number keeps insertion order
/// among timers with the same deadline.
#[derive(Default)]
struct TimerQueue {
    queue: BTreeMap<(Instant, u64), Timer<NodeId>>,
    seq: u64,
}

impl TimerQueue {
    fn push(&mut self, at: Instant, timer: Timer<NodeId>) {
        self.seq = self.seq.wrapping_add(1);
        self.queue.insert((at, self.seq), timer);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Vec<Timer<NodeId>> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        // If we lagged and several timers are due at once, foca asks for them to
        // be handled in its `Ord` order (indirect probe before the next probe);
        // the sort is stable, so deadline order is kept within each kind.
        due.sort();
        due
    }
}

/// What foca asked for during one call; drained right after each call.
#[derive(Default)]
struct Effects {
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    timers: TimerQueue,
    notifications: Vec<OwnedNotification<NodeId>>,
}

impl foca::Runtime<NodeId> for Effects {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        self.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.outbox.push((to.addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.timers.push(Instant::now() + after, event);
    }
}

struct Driver {
    foca: FocaInstance,
    socket: UdpSocket,
    keyring: Option<Keyring>,
    effects: Effects,
    view_tx: watch::Sender<Vec<Member>>,
    shared: Arc<Shared>,
    /// Last decryption warning per peer address (rate limit).
    warned: HashMap<SocketAddr, Instant>,
    /// Set once we have left; the local member is then reported as Left.
    left: bool,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // Larger than any datagram we accept so oversize ones are seen (and
        // dropped) whole instead of silently truncated into something parseable.
        let mut buf = vec![0u8; 64 * 1024];
        let reply = loop {
            let next_timer = self.effects.timers.next_deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    None => {
                        debug!("all membership handles dropped; stopping without leave");
                        break None;
                    }
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(Command::Leave { reply }) => {
                        self.leave().await;
                        break Some(reply);
                    }
                    Some(Command::Announce(addrs)) => self.announce(&addrs).await,
                    Some(Command::SetTags { tags, reply }) => {
                        let result = self.set_tags(tags).await;
                        let _ = reply.send(result);
                    }
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.datagram(&buf[..len], from).await,
                    // Unconnected UDP sockets only report transient errors here
                    // (e.g. ICMP-triggered); nothing to do but keep receiving.
                    Err(error) => debug!(%error, "gossip socket receive error"),
                },
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    self.fire_timers().await;
                }
            }
        };
        info!(name = %self.foca.identity().name, left = self.left, "gossip membership stopped");
        // Close the socket before acknowledging, so callers of shutdown() know
        // the node is really gone from the network.
        drop(self.socket);
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    async fn datagram(&mut self, data: &[u8], from: SocketAddr) {
        if data.len() > MAX_DATAGRAM {
            self.shared.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(%from, len = data.len(), "dropped oversize gossip datagram");
            return;
        }
        let payload = match keyring::open(self.keyring.as_ref(), data) {
            Ok(payload) => payload,
            Err(error) => {
                self.rejected(from, error);
                return;
            }
        };
        match self.foca.handle_data(&payload, &mut self.effects) {
            Ok(()) => self.heard_from(from),
            Err(error) => {
                // foca also returns errors for harmless cases (a stale packet
                // from ourselves, an indirect probe about us); decoding failures
                // are garbage. Either way: log quietly, keep running.
                if matches!(error, foca::Error::Decode(_) | foca::Error::MalformedPacket) {
                    self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                }
                debug!(%from, %error, "gossip datagram ignored");
            }
        }
        self.flush().await;
    }

    fn rejected(&mut self, from: SocketAddr, error: OpenError) {
        let hint = match error {
            OpenError::Malformed => {
                self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(%from, "dropped datagram that is not dkron gossip");
                return;
            }
            OpenError::Undecryptable => "could not be decrypted",
            OpenError::PeerUnencrypted => "is not encrypted but this node has an --encrypt key",
            OpenError::PeerEncrypted => "is encrypted but this node has no --encrypt key",
        };
        self.shared.decrypt_failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .warned
            .get(&from)
            .is_some_and(|last| now.duration_since(*last) < WARN_INTERVAL)
        {
            return;
        }
        if self.warned.len() >= MAX_TRACKED_ADDRS {
            self.warned
                .retain(|_, last| now.duration_since(*last) < WARN_INTERVAL);
        }
        self.warned.insert(from, now);
        warn!(
            "gossip from {from} {hint}: check that every node uses the same --encrypt key \
             (further failures from this address are not logged for a minute)"
        );
    }

    fn heard_from(&mut self, from: SocketAddr) {
        let now = Instant::now();
        let mut heard = self
            .shared
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if heard.len() >= MAX_TRACKED_ADDRS && !heard.contains_key(&from) {
            // Keep the map bounded: forget the longest-silent address.
            if let Some(oldest) = heard.iter().min_by_key(|(_, at)| **at).map(|(a, _)| *a) {
                heard.remove(&oldest);
            }
        }
        heard.insert(from, now);
        drop(heard);
        self.shared.heard_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn fire_timers(&mut self) {
        for timer in self.effects.timers.pop_due(Instant::now()) {
            if matches!(timer, Timer::ProbeRandomMember(_)) {
                self.shared.probe_rounds.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(error) = self.foca.handle_timer(timer, &mut self.effects) {
                debug!(%error, "gossip timer error");
            }
        }
        self.flush().await;
    }

    async fn announce(&mut self, addrs: &[SocketAddr]) {
        for addr in addrs {
            if let Err(error) = self
                .foca
                .announce(NodeId::probe_target(*addr), &mut self.effects)
            {
                debug!(%addr, %error, "announce failed");
            }
        }
        self.flush().await;
    }

    async fn set_tags(&mut self, tags: BTreeMap<String, String>) -> Result<(), SetTagsError> {
        if self.foca.identity().tags == tags {
            return Ok(());
        }
        let mut next = self.foca.identity().bumped();
        next.tags = tags;
        let size = next.encoded_len();
        if size > MAX_IDENTITY_BYTES {
            return Err(SetTagsError::TooLarge {
                size,
                max: MAX_IDENTITY_BYTES,
            });
        }
        let result = self
            .foca
            .change_identity(next, &mut self.effects)
            .map_err(|e| SetTagsError::Gossip(e.to_string()));
        self.flush().await;
        result
    }

    /// Graceful leave: switch to an identity flagged `leaving` (peers rename us
    /// in place), then declare it down. Peers see a Down member with the flag
    /// and report Left rather than Failed.
    async fn leave(&mut self) {
        let mut leaving = self.foca.identity().bumped();
        leaving.leaving = true;
        if let Err(error) = self.foca.change_identity(leaving, &mut self.effects) {
            debug!(%error, "could not switch to leaving identity");
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.effects) {
            warn!(%error, "could not announce leave to the cluster");
        }
        self.left = true;
        self.flush().await;
    }

    /// Sends what foca queued, logs its notifications and republishes the view.
    async fn flush(&mut self) {
        for (to, payload) in std::mem::take(&mut self.effects.outbox) {
            let Some(wire) = keyring::seal(self.keyring.as_ref(), &payload) else {
                debug!(%to, "could not seal gossip datagram");
                continue;
            };
            if let Err(error) = self.socket.send_to(&wire, to).await {
                debug!(%to, %error, "gossip send failed");
            }
        }
        for notification in std::mem::take(&mut self.effects.notifications) {
            match notification {
                OwnedNotification::MemberUp(id) => info!(member = ?id, "member up"),
                OwnedNotification::MemberDown(id) if id.leaving => {
                    info!(member = ?id, "member left");
                }
                OwnedNotification::MemberDown(id) => warn!(member = ?id, "member failed"),
                OwnedNotification::Rename(old, new) => debug!(?old, ?new, "member renamed"),
                OwnedNotification::Active => debug!("joined the cluster"),
                OwnedNotification::Idle => debug!("no other active members"),
                OwnedNotification::Defunct => {
                    if !self.left {
                        warn!("the cluster declared this node down");
                    }
                }
                OwnedNotification::Rejoin(id) => {
                    info!(identity = ?id, "rejoined the cluster after being declared down");
                }
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        let view = self.build_view();
        self.view_tx.send_if_modified(|current| {
            if *current == view {
                false
            } else {
                *current = view;
                true
            }
        });
    }

    /// Current member list: ourselves plus foca's full membership state, one
    /// entry per name (an old Down entry of a node that came back at another
    /// address is hidden by the live one).
    fn build_view(&self) -> Vec<Member> {
        let me = self.foca.identity();
        // name -> (liveness rank, bump, member); the best (rank, bump) wins.
        let mut by_name: BTreeMap<String, (u8, u64, Member)> = BTreeMap::new();
        let own_status = if self.left {
            MemberStatus::Left
        } else {
            MemberStatus::Alive
        };
        by_name.insert(
            me.name.clone(),
            (u8::MAX, me.bump, to_member(me, own_status)),
        );
        for member in self.foca.iter_membership_state() {
            let id = member.id();
            let status = match member.state() {
                foca::State::Alive => MemberStatus::Alive,
                foca::State::Suspect => MemberStatus::Suspect,
                foca::State::Down if id.leaving => MemberStatus::Left,
                foca::State::Down => MemberStatus::Failed,
            };
            let key = (rank(status), id.bump);
            let better = by_name.get(&id.name).is_none_or(|(r, b, _)| key > (*r, *b));
            if better {
                by_name.insert(id.name.clone(), (key.0, key.1, to_member(id, status)));
            }
        }
        by_name.into_values().map(|(_, _, m)| m).collect()
    }
}

/// Live entries hide dead ones with the same name.
fn rank(status: MemberStatus) -> u8 {
    match status {
        MemberStatus::Alive | MemberStatus::Suspect => 1,
        MemberStatus::Left | MemberStatus::Failed => 0,
    }
}

fn to_member(id: &NodeId, status: MemberStatus) -> Member {
    Member {
        name: id.name.clone(),
        addr: id.addr,
        tags: id.tags.clone(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeId {
        NodeId::probe_target("127.0.0.1:9".parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn timers_come_out_in_deadline_order_and_only_when_due() {
        let mut q = TimerQueue::default();
        let now = Instant::now();
        q.push(now + Duration::from_millis(30), Timer::PeriodicGossip(3));
        q.push(now + Duration::from_millis(10), Timer::PeriodicGossip(1));
        q.push(now + Duration::from_millis(20), Timer::PeriodicGossip(2));
        assert_eq!(q.next_deadline(), Some(now + Duration::from_millis(10)));
        assert!(q.pop_due(now).is_empty());
        assert_eq!(
            q.pop_due(now + Duration::from_millis(20)),
            vec![Timer::PeriodicGossip(1), Timer::PeriodicGossip(2)]
        );
        assert_eq!(q.next_deadline(), Some(now + Duration::from_millis(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn lagging_timers_follow_focas_order() {
        let mut q = TimerQueue::default();
        let now = Instant::now();
        // The next probe became due before the indirect phase of the current
        // one was handled: foca wants the indirect probe first.
        q.push(now, Timer::ProbeRandomMember(1));
        q.push(
            now + Duration::from_millis(1),
            Timer::SendIndirectProbe {
                probed_id: id(),
                token: 1,
            },
        );
        let due = q.pop_due(now + Duration::from_millis(5));
        assert!(matches!(due[0], Timer::SendIndirectProbe { .. }));
        assert!(matches!(due[1], Timer::ProbeRandomMember(1)));
    }
}
