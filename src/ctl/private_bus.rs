//! A zbus connection over systemd's private socket `/run/systemd/private`.
//!
//! That socket is a direct (peer-to-peer) D-Bus connection to PID 1: no bus
//! daemon, root only. Two things keep zbus from using it as is:
//!
//! - systemd stamps every message it sends there with the *well-known* name
//!   `org.freedesktop.systemd1` as `SENDER` (sd-bus's "fake sender" on direct
//!   connections). The D-Bus spec says a sender is a unique name (`:1.42`), and
//!   zbus 5 enforces that while reading headers: its reader task panics on the
//!   first reply ("Invalid field reconstruction: InvalidName") and every call
//!   then times out (observed, systemd 252).
//! - so the read half is wrapped: each incoming message is read whole and a
//!   sender that is not a unique name is rewritten *in place, at the same length*
//!   (`org.freedesktop.systemd1` → `:org.freedesktop.systemd`), so no length,
//!   offset or padding in the message changes. Nothing else is touched.
//!
//! The `EXTERNAL` authentication is done here before zbus gets the socket
//! (`Builder::authenticated_socket`), so the wrapper only ever sees binary
//! messages.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zbus::connection::socket::{BoxedSplit, ReadHalf, Split};

/// Longest authentication line systemd may send ("OK <32 hex digits>").
const MAX_AUTH_LINE: usize = 512;
/// The fixed part of a message header: endianness, type, flags, version, body
/// length, serial, header-fields array length.
const FIXED_HEADER: usize = 16;
/// The D-Bus spec's maximum message size.
const MAX_MESSAGE: usize = 128 << 20;
const SENDER_FIELD: u8 = 7;

/// Connects to `path`, authenticates as this process's uid, and returns the
/// socket for `zbus::connection::Builder::authenticated_socket` with the
/// server's GUID.
pub async fn connect(path: &Path) -> io::Result<(BoxedSplit, String)> {
    let mut stream = UnixStream::connect(path).await?;
    let guid = authenticate(&mut stream).await?;
    let (read, write) = BoxedSplit::from(stream).take();
    let read: Box<dyn ReadHalf> = Box::new(SenderFixingReader {
        inner: read,
        raw: Vec::new(),
        ready: Vec::new(),
        ready_pos: 0,
    });
    Ok((Split::new(read, write), guid))
}

/// `AUTH EXTERNAL <uid in hex>` + `BEGIN` in one write, then `OK <guid>`
/// (no fd passing).
///
/// `BEGIN` goes out *with* the `AUTH` line, as sd-bus's own client does it,
/// not after the `OK`: systemd 252 left a first method call that arrived in
/// the same read as a late `BEGIN` unanswered (observed: no reply to
/// `LoadUnit` within 60 s, while its signals kept coming).
async fn authenticate(stream: &mut UnixStream) -> io::Result<String> {
    let uid = rustix::process::geteuid().as_raw().to_string();
    let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
    stream
        .write_all(format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n").as_bytes())
        .await?;
    // Byte by byte: nothing may be read past the line; what follows belongs
    // to zbus.
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        if line.len() > MAX_AUTH_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "D-Bus authentication: overlong line",
            ));
        }
        line.push(stream.read_u8().await?);
    }
    let line = String::from_utf8_lossy(&line).trim().to_string();
    let guid = line.strip_prefix("OK ").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("D-Bus authentication refused: {line:?}"),
        )
    })?;
    Ok(guid.trim().to_string())
}

/// The read half that rewrites non-unique senders; see the module docs.
#[derive(Debug)]
struct SenderFixingReader {
    inner: Box<dyn ReadHalf>,
    /// Bytes read from the socket, not yet a whole message.
    raw: Vec<u8>,
    /// One fixed message, handed to zbus from `ready_pos` on.
    ready: Vec<u8>,
    ready_pos: usize,
}

