//! Request bodies: size caps before and after decompression.
//!
//! A body is capped three times: by `Content-Length` before reading, while
//! collecting, and on the *output* of gzip/zstd, so a decompression bomb costs
//! at most `max_body_bytes` of memory and gets 413, never an OOM.
//!
//! A body refused as too large is read on and thrown away (up to
//! [`DRAIN_MAX_BYTES`], for at most [`DRAIN_TIME`]) before the 413 goes out: a
//! client still sending it would otherwise find the connection closed under its
//! write and never read the answer (hyper's client reports a broken pipe).

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

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

/// Most bytes of a refused body read and discarded so the client can read the 413;
/// beyond, the connection is closed under it.
pub const DRAIN_MAX_BYTES: u64 = 32 << 20;
/// Longest time spent discarding a refused body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Collects the body, refusing more than `max` bytes on the wire.
pub async fn collect(headers: &HeaderMap, mut body: Body, max: usize) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > max as u64) {
        if n <= DRAIN_MAX_BYTES {
            drain(&mut body).await;
        }
        return Err(too_large(max, "(Content-Length)"));
    }
    match Limited::new(&mut body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            drain(&mut body).await;
            Err(too_large(max, ""))
        }
        Err(err) => Err(Rejection::new(
            RejectKind::Invalid,
            format!("could not read the request body: {err}"),
        )),
    }
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
