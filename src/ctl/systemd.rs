//! systemd over D-Bus (`org.freedesktop.systemd1`): the manager's methods, unit
//! and service properties, and waiting for jobs.
//!
//! # Which socket
//!
//! - **systemd's private socket** `/run/systemd/private`: a direct (peer-to-peer)
//!   connection to PID 1, root only. It needs no `dbus-daemon`, and systemd sends
//!   its signals to every private connection unconditionally. `systemctl` prefers
//!   it as root for the same reasons.
//! - **the system bus** `/run/dbus/system_bus_socket` (or
//!   `$DBUS_SYSTEM_BUS_ADDRESS`): for non-root callers (polkit decides), or when the
//!   private socket is unavailable.
//!
//! [`BusChoice::Auto`] tries the private socket first when running as root and
//! the system bus otherwise, then the other one.
//!
//! # Jobs
//!
//! `StartUnit`/`StopUnit`/`RestartUnit` return a job path at once; the job's end
//! is the `JobRemoved(id, job, unit, result)` signal. A [`JobWatcher`] subscribes
//! (match rule + `Subscribe()`) *before* any job is issued, so no signal is lost,
//! and buffers outcomes of jobs nobody asked about yet (several jobs may run at
//! once). The match rule has no `sender`: on a private connection messages carry
//! none, and on the bus only PID 1 emits `org.freedesktop.systemd1.Manager`
//! signals on that path.
//!
//! An instance the target no longer wants is unloaded (garbage-collected) by
//! systemd as soon as it is stopped, and with it its `ExecMainCode`/
//! `ExecMainStatus`: a `GetAll` after the stop job sees a fresh, empty unit
//! (observed). A [`ServiceWatch`] therefore listens to the service's
//! `PropertiesChanged` signals while it stops; systemd sends the unit's pending
//! change signal before `JobRemoved`, so the exit status is there when the job
//! ends.
//!
//! Properties are read with `org.freedesktop.DBus.Properties.GetAll`, uncached:
//! one round trip per interface, and never a stale value from a cache that
//! depends on `PropertiesChanged` signals.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream};

pub use super::signals::{JobOutcome, JobWatcher, ServiceWatch};

/// systemd's private socket (direct connection to PID 1, root only).
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";
/// The system bus, when `DBUS_SYSTEM_BUS_ADDRESS` is unset.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
/// Object paths of units: this prefix + the name with `_xx` escapes.
pub const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_INTERFACE: &str = "org.freedesktop.systemd1.Service";
/// A method call that takes longer means PID 1 is stuck; don't hang with it.
const METHOD_TIMEOUT: Duration = Duration::from_secs(60);
/// `JobRemoved` signals buffered between two reads; the reader task stalls (and
/// with it every method reply) when this is full, so it is generous.
const SIGNAL_QUEUE: usize = 4096;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    /// Asks PID 1 to send unit and job signals to this client (needed on the bus).
    fn subscribe(&self) -> zbus::Result<()>;
    /// `daemon-reload`; the reply comes once the reload is done.
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Loads the unit if needed (a missing one as `not-found`), returns its path.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitListEntry>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// One row of `ListUnitsByPatterns` (`ssssssouso`).
pub type UnitListEntry = (
    String,          // name
    String,          // description
    String,          // load state
    String,          // active state
    String,          // sub state
    String,          // followed unit
    OwnedObjectPath, // unit path
    u32,             // job id
    String,          // job type
    OwnedObjectPath, // job path
);

/// Which D-Bus transport to use (`--bus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BusChoice {
    /// Private socket when root, else the system bus; then the other one.
    Auto,
    /// The system bus (dbus-daemon).
    System,
    /// systemd's private socket /run/systemd/private (root only).
    Private,
}

/// The transport a [`Systemd`] ended up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    System,
    Private,
}

impl BusKind {
    /// `private` or `system` (JSON).
    pub fn key(self) -> &'static str {
        match self {
            BusKind::System => "system",
            BusKind::Private => "private",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::System => "system bus",
            BusKind::Private => "systemd private socket",
        }
    }
}

