//! Connection handling: keep-alive connections are closed gracefully at
//! `CONNECTION_MAX_AGE` (so clients spread over instances again), and an
//! idle keep-alive connection does not hold up a drain.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use zero_logs::testing::ClickHouseServer;

const REQUEST: &str = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

/// Reads one response head + small body; returns the bytes read.
fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// True when the server closed the connection (EOF) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_close_at_max_age_and_on_drain() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let mut worker = Worker::start(&ch, &db, &[("CONNECTION_MAX_AGE", "1000")]).await;
    let addr = format!("127.0.0.1:{}", worker.port);

    let mut old = TcpStream::connect(&addr).unwrap();
    old.write_all(REQUEST.as_bytes()).unwrap();
    assert!(read_response(&mut old).starts_with("HTTP/1.1 200"));
    // Still open well before the age, closed by the server after it.
    assert!(!closed_within(&mut old, Duration::from_millis(300)));
    let started = Instant::now();
    assert!(
        closed_within(&mut old, Duration::from_secs(3)),
        "not closed at max age"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // An idle keep-alive connection is closed at once by a drain; the worker exits 0 quickly.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(REQUEST.as_bytes()).unwrap();
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let status = worker.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drain waited for an idle connection: {:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut idle, Duration::from_secs(1)));
}
