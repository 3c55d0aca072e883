//! The systemd notify protocol as the worker speaks it, checked on a private
//! `NOTIFY_SOCKET`: READY/STATUS at start, WATCHDOG pings that stop when the
//! flush loop stalls, and a graceful exit 0 when RSS passes
//! `WORKER_MEMORY_LIMIT`. (Whole-system behaviour with a real systemd is in
//! the container tests.) Uses the `test-hooks` endpoints, which test builds
//! have and release builds do not.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use zero_logs::testing::ClickHouseServer;

/// Collects datagrams until `until` is seen or `within` elapses; returns them with arrival times.
fn collect(sock: &UnixDatagram, within: Duration, until: &str) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.contains(until);
            out.push((Instant::now(), msg));
            if done {
                break;
            }
        }
    }
    out
}

fn pings(msgs: &[(Instant, String)]) -> Vec<Instant> {
    msgs.iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_memory_limit_restart() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut worker = Worker::start(
        &ch,
        &db,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
            ("WORKER_MEMORY_LIMIT", "300MiB"),
        ],
    )
    .await;

    // READY once serving, a STATUS line, then regular pings (every 250 ms for a 1 s watchdog).
    let msgs = collect(&sock, Duration::from_secs(3), "never");
    let all: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
    assert!(all.iter().any(|m| m.contains("READY=1")), "{all:?}");
    assert!(all.iter().any(|m| m.contains("STATUS=serving")), "{all:?}");
    assert!(
        pings(&msgs).len() >= 5,
        "too few WATCHDOG=1 in 3 s: {all:?}"
    );

    // A stalled flush loop: pings stop for about the stall, then resume.
    let client = client();
    let (status, _, _) = post(
        &client,
        &format!("{}/debug/stall-flusher?ms=2500", worker.base),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "test hooks must be compiled into test builds");
    let stalled_at = Instant::now();
    let msgs = collect(&sock, Duration::from_secs(5), "never");
    let times = pings(&msgs);
    let longest_gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain(times.first().map(|t| *t - stalled_at))
        .max()
        .unwrap_or_default();
    assert!(
        longest_gap >= Duration::from_millis(1500),
        "pings went on during the stall: gap {longest_gap:?}"
    );
    assert!(
        times
            .last()
            .is_some_and(|t| *t > stalled_at + Duration::from_millis(2500)),
        "pings did not resume"
    );

    // Over the memory limit: drain, STOPPING=1, exit 0 on its own.
    let (status, _, _) = post(
        &client,
        &format!("{}/debug/grow-memory?mb=400", worker.base),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let msgs = collect(&sock, Duration::from_secs(10), "STOPPING=1");
    let all: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
    assert!(all.iter().any(|m| m.contains("STOPPING=1")), "{all:?}");
    let mut child = worker.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not exit after passing its memory limit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(worker);
}