/// What went wrong talking to systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to systemd over D-Bus ({tried})")]
    Connect { tried: String },
    #[error("{method}({arg}): {source}")]
    Call {
        method: &'static str,
        arg: String,
        #[source]
        source: zbus::Error,
    },
    #[error("job {job} for {unit} did not finish within {within:?}")]
    JobTimeout {
        unit: String,
        job: String,
        within: Duration,
    },
    #[error("the D-Bus connection to systemd closed while waiting for job {job} ({unit})")]
    Disconnected { unit: String, job: String },
}

fn call_err(method: &'static str, arg: &str) -> impl FnOnce(zbus::Error) -> SystemdError {
    let arg = arg.to_string();
    move |source| SystemdError::Call {
        method,
        arg,
        source,
    }
}

/// A connection to systemd's manager.
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    kind: BusKind,
}

impl Systemd {
    /// Connects as `choice` says (see the module docs for `Auto`).
    pub async fn connect(choice: BusChoice) -> Result<Systemd, SystemdError> {
        let order: &[BusKind] = match choice {
            BusChoice::System => &[BusKind::System],
            BusChoice::Private => &[BusKind::Private],
            BusChoice::Auto if rustix::process::geteuid().is_root() => {
                &[BusKind::Private, BusKind::System]
            }
            BusChoice::Auto => &[BusKind::System, BusKind::Private],
        };
        let mut tried = Vec::new();
        for &kind in order {
            match Self::connect_to(kind).await {
                Ok(conn) => {
                    let manager = ManagerProxy::builder(&conn)
                        .cache_properties(CacheProperties::No)
                        .build()
                        .await
                        .map_err(call_err("ManagerProxy", MANAGER_PATH))?;
                    return Ok(Systemd {
                        conn,
                        manager,
                        kind,
                    });
                }
                Err(e) => tried.push(format!("{}: {e}", kind.as_str())),
            }
        }
        Err(SystemdError::Connect {
            tried: tried.join("; "),
        })
    }

