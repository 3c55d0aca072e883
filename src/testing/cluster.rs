//! A ClickHouse cluster for one test: two private [`ClickHouseServer`]s as the two
//! shards (one replica each) of a cluster named in both configs' `<remote_servers>`,
//! and optionally a private [`ZooKeeperServer`] both use for `ON CLUSTER` DDL.
//!
//! Each server's config must name the other's native port, so all ports are picked
//! before either server starts; a port taken in between makes the whole cluster start
//! again on new ports. ZooKeeper is Debian's `zookeeper` package (3.8, a Java program)
//! run as a standalone server on a loopback port with its data in a temp directory;
//! it serves after 0.3–1.1 s and holds ~65 MB. Everything is killed by PID and its directory
//! removed on drop, pass or fail.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    command_dying_with_parent, find_in_path, free_ports, io_error, kill_child, make_temp_dir,
    ClickHouseServer, FixtureError, START_ATTEMPTS, START_TIMEOUT,
};

/// Where Debian's `zookeeper` package puts the server (its dependencies are on the
/// jar's manifest class path).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// The ZooKeeper path of the `ON CLUSTER` DDL queue (ClickHouse's usual one).
pub const DDL_QUEUE: &str = "/clickhouse/task_queue/ddl";

// === ZooKeeperServer ===

/// A private standalone ZooKeeper on a free loopback port.
#[derive(Debug)]
pub struct ZooKeeperServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    startup: Duration,
}

