//! Request bodies: size caps before and after decompression.
//!
//! A body is capped three times: by `Content-Length` before reading, while
//! collecting, and on the *output* of gzip/zstd, so a decompression bomb costs
//! at most `max_body_bytes` of memory and gets 413, never an OOM.
//!
//! It is read only once admitted (`Ingest::receive`): [`collect`] tells the
//! admission what has arrived, and a body refused before or while it is read is
//! [discarded](discard) without being kept.
//!
//! A body refused as too large is read on and thrown away (up to
//! [`DRAIN_MAX_BYTES`], for at most [`DRAIN_TIME`]) before the 413 goes out: a
//! client still sending it would otherwise find the connection closed under its
//! write and never read the answer (hyper's client reports a broken pipe). A body
//! refused for room (429) is thrown away the same way, but after the answer.
//!
//! An admitted body holds its share of the in-flight budget while it arrives, so it
//! must arrive within [`BODY_READ_TIMEOUT`] (408): a client uploading slowly, or not at
//! all after its headers, cannot keep the worker refusing others.

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::reject::{RejectKind, Rejection};
use crate::validate::Format;

/// How the body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// Content type → record format; anything else is 415.
pub fn format(headers: &HeaderMap) -> Result<Format, Rejection> {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        // curl and many shippers omit it for JSON; JSON is the native format.
        return Ok(Format::Json);
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "text/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl"
        | "application/x-jsonlines" | "application/jsonlines" => Ok(Format::Ndjson),
        _ => Err(Rejection::new(
            RejectKind::UnsupportedMedia,
            format!("unsupported Content-Type {text:?}; send application/json (an array or {{\"logs\":[…]}}) or application/x-ndjson"),
        )),
    }
}

/// `Content-Encoding` → decompressor; anything else is 415.
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, Rejection> {
    let Some(value) = headers.get(axum::http::header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let text = value.to_str().unwrap_or_default();
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "zstd" => Ok(Encoding::Zstd),
        _ => Err(Rejection::new(
            RejectKind::UnsupportedMedia,
            format!("unsupported Content-Encoding {text:?}; use gzip, zstd or none"),
        )),
    }
}

fn too_large(max: usize, what: &str) -> Rejection {
    Rejection::new(
        RejectKind::TooLarge,
        format!("request body {what} exceeds the limit of {max} bytes (MAX_BODY_BYTES); split the batch"),
    )
}

/// Most bytes of a refused body read and discarded so the client can read the answer;
/// beyond, the connection is closed under it.
pub const DRAIN_MAX_BYTES: u64 = 32 << 20;
/// Longest time an admitted body may take to arrive (it holds its in-flight share
/// meanwhile); the slow-upload guard, as the header read timeout is for headers.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time spent discarding a refused body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The body's `Content-Length`, when the client sent one (not for chunked bodies).
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The 413 for a body declared over `max`, after reading and discarding it (when
/// small enough to be worth it, see [`DRAIN_MAX_BYTES`]) so that the client reads
/// the answer.
pub async fn refuse_declared(mut body: Body, declared: u64, max: usize) -> Rejection {
    if declared <= DRAIN_MAX_BYTES {
        drain(&mut body).await;
    }
    too_large(max, "(Content-Length)")
}

/// Collects the body, refusing more than `max` bytes on the wire. `capacity` is the
/// size expected (the declared length; 0 when unknown). `admit` is told the bytes
/// received so far as each piece arrives, before it is kept (a body of unknown
/// length takes its share of `MAX_INFLIGHT_BYTES` as it grows); when it refuses, the
/// rest of the body is discarded in the background ([`discard`]) and its refusal
/// returned.
pub async fn collect(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    capacity: usize,
    admit: impl FnMut(usize) -> Result<(), Rejection>,
) -> Result<Bytes, Rejection> {
    collect_within(BODY_READ_TIMEOUT, headers, body, max, capacity, admit).await
}

/// [`collect`] with the deadline as an argument (tests).
async fn collect_within(
    deadline: Duration,
    headers: &HeaderMap,
    body: Body,
    max: usize,
    capacity: usize,
    admit: impl FnMut(usize) -> Result<(), Rejection>,
) -> Result<Bytes, Rejection> {
    tokio::time::timeout(deadline, read_admitted(headers, body, max, capacity, admit))
        .await
        .unwrap_or_else(|_| {
            Err(Rejection::new(
                RejectKind::TimedOut,
                format!(
                    "the request body did not arrive within {deadline:?} of its headers; \
                     send it at once, or in smaller requests"
                ),
            ))
        })
}

async fn read_admitted(
    headers: &HeaderMap,
    mut body: Body,
    max: usize,
    capacity: usize,
    mut admit: impl FnMut(usize) -> Result<(), Rejection>,
) -> Result<Bytes, Rejection> {
    let mut pieces = Pieces::new(capacity.min(max));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            Rejection::new(
                RejectKind::Invalid,
                format!("could not read the request body: {err}"),
            )
        })?;
        // Trailers carry no body bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = pieces.len() + data.len();
        if total > max {
            drain(&mut body).await;
            return Err(too_large(max, ""));
        }
        if let Err(refused) = admit(total) {
            discard(headers, body);
            return Err(refused);
        }
        pieces.push(data);
    }
    Ok(pieces.into_bytes())
}

/// A body as it arrives: one piece kept as it is (no copy for a body that came in one
/// read), more copied into one buffer of the expected size.
struct Pieces {
    first: Option<Bytes>,
    rest: BytesMut,
    capacity: usize,
}