    async fn connect_to(kind: BusKind) -> zbus::Result<Connection> {
        match kind {
            BusKind::Private => {
                // A direct connection: no bus daemon, so no Hello and no names;
                // see `private_bus` for why zbus cannot take the socket as is.
                let (socket, guid) = super::private_bus::connect(Path::new(PRIVATE_SOCKET))
                    .await
                    .map_err(|e| zbus::Error::Failure(format!("{PRIVATE_SOCKET}: {e}")))?;
                zbus::connection::Builder::authenticated_socket(socket, guid.as_str())?
                    .p2p()
                    .method_timeout(METHOD_TIMEOUT)
                    .build()
                    .await
            }
            BusKind::System => {
                let builder = match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
                    Ok(addr) if !addr.is_empty() => {
                        zbus::connection::Builder::address(addr.as_str())?
                    }
                    _ => zbus::connection::Builder::address(
                        format!("unix:path={SYSTEM_BUS_SOCKET}").as_str(),
                    )?,
                };
                builder.method_timeout(METHOD_TIMEOUT).build().await
            }
        }
    }

    pub fn kind(&self) -> BusKind {
        self.kind
    }

    /// Starts watching job ends; create it before issuing the jobs it should see.
    pub async fn watch_jobs(&self) -> Result<JobWatcher, SystemdError> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.systemd1.Manager")
            .and_then(|b| b.member("JobRemoved"))
            .and_then(|b| b.path(MANAGER_PATH))
            .map_err(call_err("AddMatch", "JobRemoved"))?
            .build();
        let stream = MessageStream::for_match_rule(rule, &self.conn, Some(SIGNAL_QUEUE))
            .await
            .map_err(call_err("AddMatch", "JobRemoved"))?;
        self.manager
            .subscribe()
            .await
            .map_err(call_err("Subscribe", ""))?;
        Ok(JobWatcher::new(stream))
    }

    /// Starts watching how `unit` (a service) ends; create it before the stop job.
    pub async fn watch_service(&self, unit: &str) -> Result<ServiceWatch, SystemdError> {
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(call_err("LoadUnit", unit))?;
        let stream = self.service_changes(Some(path.as_ref()), unit).await?;
        Ok(ServiceWatch::new(stream))
    }

    /// Starts watching every unit's `Service` property changes (the
    /// management daemon's lifecycle events, see `daemon::events`). Subscribes
    /// this connection: call it once per connection.
    pub async fn watch_services(&self) -> Result<MessageStream, SystemdError> {
        let stream = self.service_changes(None, "every unit").await?;
        self.manager
            .subscribe()
            .await
            .map_err(call_err("Subscribe", ""))?;
        Ok(stream)
    }

    /// `PropertiesChanged` signals of the `Service` interface, of the unit at
    /// `path` or (`None`) of every unit (`what` names it in errors).
    async fn service_changes(
        &self,
        path: Option<ObjectPath<'_>>,
        what: &str,
    ) -> Result<MessageStream, SystemdError> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| match path {
                Some(path) => b.path(path.to_owned()),
                None => b.path_namespace(UNIT_PATH_PREFIX.trim_end_matches('/')),
            })
            .and_then(|b| b.arg(0, SERVICE_INTERFACE))
            .map_err(call_err("AddMatch", what))?
            .build();
        MessageStream::for_match_rule(rule, &self.conn, Some(SIGNAL_QUEUE))
            .await
            .map_err(call_err("AddMatch", what))
    }

    /// `daemon-reload`: reruns the generators; returns when the reload is done.
    pub async fn reload(&self) -> Result<(), SystemdError> {
        self.manager.reload().await.map_err(call_err("Reload", ""))
    }

    /// `StartUnit(name, "replace")`; returns the job.
    pub async fn start_unit(&self, name: &str) -> Result<OwnedObjectPath, SystemdError> {
        self.manager
            .start_unit(name, "replace")
            .await
            .map_err(call_err("StartUnit", name))
    }

    /// `StopUnit(name, "replace")`; returns the job.
    pub async fn stop_unit(&self, name: &str) -> Result<OwnedObjectPath, SystemdError> {
        self.manager
            .stop_unit(name, "replace")
            .await
            .map_err(call_err("StopUnit", name))
    }

    /// `RestartUnit(name, "replace")`; returns the job.
    pub async fn restart_unit(&self, name: &str) -> Result<OwnedObjectPath, SystemdError> {
        self.manager
            .restart_unit(name, "replace")
            .await
            .map_err(call_err("RestartUnit", name))
    }

    /// Loaded units matching `patterns` (any state).
    pub async fn list_units(&self, patterns: &[&str]) -> Result<Vec<UnitListEntry>, SystemdError> {
        self.manager
            .list_units_by_patterns(&[], patterns)
            .await
            .map_err(call_err("ListUnitsByPatterns", &patterns.join(" ")))
    }

    /// systemd's version string (e.g. `252.39-1~deb12u2`).
    pub async fn version(&self) -> Result<String, SystemdError> {
        self.manager
            .version()
            .await
            .map_err(call_err("Get", "Version"))
    }

    /// Current properties of `name` (loading it if needed); the `Service`
    /// interface too for `.service` units.
    pub async fn unit(&self, name: &str) -> Result<UnitSnapshot, SystemdError> {
        let path = self
            .manager
            .load_unit(name)
            .await
            .map_err(call_err("LoadUnit", name))?;
        let unit = self.get_all(&path, UNIT_INTERFACE, name).await?;
        let service = if name.ends_with(".service") {
            Some(ServiceSnapshot::from_props(
                &self.get_all(&path, SERVICE_INTERFACE, name).await?,
            ))
        } else {
            None
        };
        Ok(UnitSnapshot::from_props(name, &unit, service))
    }

    async fn get_all(
        &self,
        path: &ObjectPath<'_>,
        interface: &'static str,
        unit: &str,
    ) -> Result<HashMap<String, OwnedValue>, SystemdError> {
        let props = PropertiesProxy::builder(&self.conn)
            .destination(DESTINATION)
            .and_then(|b| b.path(path.to_owned()))
            .map_err(call_err("GetAll", unit))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("GetAll", unit))?;
        let interface = InterfaceName::from_static_str_unchecked(interface);
        props
            .get_all(interface)
            .await
            .map_err(|e| SystemdError::Call {
                method: "GetAll",
                arg: unit.to_string(),
                source: e.into(),
            })
    }
}

