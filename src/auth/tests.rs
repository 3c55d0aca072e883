use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering::Relaxed;

use super::keys::{digest, parse};
use super::*;

fn defaults() -> KeyLimits {
    KeyLimits {
        records_per_sec: 0,
        bytes_per_sec: 0,
        spool_share_percent: 50,
    }
}

fn cfg(mode: AuthMode, keys_file: PathBuf) -> AuthConfig {
    AuthConfig {
        mode,
        keys_file,
        defaults: defaults(),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn non_loopback_without_keys_is_refused_unless_auth_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("keys");
    let loopback = [addr("127.0.0.1:3000"), addr("[::1]:3000")];
    let exposed = [addr("127.0.0.1:3000"), addr("0.0.0.0:3000")];
    assert!(matches!(
        decide(&cfg(AuthMode::Auto, missing.clone()), &loopback),
        Ok(Decision::Open)
    ));
    let err = decide(&cfg(AuthMode::Auto, missing.clone()), &exposed).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("0.0.0.0:3000") && !text.contains("127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("INGEST_AUTH=none") && text.contains("add keys"),
        "{text}"
    );
    assert!(matches!(
        decide(&cfg(AuthMode::None, missing.clone()), &exposed),
        Ok(Decision::Open)
    ));
    // `keys` needs the file even on loopback.
    assert!(matches!(
        decide(&cfg(AuthMode::Keys, missing.clone()), &loopback),
        Err(AuthError::KeyFile(KeyFileError::Io { .. }))
    ));
    // With a good file, auto turns keys on, on any address.
    std::fs::write(&missing, "web 0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o600)).unwrap();
    match decide(&cfg(AuthMode::Auto, missing.clone()), &exposed) {
        Ok(Decision::Keys(keys)) => assert_eq!(keys[0].name, "web"),
        other => panic!("{other:?}"),
    }
    // A world-readable file is refused at start.
    std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = decide(&cfg(AuthMode::Auto, missing), &loopback).unwrap_err();
    assert!(err.to_string().contains("chmod 640"), "{err}");
}

#[test]
fn reloads_keep_the_state_of_keys_that_stay() {
    let first = parse(
        "a 0123456789abcdefA\nb 0123456789abcdefB records_per_sec=1\n",
        &defaults(),
    )
    .unwrap();
    let auth = Auth::new(
        cfg(AuthMode::Keys, PathBuf::new()),
        Decision::Keys(first),
        None,
    );
    let a = Caller(auth.keys().lookup(b"0123456789abcdefA").unwrap().clone());
    a.finish(5, 1, 0, 100);
    let b = auth.keys().lookup(b"0123456789abcdefB").unwrap().clone();
    assert!(auth.admit(&b).is_ok());
    Caller(b.clone()).finish(10, 0, 0, 10);
    assert!(matches!(auth.admit(&b), Err(Refused::Rate(_))));
    // New secret for a, b removed, c added.
    let second = parse("a 0123456789abcdefZ\nc 0123456789abcdefC\n", &defaults()).unwrap();
    auth.install(second);
    let keys = auth.keys();
    assert!(keys.lookup(b"0123456789abcdefA").is_none(), "old secret");
    assert!(keys.lookup(b"0123456789abcdefB").is_none(), "removed key");
    let a2 = keys.lookup(b"0123456789abcdefZ").unwrap();
    assert_eq!(a2.state.counters.records_accepted.load(Relaxed), 5, "kept");
    let report = auth.report();
    assert_eq!(report.keys_loaded, 2);
    let names: Vec<_> = report.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(
        (report.keys[0].requests, report.keys[0].records_rejected),
        (1, 1)
    );
    // What /metrics shows: names, never secrets or digests.
    let mut page = String::new();
    prometheus(&mut page, "3", &report);
    assert!(
        page.contains("zero_logs_key_records_accepted_total{worker_id=\"3\",key=\"a\"} 5\n"),
        "{page}"
    );
    assert!(!page.contains("0123456789abcdef"), "{page}");
    let hex: String = digest(b"0123456789abcdefZ")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!page.contains(&hex[..16]));
}

#[tokio::test]
async fn a_key_over_its_spool_share_is_refused_until_clickhouse_confirms() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_cfg = crate::spool::SpoolConfig {
        max_bytes: 1 << 20,
        segment_bytes: 1 << 18,
        ..crate::spool::SpoolConfig::new(tmp.path(), "1")
    };
    let (spool, _reader) = Spool::open(spool_cfg).await.unwrap();
    let defs = parse(
        "noisy 0123456789abcdefN spool_share=10\nquiet 0123456789abcdefQ\n",
        &defaults(),
    )
    .unwrap();
    let auth = Auth::new(
        cfg(AuthMode::Keys, PathBuf::new()),
        Decision::Keys(defs),
        Some(spool.clone()),
    );
    let keys = auth.keys();
    let noisy = keys.lookup(b"0123456789abcdefN").unwrap().clone();
    let quiet = keys.lookup(b"0123456789abcdefQ").unwrap().clone();
    // 10 % of 1 MiB = 104 800 bytes (rounded down to whole percent units).
    Caller(noisy.clone()).spooled(1, 100_000);
    assert!(auth.admit(&noisy).is_ok());
    Caller(noisy.clone()).spooled(2, 10_000);
    match auth.admit(&noisy) {
        Err(Refused::SpoolShare {
            unsent, percent, ..
        }) => {
            assert_eq!((unsent, percent), (110_000, 10));
        }
        other => panic!("{other:?}"),
    }
    assert!(auth.admit(&quiet).is_ok(), "the other key still gets in");
    spool.shutdown().await;
}

#[test]
fn refusal_lines_are_at_most_one_per_second_and_count_the_rest() {
    let budget = super::guard::LineBudget::default();
    assert_eq!(budget.take(), Some(0));
    // The same second (all but certainly: 100 calls take microseconds).
    let logged = (0..100).filter(|_| budget.take().is_some()).count();
    assert!(logged <= 1, "{logged} lines in one burst");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let unlogged = budget.take().expect("a new second allows a line");
    if logged == 0 {
        assert_eq!(unlogged, 100);
    } else {
        // The burst crossed a second: its line reset the count.
        assert!((1..100).contains(&unlogged), "{unlogged}");
    }
}