impl ZooKeeperServer {
    /// Starts ZooKeeper and waits until it serves (about 1 s; up to 30 s, then
    /// an error with its output). Blocking. Not installed: an error naming the fix.
    pub fn start() -> Result<ZooKeeperServer, FixtureError> {
        let java = find_in_path("java");
        let jar = Path::new(ZOOKEEPER_JAR);
        let (Some(java), true) = (java, jar.is_file()) else {
            return Err(FixtureError::Io {
                what: format!(
                    "ZooKeeper not found (needs `java` in PATH and {ZOOKEEPER_JAR}); install \
                     it with scripts/install-deps (Debian packages zookeeper and \
                     default-jre-headless)"
                ),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        };
        let mut server = ZooKeeperServer {
            dir: make_temp_dir()?,
            port: 0,
            child: None,
            startup: Duration::ZERO,
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            server.port = free_ports()?[0];
            match server.launch(&java, jar) {
                Ok(()) => {
                    eprintln!(
                        "[testing] ZooKeeper started in {} ms on port {} (pid {})",
                        server.startup.as_millis(),
                        server.port,
                        server.child.as_ref().map_or(0, Child::id)
                    );
                    return Ok(server);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| FixtureError::Io {
            what: "starting ZooKeeper".into(),
            source: io::Error::other("no attempt made"),
        }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The PID of the Java process while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn launch(&mut self, java: &Path, jar: &Path) -> Result<(), FixtureError> {
        let started = Instant::now();
        let data = self.dir.join("data");
        fs::create_dir_all(&data).map_err(io_error(format!("creating {}", data.display())))?;
        // tickTime 500 ms: sessions of a killed server expire sooner. No admin web
        // server (it would take port 8080); `srvr` allowed for the readiness probe.
        let config = format!(
            "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n",
            data.display(),
            self.port
        );
        let config_path = self.dir.join("zoo.cfg");
        fs::write(&config_path, config)
            .map_err(io_error(format!("writing {}", config_path.display())))?;
        let out_path = self.dir.join("zookeeper.out");
        let out = fs::File::create(&out_path)
            .map_err(io_error(format!("creating {}", out_path.display())))?;
        let err = out
            .try_clone()
            .map_err(io_error("duplicating a file handle"))?;
        let child = command_dying_with_parent(java)
            .args([
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.admin.enableServer=false",
            ])
            .arg("-cp")
            .arg(jar)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_error(format!("starting {}", java.display())))?;
        self.child = Some(child);
        let deadline = started + START_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                kill_child(&mut self.child);
                let output = fs::read_to_string(&out_path).unwrap_or_default();
                return Err(FixtureError::Io {
                    what: format!(
                        "ZooKeeper on port {} did not start serving ({}); output:\n{output}",
                        self.port,
                        exited.map_or("timed out".into(), |s| s.to_string())
                    ),
                    source: io::Error::other("ZooKeeper start-up failed"),
                });
            }
            if serving(self.port) {
                self.startup = started.elapsed();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether ZooKeeper serves sessions. Not `ruok`: that answers `imok` as soon as the
/// port is open, while sessions are still refused (measured: a ClickHouse connecting
/// then fails its handshake, and its DDL worker waits before trying again).
fn serving(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = String::new();
    stream.write_all(b"srvr").is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains("Mode: standalone")
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// === ClickHouseCluster ===

/// Two private ClickHouse servers as the two shards of cluster [`name`](Self::name).
#[derive(Debug)]
pub struct ClickHouseCluster {
    name: String,
    /// Dropped before ZooKeeper (fields drop in order), so no server outlives it.
    shards: Vec<ClickHouseServer>,
    zookeeper: Option<ZooKeeperServer>,
}

impl ClickHouseCluster {
    /// Starts the two shards of cluster `name`, with a private ZooKeeper (and the DDL
    /// queue configured) when `with_zookeeper`. Blocking.
    pub fn start(name: &str, with_zookeeper: bool) -> Result<ClickHouseCluster, FixtureError> {
        let zookeeper = with_zookeeper.then(ZooKeeperServer::start).transpose()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match start_shards(name, zookeeper.as_ref().map(ZooKeeperServer::port)) {
                Ok(shards) => {
                    return Ok(ClickHouseCluster {
                        name: name.to_string(),
                        shards,
                        zookeeper,
                    })
                }
                Err((error, true)) => last = Some(error),
                Err((error, false)) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| FixtureError::Io {
            what: "starting the cluster".into(),
            source: io::Error::other("no attempt made"),
        }))
    }

    /// The cluster's name in `<remote_servers>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shard `i` (0 or 1).
    pub fn shard(&self, i: usize) -> &ClickHouseServer {
        &self.shards[i]
    }

    pub fn shards(&self) -> &[ClickHouseServer] {
        &self.shards
    }

    /// Shard `i`, to stop, kill or restart it.
    pub fn shard_mut(&mut self, i: usize) -> &mut ClickHouseServer {
        &mut self.shards[i]
    }

    pub fn zookeeper(&self) -> Option<&ZooKeeperServer> {
        self.zookeeper.as_ref()
    }
}

/// Starts both shards on fresh ports; the error says whether a port was taken (retry).
fn start_shards(
    name: &str,
    zookeeper_port: Option<u16>,
) -> Result<Vec<ClickHouseServer>, (FixtureError, bool)> {
    let fail = |error| (error, false);
    let mut shards = vec![
        ClickHouseServer::prepare().map_err(fail)?,
        ClickHouseServer::prepare().map_err(fail)?,
    ];
    for shard in &mut shards {
        let [http, tcp, interserver] = free_ports().map_err(fail)?;
        shard.http_port = http;
        shard.tcp_port = tcp;
        shard.interserver_port = interserver;
    }
    let extra = cluster_config(name, &shards, zookeeper_port);
    for shard in &mut shards {
        shard.extra_config = extra.clone();
        shard.write_config().map_err(fail)?;
        if let Err(error) = shard.launch() {
            let taken = shard.port_was_taken();
            return Err((error, taken));
        }
        shard.announce();
    }
    Ok(shards)
}

/// The `<remote_servers>` (and ZooKeeper) part of both servers' configs.
fn cluster_config(name: &str, shards: &[ClickHouseServer], zookeeper_port: Option<u16>) -> String {
    let mut xml = format!("    <remote_servers>\n        <{name}>\n");
    for shard in shards {
        xml.push_str(&format!(
            "            <shard><replica><host>127.0.0.1</host><port>{}</port></replica></shard>\n",
            shard.tcp_port
        ));
    }
    xml.push_str(&format!("        </{name}>\n    </remote_servers>\n"));
    if let Some(port) = zookeeper_port {
        xml.push_str(&format!(
            "    <zookeeper><node><host>127.0.0.1</host><port>{port}</port></node></zookeeper>\n\
             \x20   <distributed_ddl><path>{DDL_QUEUE}</path></distributed_ddl>\n"
        ));
    }
    xml
}