impl SenderFixingReader {
    /// Reads until `raw` holds at least `n` bytes; collects passed fds.
    async fn fill(&mut self, n: usize, fds: &mut Vec<OwnedFd>) -> io::Result<()> {
        let mut chunk = vec![0u8; 64 * 1024];
        while self.raw.len() < n {
            let (read, got) = self.inner.recvmsg(&mut chunk).await?;
            fds.extend(got);
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "systemd closed the private connection",
                ));
            }
            self.raw.extend_from_slice(&chunk[..read]);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ReadHalf for SenderFixingReader {
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        if self.ready_pos == self.ready.len() {
            self.fill(FIXED_HEADER, &mut fds).await?;
            let total = message_len(&self.raw)?;
            self.fill(total, &mut fds).await?;
            let rest = self.raw.split_off(total);
            self.ready = std::mem::replace(&mut self.raw, rest);
            self.ready_pos = 0;
            fix_sender(&mut self.ready);
        }
        let n = buf.len().min(self.ready.len() - self.ready_pos);
        buf[..n].copy_from_slice(&self.ready[self.ready_pos..self.ready_pos + n]);
        self.ready_pos += n;
        Ok((n, fds))
    }

    fn can_pass_unix_fd(&self) -> bool {
        // Not negotiated in `authenticate`.
        false
    }

    async fn peer_credentials(&mut self) -> io::Result<zbus::fdo::ConnectionCredentials> {
        self.inner.peer_credentials().await
    }
}

fn read_u32(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

fn align(offset: usize, to: usize) -> usize {
    offset.div_ceil(to) * to
}

/// Length of the whole message whose fixed header starts `raw`.
fn message_len(raw: &[u8]) -> io::Result<usize> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let big = match raw.first() {
        Some(b'l') => false,
        Some(b'B') => true,
        _ => return Err(bad("D-Bus message with an unknown byte order")),
    };
    let body = read_u32(raw, 4, big).ok_or_else(|| bad("short header"))? as usize;
    let fields = read_u32(raw, 12, big).ok_or_else(|| bad("short header"))? as usize;
    let total = align(FIXED_HEADER + fields, 8) + body;
    if total > MAX_MESSAGE {
        return Err(bad("D-Bus message over 128 MiB"));
    }
    Ok(total)
}

/// Rewrites a `SENDER` header field that is not a unique name into one of the
/// same length (see the module docs). Leaves anything it does not understand
/// alone: zbus then judges the message as it would have.
fn fix_sender(msg: &mut [u8]) {
    let big = msg.first() == Some(&b'B');
    let Some(fields_len) = read_u32(msg, 12, big) else {
        return;
    };
    let end = (FIXED_HEADER + fields_len as usize).min(msg.len());
    let mut at = FIXED_HEADER;
    while align(at, 8) + 2 < end {
        at = align(at, 8);
        let code = msg[at];
        let sig_len = msg[at + 1] as usize;
        let Some(sig) = msg.get(at + 2..at + 2 + sig_len) else {
            return;
        };
        let value = at + 2 + sig_len + 1;
        at = match sig {
            b"s" | b"o" => {
                let start = align(value, 4);
                let Some(len) = read_u32(msg, start, big) else {
                    return;
                };
                let text = start + 4;
                let stop = text + len as usize;
                if stop >= end {
                    return;
                }
                if code == SENDER_FIELD && sig == b"s" {
                    make_unique(&mut msg[text..stop]);
                }
                stop + 1
            }
            b"g" => match msg.get(value) {
                Some(&len) => value + 1 + len as usize + 1,
                None => return,
            },
            b"u" => align(value, 4) + 4,
            _ => return,
        };
    }
}

