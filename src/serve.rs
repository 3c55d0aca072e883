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
//! - **drain**: on shutdown the accept loops stop, each connection finishes
//!   its in-flight request and closes, and [`Server::wait`] resolves when
//!   the last one is gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest pause after an accept, however many connections a worker holds.
pub const MAX_ACCEPT_PAUSE: Duration = Duration::from_millis(2);
/// Pause per connection held.
const PAUSE_PER_CONNECTION: Duration = Duration::from_micros(20);
/// A client must send its request headers within this time (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Pause after accepts to let sibling instances take connections.
    pub balance: bool,
    /// Close a connection gracefully once it is this old.
    pub max_age: Duration,
}

/// The accept loops and their connections.
pub struct Server {
    tasks: TaskTracker,
    open: Arc<AtomicUsize>,
}

impl Server {
    /// Starts one accept loop per listener; they stop when `stop` is cancelled.
    pub fn start(
        listeners: Vec<TcpListener>,
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
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let builder = Arc::new(builder);
        for listener in listeners {
            let accept = AcceptLoop {
                listener,
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
        let service = TowerToHyperService::new(self.router.clone());
        let builder = Arc::clone(&self.builder);
        let stop = self.stop.clone();
        let max_age = self.options.max_age;
        let open = Arc::clone(&self.open);
        open.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let age = tokio::time::sleep(max_age);
            tokio::pin!(age);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    () = stop.cancelled(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = &mut age, if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
