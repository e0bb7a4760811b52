//! Real TLS handshakes in memory between identities of the same key, of another key, without
//! a certificate, with an expired one, and across a key rotation.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::clock::ManualClock;

const KEY_A: &[u8] = b"0123456789abcdef";
const KEY_B: &[u8] = b"fedcba9876543210";

fn node(keys: &[&[u8]], name: &str) -> ClusterTls {
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    ClusterTls::new(&keys, name, crate::clock::system()).unwrap()
}

/// One handshake in memory: (the server accepted the client, the client accepted the
/// server). In TLS 1.3 a client learns that its certificate was refused only afterwards, so
/// the two can differ. The address dialled does not matter: members are checked against the
/// cluster's name.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: rustls::ClientConfig,
) -> (bool, bool) {
    let (client_io, server_io) = tokio::io::duplex(64 << 10);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(Arc::new(client));
    let dialled = ServerName::try_from("10.0.0.7").unwrap();
    let (accepted, connected) = tokio::join!(
        acceptor.accept(server_io),
        connector.connect(dialled, client_io)
    );
    (accepted.is_ok(), connected.is_ok())
}

async fn server_accepts(server: Arc<rustls::ServerConfig>, client: rustls::ClientConfig) -> bool {
    handshake(server, client).await.0
}

async fn client_accepts(server: Arc<rustls::ServerConfig>, client: rustls::ClientConfig) -> bool {
    handshake(server, client).await.1
}

#[test]
fn every_holder_of_a_key_derives_the_same_ca_and_other_keys_another() {
    let a1 = node(&[KEY_A], "dkron1");
    let a2 = node(&[KEY_A], "dkron2");
    let b = node(&[KEY_B], "dkron3");
    let ca = |t: &ClusterTls| match &t.source {
        Source::Derived { cas } => cas[0].certificate().clone(),
        Source::Files { .. } => unreachable!("derived"),
    };
    assert_eq!(ca(&a1), ca(&a2));
    assert_ne!(ca(&a1), ca(&b));
}

#[tokio::test]
async fn members_of_one_key_talk_both_ways() {
    let (a, b) = (node(&[KEY_A], "dkron1"), node(&[KEY_A], "dkron2"));
    assert!(server_accepts(b.server_config().unwrap(), a.client_config().unwrap()).await);
    assert!(client_accepts(b.server_config().unwrap(), a.client_config().unwrap()).await);
    assert!(server_accepts(a.server_config().unwrap(), b.client_config().unwrap()).await);
}

#[tokio::test]
async fn a_node_of_another_key_is_refused_on_both_ends() {
    let (ours, theirs) = (node(&[KEY_A], "dkron1"), node(&[KEY_B], "intruder"));
    assert!(
        !server_accepts(
            ours.server_config().unwrap(),
            theirs.client_config().unwrap()
        )
        .await
    );
    assert!(
        !client_accepts(
            theirs.server_config().unwrap(),
            ours.client_config().unwrap()
        )
        .await
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ours = node(&[KEY_A], "dkron1");
    let verifier = verify::ClusterServerVerifier::new(
        ours.roots.clone(),
        ours.provider.clone(),
        Some(CLUSTER_NAME),
    )
    .unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(ours.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    assert!(client_accepts(ours.server_config().unwrap(), anonymous.clone()).await);
    assert!(!server_accepts(ours.server_config().unwrap(), anonymous).await);
}

#[tokio::test]
async fn an_expired_leaf_is_refused_and_a_renewed_one_is_not() {
    let server = node(&[KEY_A], "dkron1");
    let clock = ManualClock::starting_at("2026-01-01T00:00:00Z".parse().unwrap());
    let stale = ClusterTls::new(&[KEY_A.to_vec()], "dkron2", clock.clone()).unwrap();
    // Minted at 2026-01-01 for a day: long expired by the real clock.
    assert!(
        !server_accepts(
            server.server_config().unwrap(),
            stale.client_config().unwrap()
        )
        .await
    );
    clock.set(crate::clock::wall());
    stale.renew().unwrap();
    assert!(
        server_accepts(
            server.server_config().unwrap(),
            stale.client_config().unwrap()
        )
        .await
    );
}

/// A key rotation, as Serf's keyring does it: install the new key everywhere, switch the key
/// nodes sign with, remove the old one. Every step keeps the cluster talking.
#[tokio::test]
async fn while_a_key_rotates_every_step_keeps_the_cluster_talking() {
    async fn talk(a: &ClusterTls, b: &ClusterTls) -> bool {
        server_accepts(a.server_config().unwrap(), b.client_config().unwrap()).await
            && server_accepts(b.server_config().unwrap(), a.client_config().unwrap()).await
    }
    let old = node(&[KEY_A], "not yet");
    let installed = node(&[KEY_A, KEY_B], "installed");
    let switched = node(&[KEY_B, KEY_A], "switched");
    let done = node(&[KEY_B], "done");
    assert!(talk(&old, &installed).await, "installing the new key");
    assert!(
        talk(&installed, &switched).await,
        "switching the signing key"
    );
    assert!(talk(&switched, &done).await, "removing the old key");
    // Skipping the installation everywhere first breaks it, as it would in Serf.
    assert!(!talk(&old, &switched).await);
}

#[test]
fn a_key_that_is_not_base64_is_explained_and_none_means_no_tls() {
    let err = ClusterTls::from_encrypt_key("not base64!", "n", crate::clock::system()).unwrap_err();
    assert!(format!("{err:#}").contains("dkron keygen"), "{err:#}");
    assert!(
        ClusterTls::from_encrypt_key("", "n", crate::clock::system())
            .unwrap()
            .is_none()
    );
}