impl Pieces {
    fn new(capacity: usize) -> Pieces {
        Pieces {
            first: None,
            rest: BytesMut::new(),
            capacity,
        }
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(data);
            return;
        }
        if let Some(first) = self.first.take() {
            self.rest
                .reserve(self.capacity.max(first.len() + data.len()));
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&data);
    }

    fn into_bytes(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => self.rest.freeze(),
        }
    }
}

/// Lets go of a body refused before (or while) it was read, without keeping it. A
/// client waiting for `100 Continue` has not sent it: the body is dropped, and hyper
/// answers without inviting it (and closes the connection if bytes of it come
/// anyway). Otherwise it is read and thrown away on a task of its own, within
/// [`DRAIN_MAX_BYTES`] and [`DRAIN_TIME`], while the refusal goes out at once: the
/// client reads its answer and keeps its connection, and what the worker holds
/// meanwhile is one read buffer, not the body.
pub fn discard(headers: &HeaderMap, body: Body) {
    let expects_continue = headers
        .get(axum::http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        drop(body);
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        drain(&mut body).await;
    });
}

/// Reads and discards what is left of `body`, within the drain bounds.
async fn drain(body: &mut Body) {
    let discard = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// The bytes a body is admitted at (`MAX_INFLIGHT_BYTES`): its size, or for a
/// compressed one a typical log ratio of about 1:10, never more than the `max` it
/// can decompress to.
pub fn admission_cost(raw_len: usize, encoding: Encoding, max: usize) -> usize {
    match encoding {
        Encoding::Identity => raw_len,
        _ => raw_len.saturating_mul(10).min(max),
    }
}

/// A low guess of the encoded batch a body of `raw_len` bytes becomes, for the look
/// at the backlog's room before the body is read
/// ([`Admission::check_room`](crate::admission::Admission::check_room)): half its
/// size (the compact encoding of a typical JSON record is ~115 of its ~222 bytes),
/// and for a compressed body its size on the wire (it inflates several times). Low,
/// so that a body that would fit is rarely refused early; the exact check after
/// validation decides the rest.
pub fn batch_estimate(raw_len: usize, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Identity => raw_len / 2,
        _ => raw_len,
    }
}

/// Decompresses into at most `max` bytes.
pub fn decompress(raw: Bytes, encoding: Encoding, max: usize) -> Result<Bytes, Rejection> {
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => read_capped(flate2::read::MultiGzDecoder::new(&raw[..]), max, "gzip"),
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(&raw[..]).map_err(|err| {
                Rejection::new(RejectKind::Invalid, format!("invalid zstd body: {err}"))
            })?;
            read_capped(decoder, max, "zstd")
        }
    }
}

fn read_capped(reader: impl Read, max: usize, name: &str) -> Result<Bytes, Rejection> {
    let mut out = Vec::new();
    // One byte past the cap tells "exactly max" from "more than max".
    let mut limited = reader.take(max as u64 + 1);
    limited.read_to_end(&mut out).map_err(|err| {
        Rejection::new(RejectKind::Invalid, format!("invalid {name} body: {err}"))
    })?;
    if out.len() > max {
        return Err(too_large(max, "after decompression"));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    /// A body whose client sent `first` and then stopped, without closing.
    fn stalled_body(first: &'static [u8]) -> Body {
        let mut first = Some(Bytes::from_static(first));
        Body::from_stream(futures_util::stream::poll_fn(move |_| match first.take() {
            Some(piece) => std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(piece))),
            None => std::task::Poll::Pending,
        }))
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_times_out() {
        let headers = HeaderMap::new();
        let mut admitted = Vec::new();
        let started = tokio::time::Instant::now();
        let body = stalled_body(b"[{\"message\":");
        let err = collect_within(
            Duration::from_millis(300),
            &headers,
            body,
            1 << 20,
            0,
            |n| {
                admitted.push(n);
                Ok(())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, RejectKind::TimedOut);
        assert_eq!(err.http_status(), axum::http::StatusCode::REQUEST_TIMEOUT);
        assert!(err.message.contains("within 300ms"), "{}", err.message);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(10));
        assert_eq!(
            admitted,
            [12],
            "the first piece was admitted before the wait"
        );
    }

    #[test]
    fn gzip_and_zstd_round_trip() {
        let data = b"[{\"service\":\"a\",\"message\":\"b\"}]".repeat(10);
        assert_eq!(
            decompress(gzip(&data), Encoding::Gzip, 1 << 20).unwrap(),
            data
        );
        let z = Bytes::from(zstd::encode_all(&data[..], 1).unwrap());
        assert_eq!(decompress(z, Encoding::Zstd, 1 << 20).unwrap(), data);
    }

    #[test]
    fn bombs_stop_at_the_cap() {
        let bomb = gzip(&vec![b' '; 50 << 20]);
        assert!(bomb.len() < 1 << 20);
        let err = decompress(bomb, Encoding::Gzip, 1 << 20).unwrap_err();
        assert_eq!(err.kind, RejectKind::TooLarge);
        let z = Bytes::from(zstd::encode_all(&vec![0u8; 50 << 20][..], 3).unwrap());
        let err = decompress(z, Encoding::Zstd, 1 << 20).unwrap_err();
        assert_eq!(err.kind, RejectKind::TooLarge);
    }

    #[test]
    fn garbage_is_invalid_not_too_large() {
        let err = decompress(Bytes::from_static(b"not gzip"), Encoding::Gzip, 100).unwrap_err();
        assert_eq!(err.kind, RejectKind::Invalid);
    }
}
