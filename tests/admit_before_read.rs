//! Admission before the body is read: a request the worker cannot take now is refused
//! (429 with `Retry-After`) from its headers, before its body arrives, and the body
//! is then thrown away without costing the connection; a full spool refuses before
//! validation. Real worker binary, real ClickHouse, requests written byte by byte on
//! raw TCP so that the test decides how much of a body the worker has when it answers.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use zero_logs::testing::ClickHouseServer;

/// The budget of these workers: MAX_BODY_BYTES = MAX_INFLIGHT_BYTES (its least).
const BUDGET: usize = 64 << 10;

/// A JSON array of `n` records tagged `tag`, padded with spaces to `len` bytes when given.
fn records(tag: &str, n: usize, len: Option<usize>) -> Vec<u8> {
    let items: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"service":"adm","message":"{tag} {i}"}}"#))
        .collect();
    let mut body = format!("[{}]", items.join(",")).into_bytes();
    if let Some(len) = len {
        assert!(body.len() <= len, "{} records do not fit {len} bytes", n);
        body.resize(len, b' ');
    }
    body
}

/// One HTTP/1.1 keep-alive connection driven by hand.
struct Conn {
    io: BufReader<TcpStream>,
}

/// A response: status, lower-case header lines, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    async fn open(worker: &Worker) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", worker.port))
            .await
            .expect("connect to the worker");
        stream.set_nodelay(true).unwrap();
        Conn {
            io: BufReader::new(stream),
        }
    }

    /// Request line and headers; `length: None` sends a chunked body.
    async fn head(&mut self, path: &str, content_type: &str, length: Option<usize>) {
        let framing = match length {
            Some(n) => format!("Content-Length: {n}"),
            None => "Transfer-Encoding: chunked".to_string(),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n"
        );
        self.write(head.as_bytes()).await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    async fn chunk(&mut self, bytes: &[u8]) {
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        self.write(&framed).await;
    }

    /// The next response, within `within`.
    async fn answer(&mut self, within: Duration) -> Answer {
        tokio::time::timeout(within, self.read_answer())
            .await
            .expect("the worker answered in time")
    }

    async fn read_answer(&mut self) -> Answer {
        let mut line = String::new();
        self.io.read_line(&mut line).await.expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.io.read_line(&mut line).await.expect("header line");
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let answer = Answer {
            status,
            headers,
            body: String::new(),
        };
        let len: usize = answer
            .header("content-length")
            .expect("a Content-Length in the answer")
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        self.io.read_exact(&mut body).await.expect("answer body");
        Answer {
            body: String::from_utf8_lossy(&body).into_owned(),
            ..answer
        }
    }

    /// Whether the worker has answered nothing yet (waits `for_` to be sure).
    async fn silent(&mut self, for_: Duration) -> bool {
        tokio::time::timeout(for_, self.io.fill_buf())
            .await
            .is_err()
    }
}

async fn bytes_received(worker: &Worker) -> u64 {
    worker.stats().await["bytes_received"]
        .as_u64()
        .expect("bytes_received in /stats")
}

fn accepted(answer: &Answer) -> u64 {
    assert_eq!(answer.status, 202, "{}", answer.body);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    json["accepted"].as_u64().unwrap()
}

fn assert_busy(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 429, "{what}: {}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"), "{what}");
    assert!(
        answer.body.contains("MAX_INFLIGHT_BYTES"),
        "{what}: {}",
        answer.body
    );
}

/// A worker whose in-flight budget and body cap are both [`BUDGET`].
async fn start_with_budget(ch: &ClickHouseServer, db: &str) -> Worker {
    let budget = BUDGET.to_string();
    Worker::start(
        ch,
        db,
        &[("MAX_BODY_BYTES", &budget), ("MAX_INFLIGHT_BYTES", &budget)],
    )
    .await
}

/// One request holds the whole in-flight budget while its body trickles in; others
/// are refused from their headers, before they send their bodies; the refused
/// connections stay usable; everything acknowledged reaches ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_budget_are_refused_before_their_body_is_read() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = start_with_budget(&ch, &db).await;

    // A: the whole budget by its Content-Length; half of its body sent, then it waits.
    let big = records("big", 200, Some(BUDGET));
    let mut a = Conn::open(&worker).await;
    a.head("/api/v1/logs", "application/json", Some(big.len()))
        .await;
    a.write(&big[..BUDGET / 2]).await;
    assert!(
        a.silent(Duration::from_millis(300)).await,
        "A waits for the rest of its body"
    );
    let received_before = bytes_received(&worker).await;

    // B: refused once its headers are in, with 10 of its bytes sent.
    let small = records("small", 5, None);
    let mut b = Conn::open(&worker).await;
    b.head("/api/v1/logs", "application/json", Some(small.len()))
        .await;
    b.write(&small[..10]).await;
    assert_busy(
        &b.answer(Duration::from_secs(5)).await,
        "JSON, Content-Length",
    );

    // C: OTLP/HTTP is admitted the same way.
    let mut c = Conn::open(&worker).await;
    c.head("/v1/logs", "application/x-protobuf", Some(1_000))
        .await;
    c.write(&[0u8; 10]).await;
    let otlp = c.answer(Duration::from_secs(5)).await;
    assert_eq!(otlp.status, 429, "OTLP/HTTP");
    assert_eq!(otlp.header("retry-after"), Some("1"));

    // D: a chunked body (length unknown) is admitted as it arrives: not even its first
    // byte can be covered while A holds everything.
    let mut d = Conn::open(&worker).await;
    d.head("/api/v1/logs", "application/json", None).await;
    d.chunk(&small[..10]).await;
    assert_busy(&d.answer(Duration::from_secs(5)).await, "chunked");
    assert_eq!(
        bytes_received(&worker).await,
        received_before,
        "no refused body was counted as received"
    );

    // A completes and is acknowledged.
    a.write(&big[BUDGET / 2..]).await;
    let mut acknowledged = accepted(&a.answer(Duration::from_secs(10)).await);
    assert_eq!(acknowledged, 200);

    // B sends the rest of the refused body (thrown away), then a new request on the
    // same connection: the refusal cost it nothing.
    b.write(&small[10..]).await;
    let again = records("again", 7, None);
    b.head("/api/v1/logs", "application/json", Some(again.len()))
        .await;
    b.write(&again).await;
    acknowledged += accepted(&b.answer(Duration::from_secs(10)).await);
    // D too, after the end of its chunked body.
    d.chunk(&small[10..]).await;
    d.write(b"0\r\n\r\n").await;
    let chunked = records("chunked", 3, None);
    d.head("/api/v1/logs", "application/json", None).await;
    d.chunk(&chunked[..20]).await;
    d.chunk(&chunked[20..]).await;
    d.write(b"0\r\n\r\n").await;
    acknowledged += accepted(&d.answer(Duration::from_secs(10)).await);
    assert_eq!(acknowledged, 210);

    let stored = wait_rows(&ch, &db, acknowledged, Duration::from_secs(30)).await;
    assert_eq!(stored, acknowledged, "exactly the acknowledged records");
}