/// `org.freedesktop.systemd1` → `:org.freedesktop.systemd` (same length).
fn make_unique(name: &mut [u8]) {
    if name.len() < 4 || name[0] == b':' || name == b"org.freedesktop.DBus" {
        return;
    }
    name.copy_within(0..name.len() - 1, 1);
    name[0] = b':';
    let last = name.len() - 1;
    if name[last] == b'.' {
        name[last] = b'_';
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::message::Message;

    /// A real reply as systemd sends it on the private socket: built by zbus
    /// with a unique sender, then given systemd's well-known one (same length
    /// trick in reverse), as read off the wire.
    fn systemd_reply() -> Vec<u8> {
        let call = Message::method_call("/org/freedesktop/systemd1", "LoadUnit")
            .unwrap()
            .interface("org.freedesktop.systemd1.Manager")
            .unwrap()
            .build(&("zero-logs.target",))
            .unwrap();
        let reply = Message::method_return(&call.header())
            .unwrap()
            .sender(":org.freedesktop.systemd")
            .unwrap()
            .build(&(
                zbus::zvariant::ObjectPath::try_from("/org/freedesktop/systemd1/unit/x").unwrap(),
            ))
            .unwrap();
        let mut bytes = reply.data().to_vec();
        let at = find(&bytes, b":org.freedesktop.systemd").unwrap();
        bytes[at..at + 24].copy_from_slice(b"org.freedesktop.systemd1");
        bytes
    }

    fn find(h: &[u8], n: &[u8]) -> Option<usize> {
        h.windows(n.len()).position(|w| w == n)
    }

    #[test]
    fn rewrites_the_well_known_sender_in_place() {
        let mut bytes = systemd_reply();
        assert_eq!(message_len(&bytes).unwrap(), bytes.len());
        let before = bytes.clone();
        fix_sender(&mut bytes);
        assert_eq!(bytes.len(), before.len());
        assert!(find(&bytes, b":org.freedesktop.systemd").is_some());
        // Only the 24 sender bytes changed.
        let changed = before.iter().zip(&bytes).filter(|(a, b)| a != b).count();
        assert!(changed <= 24, "{changed} bytes changed");
        // Idempotent, and a unique sender is left alone.
        let fixed = bytes.clone();
        fix_sender(&mut bytes);
        assert_eq!(bytes, fixed);
    }

    #[test]
    fn make_unique_keeps_the_length() {
        let mut name = *b"org.freedesktop.systemd1";
        make_unique(&mut name);
        assert_eq!(&name, b":org.freedesktop.systemd");
        let mut odd = *b"a.b.c";
        make_unique(&mut odd);
        assert_eq!(&odd, b":a.b_");
        let mut bus = *b"org.freedesktop.DBus";
        make_unique(&mut bus);
        assert_eq!(&bus, b"org.freedesktop.DBus");
    }

    #[test]
    fn garbage_is_left_alone_and_never_panics() {
        for len in 0..64 {
            let mut junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            fix_sender(&mut junk);
            let _ = message_len(&junk);
        }
        let mut truncated = systemd_reply();
        truncated.truncate(40);
        fix_sender(&mut truncated);
        assert!(message_len(b"x123456789abcdef").is_err());
    }

    #[tokio::test]
    async fn serves_whole_fixed_messages_in_small_reads() {
        let (mut server, client) = UnixStream::pair().unwrap();
        let wire = [systemd_reply(), systemd_reply()].concat();
        let (read, _write) = BoxedSplit::from(client).take();
        let mut reader = SenderFixingReader {
            inner: read,
            raw: Vec::new(),
            ready: Vec::new(),
            ready_pos: 0,
        };
        tokio::spawn(async move {
            // Dribble it out in odd chunks.
            for chunk in wire.chunks(7) {
                server.write_all(chunk).await.unwrap();
            }
            server
        });
        // The first message through recvmsg in small reads…
        let one = systemd_reply().len();
        let mut got = Vec::new();
        let mut buf = [0u8; 10];
        while got.len() < one {
            let (n, fds) = reader.recvmsg(&mut buf).await.unwrap();
            assert!(fds.is_empty());
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), one, "recvmsg crossed a message boundary");
        assert!(find(&got, b":org.freedesktop.systemd").is_some());
        // …the second the way zbus reads it, then parsed as zbus does.
        let msg = reader
            .receive_message(1, &mut Vec::new(), &mut Vec::new())
            .await
            .unwrap();
        assert_eq!(
            msg.header().sender().map(|s| s.as_str()),
            Some(":org.freedesktop.systemd")
        );
    }
}
