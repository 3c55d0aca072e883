//! Where the worker's listening sockets come from.
//!
//! Under systemd the sockets belong to `zero-logs.socket` and arrive as
//! inherited fds (`LISTEN_FDS`/`LISTEN_PID`): every one is adopted, in any
//! order and any number, because every listener serves every protocol. Without
//! them (`zero-logs serve` by hand, tests) the configured addresses are bound.
//! This module knows nothing of HTTP.

use std::net::{SocketAddr, TcpListener};

use listenfd::ListenFd;

/// A socket could not be adopted or bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("systemd passed socket fd #{index} (LISTEN_FDS) but it could not be used as a TCP listener: {source}; the socket unit must use ListenStream= with an IP address and port")]
    Adopt {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}; is another process using the port? change --listen / LISTEN_ADDRS")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where a listener came from, for logs and `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Systemd,
    Bound,
}

/// Adopts systemd's sockets when there are any, otherwise binds `addrs`.
pub fn listeners(addrs: &[SocketAddr]) -> Result<(Vec<TcpListener>, Origin), ListenError> {
    let adopted = adopt(ListenFd::from_env())?;
    if !adopted.is_empty() {
        return Ok((adopted, Origin::Systemd));
    }
    let bound = addrs
        .iter()
        .map(|addr| bind(*addr))
        .collect::<Result<_, _>>()?;
    Ok((bound, Origin::Bound))
}

fn adopt(mut fds: ListenFd) -> Result<Vec<TcpListener>, ListenError> {
    let mut out = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let listener = fds
            .take_tcp_listener(index)
            .and_then(|l| {
                l.ok_or_else(|| std::io::Error::other("fd already taken or not a socket"))
            })
            .and_then(|l| {
                // tokio needs non-blocking fds; systemd hands them over blocking.
                l.set_nonblocking(true)?;
                l.local_addr()?;
                Ok(l)
            })
            .map_err(|source| ListenError::Adopt { index, source })?;
        out.push(listener);
    }
    Ok(out)
}

/// Binds one address, non-blocking, ready for tokio.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let listener = TcpListener::bind(addr).map_err(|source| ListenError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenError::Bind { addr, source })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_configured_addresses_when_systemd_passed_none() {
        let addrs = [
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ];
        let (ls, origin) = {
            // A ListenFd without any fds, as outside systemd.
            let adopted = adopt(ListenFd::empty()).unwrap();
            assert!(adopted.is_empty());
            let bound: Vec<_> = addrs.iter().map(|a| bind(*a).unwrap()).collect();
            (bound, Origin::Bound)
        };
        assert_eq!(origin, Origin::Bound);
        assert_eq!(ls.len(), 2);
        assert_ne!(ls[0].local_addr().unwrap(), ls[1].local_addr().unwrap());
    }

    #[test]
    fn bind_error_names_the_address() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