/// A chunked body takes its share of the budget as it grows: refused at the piece
/// that the budget left by others cannot cover, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_refused_when_it_outgrows_the_budget_left() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = start_with_budget(&ch, &db).await;

    // A holds 40 KiB of the 64.
    let held = records("held", 100, Some(40 << 10));
    let mut a = Conn::open(&worker).await;
    a.head("/api/v1/logs", "application/json", Some(held.len()))
        .await;
    a.write(&held[..100]).await;
    assert!(a.silent(Duration::from_millis(300)).await);

    // B: 10 KiB fit beside it; 20 KiB more (30 in all) do not.
    let grows = records("grows", 60, Some(30 << 10));
    let mut b = Conn::open(&worker).await;
    b.head("/api/v1/logs", "application/json", None).await;
    b.chunk(&grows[..10 << 10]).await;
    assert!(
        b.silent(Duration::from_millis(500)).await,
        "10 KiB are within the budget left: B is still being read"
    );
    b.chunk(&grows[10 << 10..]).await;
    assert_busy(&b.answer(Duration::from_secs(5)).await, "chunked, grown");
    b.write(b"0\r\n\r\n").await;

    a.write(&held[100..]).await;
    let first = accepted(&a.answer(Duration::from_secs(10)).await);
    // With the budget back, the same chunked body goes through.
    b.head("/api/v1/logs", "application/json", None).await;
    b.chunk(&grows[..10 << 10]).await;
    b.chunk(&grows[10 << 10..]).await;
    b.write(b"0\r\n\r\n").await;
    let second = accepted(&b.answer(Duration::from_secs(10)).await);
    assert_eq!((first, second), (100, 60));
    let stored = wait_rows(&ch, &db, 160, Duration::from_secs(30)).await;
    assert_eq!(stored, 160);
}

/// With the spool full, a request is refused from its headers: even an invalid body
/// gets 429 (retry later), not the 400 that validating it would give; with room again,
/// the same body gets its 400. Nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_before_validation() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(
        &ch,
        &db,
        &[
            ("SPOOL_MAX_BYTES", "1MiB"),
            ("SPOOL_SEGMENT_BYTES", "256KiB"),
        ],
    )
    .await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    let valid = records("fill", 50, None);
    // Not JSON; large enough that no spool short of room for a valid batch would
    // take its estimate (half its size) either.
    let mut invalid = vec![b' '; 4 * valid.len()];
    invalid[0] = b'{';
    let invalid_status = |reply: &Reply| (reply.0, String::from_utf8_lossy(&reply.2).into_owned());

    let reply = post(&client, &url, &[], invalid.clone()).await.unwrap();
    assert_eq!(
        invalid_status(&reply).0,
        400,
        "{}",
        invalid_status(&reply).1
    );

    // ClickHouse down: nothing leaves the spool, which fills up.
    ch.stop();
    let mut acknowledged = 0u64;
    let full = loop {
        let reply = post(&client, &url, &[], valid.clone()).await.unwrap();
        match reply.0 {
            202 => acknowledged += 50,
            _ => break invalid_status(&reply),
        }
        assert!(acknowledged < 100_000, "the 1 MiB spool never filled");
    };
    assert_eq!(full.0, 429, "{}", full.1);
    assert!(full.1.contains("spool is full"), "{}", full.1);

    let received_before = bytes_received(&worker).await;
    let (status, headers, body) = post(&client, &url, &[], invalid.clone()).await.unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 429, "refused before validation: {body}");
    assert!(body.contains("spool is full"), "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        bytes_received(&worker).await,
        received_before,
        "the refused body was not read"
    );

    ch.restart().expect("restart ClickHouse");
    let stored = wait_rows(&ch, &db, acknowledged, Duration::from_secs(60)).await;
    assert_eq!(stored, acknowledged, "exactly the acknowledged records");
    // Once the spool has room again, the invalid body is validated (and refused).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = post(&client, &url, &[], invalid.clone()).await.unwrap();
        if reply.0 == 400 {
            break;
        }
        assert_eq!(reply.0, 429, "{}", invalid_status(&reply).1);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool did not make room"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