/// `org.freedesktop.systemd1.Unit` properties the ctl reads.
#[derive(Debug, Clone, Default)]
pub struct UnitSnapshot {
    pub id: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// `false` after a condition (here: the generator's `ExecCondition=`) skipped the start.
    pub condition_result: bool,
    /// Realtime µs since the epoch when the unit last entered `active` (0: never).
    pub active_enter_realtime_us: u64,
    /// `Wants=` (for the target: its instances).
    pub wants: Vec<String>,
    pub service: Option<ServiceSnapshot>,
}

/// `org.freedesktop.systemd1.Service` properties the ctl reads.
#[derive(Debug, Clone, Default)]
pub struct ServiceSnapshot {
    pub main_pid: u32,
    pub n_restarts: u32,
    /// `None` when not set (no memory accounting, as in the test containers).
    pub memory_current: Option<u64>,
    /// CLOCK_MONOTONIC µs when the current main process started (0: none).
    pub exec_main_start_monotonic_us: u64,
    /// CLOCK_MONOTONIC µs when the last main process exited (0: none since the start).
    pub exec_main_exit_monotonic_us: u64,
    /// PID of the last (or current) main process, kept after it exited.
    pub exec_main_pid: u32,
    /// Exit status of the last main process (meaningful with `exec_main_code` 1 = exited).
    pub exec_main_status: i32,
    /// `CLD_*` code of the last main process exit: 1 exited, 2 killed, 3 dumped.
    pub exec_main_code: i32,
    /// `success`, `exit-code`, `signal`, `watchdog`, …
    pub result: String,
    /// The worker's `STATUS=` line.
    pub status_text: String,
}

pub(super) fn prop<T: TryFrom<OwnedValue>>(
    props: &HashMap<String, OwnedValue>,
    name: &str,
) -> Option<T> {
    props
        .get(name)
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| T::try_from(v).ok())
}

impl UnitSnapshot {
    fn from_props(
        name: &str,
        props: &HashMap<String, OwnedValue>,
        service: Option<ServiceSnapshot>,
    ) -> UnitSnapshot {
        UnitSnapshot {
            id: prop(props, "Id").unwrap_or_else(|| name.to_string()),
            load_state: prop(props, "LoadState").unwrap_or_default(),
            active_state: prop(props, "ActiveState").unwrap_or_default(),
            sub_state: prop(props, "SubState").unwrap_or_default(),
            condition_result: prop(props, "ConditionResult").unwrap_or(true),
            active_enter_realtime_us: prop(props, "ActiveEnterTimestamp").unwrap_or(0),
            wants: prop(props, "Wants").unwrap_or_default(),
            service,
        }
    }

    /// `active/running` style, as `systemctl` shows it.
    pub fn state(&self) -> String {
        format!("{}/{}", self.active_state, self.sub_state)
    }

    /// For `Type=notify`: `active/running` only after `READY=1`.
    pub fn is_running(&self) -> bool {
        self.active_state == "active" && self.sub_state == "running"
    }

    /// Neither `inactive` nor `failed`: a process exists or is about to.
    pub fn is_up(&self) -> bool {
        !matches!(self.active_state.as_str(), "inactive" | "failed" | "")
    }

    pub fn main_pid(&self) -> u32 {
        self.service.as_ref().map_or(0, |s| s.main_pid)
    }
}

