//! Connections: one accept loop per listening socket, HTTP/1.1 and h2c
//! auto-detected per connection, graceful close on drain.
//!
//! Written out instead of `axum::serve` for three things it does not do:
//! - **balancing across instances**: every worker accepts on the same shared
//!   socket, and the kernel wakes them all for each new connection; the first
//!   scheduled wins, so one instance would take every long-lived keep-alive
//!   connection. After each accept a worker that already holds connections
//!   pauses briefly (longer the more it holds, at most [`MAX_ACCEPT_PAUSE`]),
//!   letting idle siblings take the next ones. Only with systemd's sockets: a
//!   worker that bound its own port has no siblings.
//! - **connection age**: a connection is closed gracefully (after its current
//!   request) once older than `CONNECTION_MAX_AGE`, so long-lived clients
//!   spread again after restarts and scaling.
//! - **drain without dropped requests**: on shutdown (or at max age) a
//!   connection is not cut at once — a keep-alive client may already have its
//!   next request on the wire, and hyper's immediate graceful close drops
//!   it. For [`DRAIN_LINGER`] the connection is still served and every
//!   HTTP/1 response says `Connection: close`; then idle connections are
//!   closed gracefully and in-flight requests finish. [`Server::wait`]
//!   resolves when the last connection is gone.
//!
//! A TLS listener ([`crate::tls`]) differs only in the first step of each
//! connection's task: the handshake, then the same serving as above.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::http::{header, HeaderValue, Request, Version};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::TlsAcceptor;

/// Longest pause after an accept, however many connections a worker holds.
pub const MAX_ACCEPT_PAUSE: Duration = Duration::from_millis(2);
/// Pause per connection held.
const PAUSE_PER_CONNECTION: Duration = Duration::from_micros(20);
/// A client must send its request headers within this time (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection is still served (answers say `Connection: close`).
pub const DRAIN_LINGER: Duration = Duration::from_millis(500);
/// Largest HTTP/1 read buffer of a connection (hyper's default: ~400 KiB). hyper grows
/// a connection's buffer to the reads it sees and keeps it while the connection
/// lives, so every idle keep-alive connection holds one; this caps it. It also caps
/// a request's head (hyper answers 431 beyond), far above what shippers send.
pub const HTTP1_MAX_BUF_BYTES: usize = 16 << 10;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Pause after accepts to let sibling instances take connections.
    pub balance: bool,
    /// Close a connection gracefully once it is this old.
    pub max_age: Duration,
}

/// One listening socket and how its connections start.
pub struct Listener {
    pub listener: TcpListener,
    /// `Some`: every connection starts with a TLS handshake.
    pub tls: Option<TlsAcceptor>,
}

/// The accept loops and their connections.
pub struct Server {
    tasks: TaskTracker,
    open: Arc<AtomicUsize>,
}

impl Server {
    /// Starts one accept loop per listener; they stop when `stop` is cancelled.
    pub fn start(
        listeners: Vec<Listener>,
        router: axum::Router,
        options: ServeOptions,
        stop: CancellationToken,
    ) -> Server {
        let tasks = TaskTracker::new();
        let open = Arc::new(AtomicUsize::new(0));
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(HTTP1_MAX_BUF_BYTES);
        let builder = Arc::new(builder);
        for Listener { listener, tls } in listeners {
            let accept = AcceptLoop {
                listener,
                tls,
                router: router.clone(),
                builder: Arc::clone(&builder),
                options: options.clone(),
                stop: stop.clone(),
                tasks: tasks.clone(),
                open: Arc::clone(&open),
            };
            tasks.spawn(accept.run());
        }
        tasks.close();
        Server { tasks, open }
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Resolves once every accept loop and connection has ended.
    pub async fn wait(&self) {
        self.tasks.wait().await;
    }
}

struct AcceptLoop {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    builder: Arc<Builder<TokioExecutor>>,
    options: ServeOptions,
    stop: CancellationToken,
    tasks: TaskTracker,
    open: Arc<AtomicUsize>,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                // A stopped worker must not take one more connection from the shared socket.
                biased;
                () = self.stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => self.spawn_connection(stream),
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning; the
                    // connection stays in the backlog for later or a sibling.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if self.options.balance {
                let held = self.open.load(Ordering::Relaxed) as u32;
                let pause = (PAUSE_PER_CONNECTION * held).min(MAX_ACCEPT_PAUSE);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    fn spawn_connection(&self, stream: TcpStream) {
        // Small responses (202) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        // Cancelled by the worker's stop, or by this connection's age.
        let close_soon = self.stop.child_token();
        let service = closing_service(self.router.clone(), close_soon.clone());
        let builder = Arc::clone(&self.builder);
        let max_age = self.options.max_age;
        let open = Arc::clone(&self.open);
        let tls = self.tls.clone();
        open.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            match tls {
                None => serve_connection(stream, &builder, service, max_age, close_soon).await,
                // Here, not in the accept loop: a slow client delays only itself.
                Some(tls) => {
                    if let Some(stream) = tls.handshake(stream, &close_soon, DRAIN_LINGER).await {
                        serve_connection(stream, &builder, service, max_age, close_soon).await;
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serves one connection (plain or TLS) until it ends: closed by the client, or
/// gracefully once `close_soon` is cancelled (by the worker's stop) or at `max_age`,
/// after [`DRAIN_LINGER`].
async fn serve_connection<I, S>(
    io: I,
    builder: &Builder<TokioExecutor>,
    service: S,
    max_age: Duration,
    close_soon: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let age = tokio::time::sleep(max_age);
    tokio::pin!(age);
    let mut linger_until: Option<tokio::time::Instant> = None;
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            () = &mut age, if !close_soon.is_cancelled() => close_soon.cancel(),
            () = close_soon.cancelled(), if linger_until.is_none() => {
                linger_until = Some(tokio::time::Instant::now() + DRAIN_LINGER);
            }
            () = sleep_until_opt(linger_until), if linger_until.is_some() && !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// The router as a hyper service that marks HTTP/1 answers `Connection: close`
/// once `close_soon` is cancelled, so clients stop reusing the connection
/// before it is closed. (HTTP/2 forbids the header; its graceful close is a GOAWAY.)
fn closing_service(
    router: axum::Router,
    close_soon: CancellationToken,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<axum::response::Response, Infallible>>
                 + Send
                 + 'static,
> + Clone {
    let inner = TowerToHyperService::new(router);
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let http1 = req.version() <= Version::HTTP_11;
        let response = inner.call(req);
        let close_soon = close_soon.clone();
        async move {
            let mut response = response.await?;
            if http1 && close_soon.is_cancelled() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }
    })
}
