//! Loading TLS files (every key type, every error's message), the TLS settings'
//! rules, and which listeners are TLS. Certificates are made here with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};

use super::*;
use crate::config::{tests::env, Config, ServeFlags};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A `localhost` certificate of `key`, signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, key: &KeyPair) -> (String, String) {
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn key_of(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).unwrap()
}

fn rsa_key() -> KeyPair {
    let pem = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/rsa2048-test-only.key"),
    )
    .unwrap();
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn config(&self, cert: &str, key: &str) -> TlsConfig {
        TlsConfig {
            cert_file: Some(self.write("cert.pem", cert)),
            key_file: Some(self.write("key.pem", key)),
            ..TlsConfig::default()
        }
    }
}

#[test]
fn loads_ecdsa_ed25519_and_rsa_keys_with_a_chain_and_offers_h2() {
    let ca = ca("test CA");
    for (name, key) in [
        ("ECDSA P-256", key_of(&rcgen::PKCS_ECDSA_P256_SHA256)),
        ("ECDSA P-384", key_of(&rcgen::PKCS_ECDSA_P384_SHA384)),
        ("Ed25519", key_of(&rcgen::PKCS_ED25519)),
        ("RSA", rsa_key()),
    ] {
        let files = Files::new();
        let (cert, key) = leaf(&ca, &key);
        // The chain: the server's certificate, then its CA.
        let cfg = files.config(&format!("{cert}{}", ca.pem()), &key);
        let config = server_config(&cfg).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}

#[test]
fn a_missing_file_names_the_setting_the_path_and_the_permissions() {
    let files = Files::new();
    let cfg = TlsConfig {
        cert_file: Some(files.dir.path().join("nope.pem")),
        key_file: Some(files.write("key.pem", "")),
        ..TlsConfig::default()
    };
    let err = server_config(&cfg).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Read {
                var: "TLS_CERT_FILE",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("TLS_CERT_FILE="), "{text}");
    assert!(text.contains("nope.pem"), "{text}");
    assert!(text.contains("No such file"), "{text}");
    assert!(text.contains("readable by the user"), "{text}");
    assert_eq!(err.file(), cfg.cert_file.as_deref());
}

#[test]
fn garbage_broken_pem_and_swapped_files_say_what_is_wrong() {
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, &key_of(&rcgen::PKCS_ECDSA_P256_SHA256));
    let files = Files::new();

    let err = server_config(&files.config("not a certificate\n", &key)).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Empty {
                var: "TLS_CERT_FILE",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("holds no certificate"), "{err}");

    let truncated = &cert[..cert.len() / 2];
    let err = server_config(&files.config(truncated, &key)).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Pem {
                var: "TLS_CERT_FILE",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is not valid PEM"), "{err}");

    // The certificate given as the key (files swapped).
    let err = server_config(&files.config(&cert, &cert)).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Empty {
                var: "TLS_KEY_FILE",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("holds no private key"), "{err}");
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let ca = ca("test CA");
    let (cert, _) = leaf(&ca, &key_of(&rcgen::PKCS_ECDSA_P256_SHA256));
    let other = key_of(&rcgen::PKCS_ECDSA_P256_SHA256).serialize_pem();
    let files = Files::new();
    let err = server_config(&files.config(&cert, &other)).unwrap_err();
    assert!(matches!(err, TlsError::KeyRejected { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("key.pem") && text.contains("cert.pem"),
        "{text}"
    );
    assert!(
        text.contains("private key of the first certificate"),
        "{text}"
    );
}

#[test]
fn the_client_ca_file_is_checked() {
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, &key_of(&rcgen::PKCS_ECDSA_P256_SHA256));
    let files = Files::new();
    let mut cfg = files.config(&cert, &key);
    cfg.client_ca_file = Some(files.write("clients.pem", &ca.pem()));
    server_config(&cfg).unwrap();

    cfg.client_ca_file = Some(files.write("clients.pem", "garbage"));
    let err = server_config(&cfg).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Empty {
                var: "TLS_CLIENT_CA_FILE",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("clients.pem"), "{err}");
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, String> {
    Config::load(&ServeFlags::default(), &env(pairs)).map_err(|e| e.to_string())
}

#[test]
fn settings_that_only_go_together_are_refused_alone() {
    let cfg = load(&[]).unwrap();
    assert!(!cfg.tls.enabled());

    let err = load(&[("TLS_CERT_FILE", "/etc/zero-logs/tls/cert.pem")]).unwrap_err();
    assert!(err.starts_with("invalid TLS_CERT_FILE="), "{err}");
    assert!(err.contains("needs TLS_KEY_FILE"), "{err}");

    let err = load(&[("TLS_KEY_FILE", "/k.pem")]).unwrap_err();
    assert!(err.starts_with("invalid TLS_KEY_FILE="), "{err}");

    let err = load(&[("TLS_CLIENT_CA_FILE", "/ca.pem")]).unwrap_err();
    assert!(err.starts_with("invalid TLS_CLIENT_CA_FILE="), "{err}");

    let err = load(&[("TLS_LISTEN_ADDRS", "127.0.0.1:4443")]).unwrap_err();
    assert!(err.starts_with("invalid TLS_LISTEN_ADDRS="), "{err}");

    let err = load(&[("TLS_LISTEN_ADDRS", "4443")]).unwrap_err();
    assert!(err.contains("expected IP:PORT"), "{err}");

    let cfg = load(&[
        ("TLS_CERT_FILE", "/c.pem"),
        ("TLS_KEY_FILE", "/k.pem"),
        ("TLS_LISTEN_ADDRS", "127.0.0.1:4443, [::]:4444"),
    ])
    .unwrap();
    assert!(cfg.tls.enabled());
    assert_eq!(cfg.tls.listen_addrs.len(), 2);
    // The worker binds both kinds when it binds its own sockets.
    let bound = bind_addrs(&cfg.listen.addrs, &cfg.tls);
    assert_eq!(
        bound,
        ["127.0.0.1:3000", "127.0.0.1:4443", "[::]:4444"]
            .map(|a| a.parse::<SocketAddr>().unwrap())
            .to_vec()
    );
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn plan_picks_the_tls_listeners_by_address() {
    let on = |listen: &[&str]| TlsConfig {
        cert_file: Some("/c".into()),
        key_file: Some("/k".into()),
        client_ca_file: None,
        listen_addrs: addrs(listen),
    };
    let locals = addrs(&["127.0.0.1:3000", "[::]:4443", "10.0.0.1:5000"]);
    assert_eq!(plan(&TlsConfig::default(), &locals).unwrap(), [false; 3]);
    assert_eq!(plan(&on(&[]), &locals).unwrap(), [true; 3]);
    // systemd's `ListenStream=4443` is [::]:4443: any address of that port matches it.
    assert_eq!(
        plan(&on(&["0.0.0.0:4443"]), &locals).unwrap(),
        [false, true, false]
    );
    assert_eq!(
        plan(&on(&["[::]:5000"]), &locals).unwrap(),
        [false, false, true]
    );
    assert_eq!(
        plan(&on(&["127.0.0.1:3000", "10.0.0.1:5000"]), &locals).unwrap(),
        [true, false, true]
    );
    // Another IP on the same port is not the same socket.
    let err = plan(&on(&["10.0.0.2:5000"]), &locals).unwrap_err();
    assert!(matches!(err, TlsError::NoSuchListener { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("10.0.0.2:5000") && text.contains("ListenStream="),
        "{text}"
    );
}

/// A client that connects and never sends its hello: the handshake gives up at the
/// timeout, or sooner (after the linger) once the connection must close; both counted.
#[tokio::test]
async fn a_silent_client_is_given_up_at_the_timeout_or_the_drain() {
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, &key_of(&rcgen::PKCS_ECDSA_P256_SHA256));
    let files = Files::new();
    let stats = Arc::new(Stats::default());
    let acceptor = TlsAcceptor::load(&files.config(&cert, &key), stats.clone())
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let _silent = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let started = tokio::time::Instant::now();
    let open = CancellationToken::new();
    let linger = Duration::from_millis(50);
    assert!(acceptor.handshake(stream, &open, linger).await.is_none());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(stats.tls_handshake_failures.load(Ordering::Relaxed), 1);

    // Closing: the handshake gets the linger, not the rest of the timeout.
    let acceptor = acceptor.with_handshake_timeout(Duration::from_secs(30));
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let closing = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let handshake = {
        let closing = closing.clone();
        tokio::spawn(async move { acceptor.handshake(stream, &closing, linger).await.is_none() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    closing.cancel();
    assert!(handshake.await.unwrap());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(stats.tls_handshake_failures.load(Ordering::Relaxed), 2);
}