impl ServiceSnapshot {
    pub(crate) fn from_props(props: &HashMap<String, OwnedValue>) -> ServiceSnapshot {
        ServiceSnapshot {
            main_pid: prop(props, "MainPID").unwrap_or(0),
            n_restarts: prop(props, "NRestarts").unwrap_or(0),
            // systemd reports "not set" as u64::MAX.
            memory_current: prop::<u64>(props, "MemoryCurrent").filter(|&m| m != u64::MAX),
            exec_main_start_monotonic_us: prop(props, "ExecMainStartTimestampMonotonic")
                .unwrap_or(0),
            exec_main_exit_monotonic_us: prop(props, "ExecMainExitTimestampMonotonic").unwrap_or(0),
            exec_main_pid: prop(props, "ExecMainPID").unwrap_or(0),
            exec_main_status: prop(props, "ExecMainStatus").unwrap_or(0),
            exec_main_code: prop(props, "ExecMainCode").unwrap_or(0),
            result: prop(props, "Result").unwrap_or_default(),
            status_text: prop(props, "StatusText").unwrap_or_default(),
        }
    }

    /// How the last main process ended, e.g. `exit status 0` or `signal 9`.
    pub fn exit_description(&self) -> String {
        match self.exec_main_code {
            1 => format!("exit status {}", self.exec_main_status),
            2 | 3 => format!("killed by signal {}", self.exec_main_status),
            _ => "no exit recorded".to_string(),
        }
    }

    /// The last main process exited by itself with status 0 (a clean drain).
    pub fn exited_cleanly(&self) -> bool {
        self.exec_main_code == 1 && self.exec_main_status == 0
    }
}

/// CLOCK_MONOTONIC now, in µs: the clock of systemd's `…Monotonic` timestamps
/// (containers share it with the host).
pub fn monotonic_now_us() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// The instance part of `zero-logs@<instance>.service`.
pub fn instance_of(unit: &str) -> Option<&str> {
    unit.strip_prefix("zero-logs@")?
        .strip_suffix(".service")
        .filter(|i| !i.is_empty())
}

/// The unit name of a unit's object path (`…/unit/zero_2dlogs_40_31_2eservice`
/// → `zero-logs@1.service`): systemd escapes every byte that is not
/// `[A-Za-z0-9]` as `_xx` (hex).
pub fn unit_of_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?;
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `zero-logs@<instance>.service`.
pub fn unit_name(instance: &str) -> String {
    format!("zero-logs@{instance}.service")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_round_trip() {
        assert_eq!(instance_of("zero-logs@12.service"), Some("12"));
        assert_eq!(instance_of("zero-logs@surge.service"), Some("surge"));
        assert_eq!(instance_of("zero-logs@.service"), None);
        assert_eq!(instance_of("zero-logs.target"), None);
        assert_eq!(unit_name("3"), "zero-logs@3.service");
        assert_eq!(
            unit_of_path("/org/freedesktop/systemd1/unit/zero_2dlogs_40_31_2eservice").as_deref(),
            Some("zero-logs@1.service")
        );
        assert_eq!(
            unit_of_path("/org/freedesktop/systemd1/unit/zero_2dlogs_40surge_2eservice").as_deref(),
            Some("zero-logs@surge.service")
        );
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/unit/bad_zz"), None);
        assert_eq!(unit_of_path("/elsewhere"), None);
    }

    #[test]
    fn exit_descriptions() {
        let mut s = ServiceSnapshot {
            exec_main_code: 1,
            ..Default::default()
        };
        assert!(s.exited_cleanly());
        assert_eq!(s.exit_description(), "exit status 0");
        s.exec_main_code = 2;
        s.exec_main_status = 9;
        assert!(!s.exited_cleanly());
        assert_eq!(s.exit_description(), "killed by signal 9");
    }

    #[test]
    fn monotonic_clock_moves() {
        let a = monotonic_now_us();
        assert!(a > 0);
        assert!(monotonic_now_us() >= a);
    }
}
