//! TLS end to end: a certificate authority and a server certificate made in
//! the test, a TLS server on loopback, a client that trusts only that CA.

use std::time::Duration;

use station_core::client::{Config as ClientConfig, Outcome, Verdict};
use station_core::server::Config as SessionConfig;
use station_net::client::{ChannelOptions, Endpoints};
use station_net::store::MemoryStore;
use station_net::ServerConfig;

mod common;

use common::{Pki, TestServer};

async fn start_tls(pki: &Pki) -> TestServer {
    let cfg = ServerConfig {
        session: SessionConfig::new(Duration::from_millis(5), Duration::from_secs(5)),
        ..ServerConfig::default()
    };
    TestServer::with_tls(cfg, MemoryStore::default(), pki).await
}

/// A session of 25 numbers against `endpoint`, giving up after 2 s
/// without progress.
async fn session(endpoint: String, opts: ChannelOptions) -> Outcome {
    let endpoints = Endpoints::tcp(&[endpoint], &opts).unwrap();
    let cfg = ClientConfig {
        give_up_without_progress: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    common::run_client(&endpoints, common::client(cfg, 25, 9)).await
}

#[tokio::test]
async fn tls_client_trusting_the_ca_verifies() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;
    let outcome = session(server.url(), server.channel_options()).await;
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
}

#[tokio::test]
async fn clients_without_the_right_trust_are_refused() {
    let pki = Pki::new();
    let server = start_tls(&pki).await;
    // Plaintext against a TLS server.
    let plain = session(
        format!("http://127.0.0.1:{}", server.addr.port()),
        ChannelOptions::default(),
    )
    .await;
    assert!(
        matches!(plain.verdict, Verdict::Unreachable(_)),
        "{plain:?}"
    );
    // TLS trusting another authority.
    let opts = ChannelOptions {
        tls_ca: Some(Pki::new().ca_pem.into_bytes()),
        ..ChannelOptions::default()
    };
    let wrong = session(server.url(), opts).await;
    assert!(
        matches!(wrong.verdict, Verdict::Unreachable(_)),
        "{wrong:?}"
    );
    // https without any CA is a usage error, caught before connecting.
    let err = Endpoints::tcp(&["https://localhost:1".into()], &ChannelOptions::default());
    assert!(err.is_err());
}
