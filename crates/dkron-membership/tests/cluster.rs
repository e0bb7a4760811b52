//! End-to-end gossip tests: real UDP sockets on 127.0.0.1 with the fast `Local`
//! profile, every wait bounded by a polling helper so a regression fails in
//! seconds instead of hanging.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use dkron_membership::{
    Config, Keyring, MAX_IDENTITY_BYTES, MemberStatus, Membership, Profile, SetTagsError,
    StartError,
};
use tokio::time::{Instant, sleep};

const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Generous bound for convergence on a loaded 2-core machine; typical is < 1 s.
const CONVERGE: Duration = Duration::from_secs(8);

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn config(name: &str, keyring: Option<Keyring>) -> Config {
    let mut c = Config::new(name, "127.0.0.1:0".parse().unwrap());
    c.profile = Profile::Local;
    c.keyring = keyring;
    c.tags = tags(&[("role", "dkron"), ("node", name)]);
    c
}

fn key(len: usize, fill: u8) -> Keyring {
    Keyring::from_base64(&base64::engine::general_purpose::STANDARD.encode(vec![fill; len]))
        .expect("valid key")
}

async fn start(name: &str, keyring: Option<Keyring>) -> Membership {
    Membership::start(config(name, keyring))
        .await
        .expect("start")
}

/// Polls `check` every 25 ms until it holds or `within` elapses.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(25)).await;
    }
}

fn status(node: &Membership, name: &str) -> Option<MemberStatus> {
    node.members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.status)
}

fn describe(node: &Membership) -> String {
    node.members()
        .iter()
        .map(|m| format!("{}={}", m.name, m.status))
        .collect::<Vec<_>>()
        .join(",")
}

async fn three_node_cluster(keyring: Option<Keyring>) -> [Membership; 3] {
    let a = start("a", keyring.clone()).await;
    let b = start("b", keyring.clone()).await;
    let c = start("c", keyring).await;
    let seed = [a.local_addr()];
    assert_eq!(b.join(&seed, JOIN_TIMEOUT).await, Ok(1));
    assert_eq!(c.join(&seed, JOIN_TIMEOUT).await, Ok(1));
    for node in [&a, &b, &c] {
        assert!(
            eventually(CONVERGE, || {
                let m = node.members();
                m.len() == 3 && m.iter().all(|m| m.status == MemberStatus::Alive)
            })
            .await,
            "cluster did not converge: {}",
            describe(node)
        );
    }
    [a, b, c]
}

#[tokio::test]
async fn three_nodes_join_through_one_seed_and_see_tags() {
    let [a, b, c] = three_node_cluster(None).await;
    for node in [&a, &b, &c] {
        let members = node.members();
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"], "sorted by name, self included");
        for m in &members {
            assert_eq!(m.tags, tags(&[("role", "dkron"), ("node", &m.name)]));
        }
    }
    let b_seen_by_c = c.members().into_iter().find(|m| m.name == "b").unwrap();
    assert_eq!(b_seen_by_c.addr, b.local_addr());
}

