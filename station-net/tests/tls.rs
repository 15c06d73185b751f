//! TLS end to end: a certificate authority and a server certificate made in
//! the test, a TLS server on loopback, a client that trusts only that CA.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use station_core::client::{Client, Config as ClientConfig, Verdict};
use station_core::server::Config as SessionConfig;
use station_core::ClientId;
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints};
use station_net::store::MemoryStore;
use station_net::{serve_tcp, ServerConfig, Station};
use tokio::sync::oneshot;
use tonic::transport::{Identity, ServerTlsConfig};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

async fn start_tls(pki: &Pki) -> (SocketAddr, oneshot::Sender<()>) {
    let cfg = ServerConfig {
        session: SessionConfig::new(Duration::from_millis(5), Duration::from_secs(5)),
        tls: Some(ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert_pem, &pki.key_pem))),
        ..ServerConfig::default()
    };
    let station = Station::new(cfg, MemoryStore::default());
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        serve_tcp(
            station,
            "127.0.0.1:0".parse().unwrap(),
            |a| addr_tx.send(a).unwrap(),
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    (addr_rx.await.unwrap(), stop)
}

async fn client(endpoint: String, opts: ChannelOptions) -> station_core::client::Outcome {
    let endpoints = Endpoints::tcp(&[endpoint], &opts).unwrap();
    let cfg = ClientConfig {
        give_up_without_progress: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let c = Client::new(
        Instant::now(),
        cfg,
        ClientId::from_random_bytes([3; 16]),
        25,
        9,
    )
    .unwrap();
    run(&endpoints, &DriverOptions::default(), c, |_, _| {}).await
}

#[tokio::test]
async fn tls_client_trusting_the_ca_verifies() {
    let pki = pki();
    let (addr, _stop) = start_tls(&pki).await;
    let opts = ChannelOptions {
        tls_ca: Some(pki.ca_pem.clone().into_bytes()),
        ..ChannelOptions::default()
    };
    let outcome = client(format!("https://localhost:{}", addr.port()), opts).await;
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
}

#[tokio::test]
async fn clients_without_the_right_trust_are_refused() {
    let pki = pki();
    let (addr, _stop) = start_tls(&pki).await;
    // Plaintext against a TLS server.
    let plain = client(
        format!("http://127.0.0.1:{}", addr.port()),
        ChannelOptions::default(),
    )
    .await;
    assert!(
        matches!(plain.verdict, Verdict::Unreachable(_)),
        "{plain:?}"
    );
    // TLS trusting another authority.
    let other = pki_other_ca();
    let opts = ChannelOptions {
        tls_ca: Some(other.into_bytes()),
        ..ChannelOptions::default()
    };
    let wrong = client(format!("https://localhost:{}", addr.port()), opts).await;
    assert!(
        matches!(wrong.verdict, Verdict::Unreachable(_)),
        "{wrong:?}"
    );
    // https without any CA is a usage error, caught before connecting.
    let err = Endpoints::tcp(&["https://localhost:1".into()], &ChannelOptions::default());
    assert!(err.is_err());
}

fn pki_other_ca() -> String {
    pki().ca_pem
}
