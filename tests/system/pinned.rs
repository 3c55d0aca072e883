//! [`Pinned`]: one keep-alive HTTP/1.1 connection to the shared port that is known
//! to be served by a given instance.
//!
//! Every instance accepts on the same listening socket, so a client cannot choose
//! its instance; but `/stats` on the public port names the worker that answers
//! (`worker_id`). [`Pinned::to_instance`] opens connections until one is accepted
//! by the wanted instance and keeps that one; requests sent on it go to that
//! worker for the connection's life. Plain `std::net` and a minimal HTTP/1.1
//! reader (`Content-Length` bodies only — what the worker sends), so it works
//! from any thread without a runtime.
//!
//! Used to reach one instance's `/debug/…` test hooks when its admin socket does
//! not serve them, and to hold a connection open on a worker that is about to be
//! frozen (what its clients see).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An open connection served by one instance.
pub struct Pinned {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    pub instance: String,
    /// Connections opened until one landed on `instance` (this one included).
    pub attempts: u32,
    /// `pid` reported by the instance's `/stats` (its PID in its own namespace).
    pub pid: u64,
}

/// What came back for one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The response's header lines, as received.
    pub headers: Vec<String>,
    pub body: String,
    pub elapsed: Duration,
}

impl Pinned {
    /// Opens connections to `127.0.0.1:port` (each asking `GET /stats`) until one
    /// is served by `instance`; at most `max_attempts` connections.
    pub fn to_instance(port: u16, instance: &str, max_attempts: u32) -> Result<Pinned, String> {
        let mut seen = Vec::new();
        for attempt in 1..=max_attempts {
            let mut conn = Pinned::connect(port)?;
            conn.attempts = attempt;
            let answer = conn.request("GET", "/stats", None)?;
            let stats: serde_json::Value = serde_json::from_str(&answer.body)
                .map_err(|e| format!("/stats on the shared port: {e}: {}", answer.body))?;
            let id = stats["worker_id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| stats["worker_id"].to_string());
            if id == instance {
                conn.instance = id;
                conn.pid = stats["pid"].as_u64().unwrap_or(0);
                return Ok(conn);
            }
            seen.push(id);
        }
        Err(format!(
            "no connection out of {max_attempts} landed on instance {instance} (served by: {seen:?})"
        ))
    }

    /// A connection to `127.0.0.1:port` on which nothing was sent yet: no instance
    /// known (`instance` empty) until a request is answered.
    pub fn connect(port: u16) -> Result<Pinned, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(Pinned {
            reader,
            stream,
            instance: String::new(),
            attempts: 1,
            pid: 0,
        })
    }

    /// Changes how long a request waits for its answer.
    pub fn set_timeout(&self, within: Duration) {
        let _ = self.stream.set_read_timeout(Some(within));
    }

    /// Sends one request (optionally with a JSON body) and reads its answer.
    /// `Err` on a transport failure (closed, reset, timeout), with how long it took.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> Result<Answer, String> {
        let started = Instant::now();
        let body = json.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        self.stream
            .write_all(head.as_bytes())
            .and_then(|()| self.stream.write_all(body.as_bytes()))
            .map_err(|e| {
                format!(
                    "{method} {path}: write failed after {:?}: {e}",
                    started.elapsed()
                )
            })?;
        let fail = |what: String| format!("{method} {path}: {what} after {:?}", started.elapsed());
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => return Err(fail("connection closed before an answer".into())),
            Ok(_) => {}
            Err(e) => return Err(fail(format!("read failed ({:?}: {e})", e.kind()))),
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            match self.reader.read_line(&mut header) {
                Ok(0) => return Err(fail("connection closed in the headers".into())),
                Ok(_) => {}
                Err(e) => return Err(fail(format!("read failed in the headers: {e}"))),
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            headers.push(header.to_string());
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v
                        .trim()
                        .parse()
                        .map_err(|_| fail(format!("bad {header:?}")))?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| fail(format!("body: {e}")))?;
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            elapsed: started.elapsed(),
        })
    }
}