#[tokio::test]
async fn set_tags_propagates_to_other_members() {
    let [a, b, c] = three_node_cluster(None).await;
    let watch_a = a.subscribe();
    let new_tags = tags(&[("role", "dkron"), ("node", "b"), ("server", "true")]);
    b.set_tags(new_tags.clone()).await.expect("set_tags");
    for node in [&a, &b, &c] {
        assert!(
            eventually(CONVERGE, || node.members().iter().any(|m| m.name == "b"
                && m.tags == new_tags
                && m.status == MemberStatus::Alive))
            .await,
            "tags did not propagate: {:?}",
            node.members()
        );
        assert_eq!(node.members().len(), 3, "rename must not duplicate b");
    }
    assert!(watch_a.has_changed().unwrap(), "subscribers are notified");

    // Tags too large for a gossip packet are refused with a clear error.
    let huge = tags(&[("blob", &"x".repeat(MAX_IDENTITY_BYTES))]);
    let err = b.set_tags(huge).await.unwrap_err();
    assert!(matches!(err, SetTagsError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn graceful_leave_shows_left() {
    let [a, b, c] = three_node_cluster(None).await;
    c.leave().await;
    assert_eq!(status(&c, "c"), Some(MemberStatus::Left));
    for node in [&a, &b] {
        assert!(
            eventually(CONVERGE, || status(node, "c") == Some(MemberStatus::Left)).await,
            "c not shown as left: {}",
            describe(node)
        );
    }
    // Still Left (not flipped to Failed) after several probe periods of each survivor.
    let rounds = |n: &Membership| n.stats().probe_rounds;
    let (a0, b0) = (rounds(&a), rounds(&b));
    assert!(
        eventually(CONVERGE, || rounds(&a) >= a0 + 3 && rounds(&b) >= b0 + 3).await,
        "no probe rounds: {:?} {:?}",
        a.stats(),
        b.stats()
    );
    assert_eq!(status(&a, "c"), Some(MemberStatus::Left));
    assert_eq!(status(&b, "c"), Some(MemberStatus::Left));
    assert!(c.join(&[a.local_addr()], JOIN_TIMEOUT).await.is_err());
}

#[tokio::test]
async fn node_stopped_without_leave_shows_failed() {
    let [a, b, c] = three_node_cluster(None).await;
    let started = Instant::now();
    c.shutdown().await;
    for node in [&a, &b] {
        assert!(
            eventually(CONVERGE, || status(node, "c") == Some(MemberStatus::Failed)).await,
            "c not shown as failed: {}",
            describe(node)
        );
    }
    assert!(started.elapsed() < CONVERGE);
    assert_eq!(status(&a, "b"), Some(MemberStatus::Alive));
}

#[tokio::test]
async fn dropping_every_handle_stops_the_node() {
    let a = start("a", None).await;
    let b = start("b", None).await;
    assert_eq!(b.join(&[a.local_addr()], JOIN_TIMEOUT).await, Ok(1));
    assert!(eventually(CONVERGE, || status(&a, "b") == Some(MemberStatus::Alive)).await);
    drop(b);
    assert!(
        eventually(CONVERGE, || status(&a, "b") == Some(MemberStatus::Failed)).await,
        "{}",
        describe(&a)
    );
}

#[tokio::test]
async fn node_with_wrong_key_cannot_join() {
    let a = start("a", Some(key(16, 1))).await;
    let b = start("b", Some(key(16, 1))).await;
    assert_eq!(b.join(&[a.local_addr()], JOIN_TIMEOUT).await, Ok(1));

    let refused_before = a.stats().decrypt_failures;
    let intruder = start("intruder", Some(key(16, 2))).await;
    let began = Instant::now();
    let answered = intruder
        .join(&[a.local_addr()], Duration::from_millis(1200))
        .await;
    assert_eq!(answered, Ok(0));
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "join respects timeout"
    );

    let plaintext = start("plain", None).await;
    assert_eq!(
        plaintext
            .join(&[a.local_addr()], Duration::from_millis(600))
            .await,
        Ok(0)
    );

    // Both announces reached `a` and were refused (one wrong key, one in the clear): the
    // membership check below comes after their refusal, not after a guessed pause.
    assert!(
        eventually(CONVERGE, || a.stats().decrypt_failures
            >= refused_before + 2)
        .await,
        "{}",
        describe(&a)
    );
    for node in [&a, &b] {
        assert!(
            node.members()
                .iter()
                .all(|m| m.name != "intruder" && m.name != "plain"),
            "{}",
            describe(node)
        );
    }
    assert_eq!(intruder.members().len(), 1);
}

#[tokio::test]
async fn sixteen_twentyfour_and_thirtytwo_byte_keys_work() {
    for len in [16, 24, 32] {
        let a = start("a", Some(key(len, len as u8))).await;
        let b = start("b", Some(key(len, len as u8))).await;
        assert_eq!(
            b.join(&[a.local_addr()], JOIN_TIMEOUT).await,
            Ok(1),
            "{len}-byte key"
        );
        for node in [&a, &b] {
            assert!(
                eventually(CONVERGE, || node.members().len() == 2
                    && node
                        .members()
                        .iter()
                        .all(|m| m.status == MemberStatus::Alive))
                .await,
                "{len}-byte key: {}",
                describe(node)
            );
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn garbage_datagrams_do_not_crash_a_node() {
    for keyring in [None, Some(key(32, 9))] {
        let a = start("a", keyring.clone()).await;
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut garbage: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![1],
            vec![0, 0, 0, 0],
            vec![0xff; 64],
            vec![1; 29],
            vec![7; 3000],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        ];
        for n in 0..64u32 {
            // Deterministic pseudo-random bytes behind each valid version byte.
            let body: Vec<u8> = (0..(n * 13 % 900))
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(n) >> 7) as u8)
                .collect();
            garbage.push([&[(n % 2) as u8][..], &body].concat());
        }
        for datagram in &garbage {
            sender.send_to(datagram, a.local_addr()).await.unwrap();
        }
        sleep(Duration::from_millis(200)).await;
        let stats = a.stats();
        assert!(stats.malformed + stats.decrypt_failures > 0, "{stats:?}");

        // Still fully functional.
        let b = start("b", keyring).await;
        assert_eq!(b.join(&[a.local_addr()], JOIN_TIMEOUT).await, Ok(1));
        assert!(eventually(CONVERGE, || status(&a, "b") == Some(MemberStatus::Alive)).await);
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn join_to_nobody_returns_zero_within_timeout() {
    let a = start("a", None).await;
    // A bound-then-closed socket: nothing listens there any more.
    let dead: SocketAddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let began = Instant::now();
    assert_eq!(
        a.join(&[dead, a.local_addr()], Duration::from_millis(700))
            .await,
        Ok(0)
    );
    assert!(began.elapsed() < Duration::from_secs(2));
    assert_eq!(a.join(&[], JOIN_TIMEOUT).await, Ok(0));
}

#[tokio::test]
async fn start_rejects_unusable_configs() {
    let mut too_big = config("big", None);
    too_big.tags = tags(&[("blob", &"y".repeat(MAX_IDENTITY_BYTES))]);
    let err = Membership::start(too_big).await.unwrap_err();
    assert!(matches!(err, StartError::IdentityTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("fewer / shorter tags"), "{err}");

    let unspecified = Config::new("x", "0.0.0.0:0".parse().unwrap());
    let err = Membership::start(unspecified).await.unwrap_err();
    assert!(matches!(err, StartError::Advertise(_)), "{err}");

    let err = Membership::start(config("", None)).await.unwrap_err();
    assert!(matches!(err, StartError::EmptyName), "{err}");
}

/// Collects formatted log lines so a test can assert on what an operator sees.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

// current_thread runtime: the membership task is polled on this thread, so the
// thread-local default subscriber sees its events.
#[tokio::test(flavor = "current_thread")]
async fn wrong_key_is_logged_once_per_peer_with_an_actionable_message() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let a = start("a", Some(key(16, 1))).await;
    let intruder = start("intruder", Some(key(16, 2))).await;
    // Several announces (join retries every 500 ms) from the same address.
    assert_eq!(
        intruder
            .join(&[a.local_addr()], Duration::from_millis(1200))
            .await,
        Ok(0)
    );
    assert!(a.stats().decrypt_failures >= 2, "{:?}", a.stats());
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let expected = format!(
        "gossip from {} could not be decrypted: check that every node uses the same --encrypt key",
        intruder.local_addr()
    );
    assert_eq!(text.matches(&expected).count(), 1, "logs:\n{text}");
    assert!(text.contains("WARN"), "{text}");
}

#[tokio::test]
async fn restarted_node_replaces_its_failed_identity() {
    let [a, b, c] = three_node_cluster(None).await;
    let c_addr = c.local_addr();
    c.shutdown().await;
    assert!(
        eventually(CONVERGE, || status(&a, "c") == Some(MemberStatus::Failed)).await,
        "{}",
        describe(&a)
    );
    // Same name, same address, new process: its clock-seeded (here: larger) bump wins.
    let mut cfg = config("c", None);
    cfg.incarnation = 1_000_000;
    cfg.bind = c_addr;
    cfg.tags = tags(&[("role", "dkron"), ("node", "c"), ("restarted", "yes")]);
    let c2 = Membership::start(cfg).await.expect("rebind the same port");
    assert_eq!(c2.join(&[b.local_addr()], JOIN_TIMEOUT).await, Ok(1));
    for node in [&a, &b] {
        assert!(
            eventually(CONVERGE, || node.members().iter().any(|m| m.name == "c"
                && m.status == MemberStatus::Alive
                && m.tags.get("restarted").is_some_and(|v| v == "yes")))
            .await,
            "{}",
            describe(node)
        );
        assert_eq!(node.members().len(), 3);
    }
}

#[tokio::test]
async fn mutated_real_packets_do_not_crash_a_node() {
    let a = start("a", None).await;
    let b = start("b", None).await;
    // Capture a genuine Announce datagram from b by letting it join a plain socket.
    let tap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tap_addr = tap.local_addr().unwrap();
    let b2 = b.clone();
    let joining =
        tokio::spawn(async move { b2.join(&[tap_addr], Duration::from_millis(300)).await });
    let mut buf = vec![0u8; 2048];
    let (len, _) = tokio::time::timeout(Duration::from_secs(2), tap.recv_from(&mut buf))
        .await
        .expect("b announces")
        .unwrap();
    let genuine = buf[..len].to_vec();
    assert_eq!(joining.await.unwrap(), Ok(0));

    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        // xorshift: deterministic, no extra dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..300 {
        let mut packet = genuine.clone();
        match i % 3 {
            0 => {
                let at = 1 + (next() as usize) % (packet.len() - 1);
                packet[at] ^= (next() as u8) | 1;
            }
            1 => packet.truncate(1 + (next() as usize) % (packet.len() - 1)),
            _ => packet.extend((0..(next() % 40)).map(|_| next() as u8)),
        }
        tap.send_to(&packet, a.local_addr()).await.unwrap();
    }
    sleep(Duration::from_millis(200)).await;

    // Still fully functional.
    assert_eq!(b.join(&[a.local_addr()], JOIN_TIMEOUT).await, Ok(1));
    assert!(eventually(CONVERGE, || status(&a, "b") == Some(MemberStatus::Alive)).await);
}
