//! Waiting on systemd's signals: job ends (`JobRemoved`) and a service's exit
//! status (`PropertiesChanged`). Created by [`Systemd::watch_jobs`] and
//! [`Systemd::watch_service`], before the jobs they should see; the module
//! docs of [`super::systemd`] say why each exists.
//!
//! [`Systemd::watch_jobs`]: super::systemd::Systemd::watch_jobs
//! [`Systemd::watch_service`]: super::systemd::Systemd::watch_service

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};
use zbus::MessageStream;

use super::systemd::{prop, ServiceSnapshot, SystemdError};

/// Unclaimed job outcomes kept for later `wait`s (jobs of other clients too).
const MAX_UNCLAIMED: usize = 4096;

/// How a job ended (`JobRemoved`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub unit: String,
    /// `done`, `canceled`, `timeout`, `failed`, `dependency`, `skipped`.
    pub result: String,
}

impl JobOutcome {
    pub fn is_done(&self) -> bool {
        self.result == "done"
    }
}

/// Receives `JobRemoved` signals.
pub struct JobWatcher {
    stream: MessageStream,
    unclaimed: HashMap<String, JobOutcome>,
}

impl JobWatcher {
    pub(super) fn new(stream: MessageStream) -> JobWatcher {
        JobWatcher {
            stream,
            unclaimed: HashMap::new(),
        }
    }

    /// Waits until `job` (for `unit`, used in messages) ends.
    pub async fn wait(
        &mut self,
        job: &ObjectPath<'_>,
        unit: &str,
        within: Duration,
    ) -> Result<JobOutcome, SystemdError> {
        let key = job.as_str().to_string();
        if let Some(outcome) = self.unclaimed.remove(&key) {
            return Ok(outcome);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            let msg = match next {
                Err(_) => {
                    return Err(SystemdError::JobTimeout {
                        unit: unit.to_string(),
                        job: key,
                        within,
                    })
                }
                Ok(None) => {
                    return Err(SystemdError::Disconnected {
                        unit: unit.to_string(),
                        job: key,
                    })
                }
                // A malformed message is not ours to judge; keep listening.
                Ok(Some(Err(_))) => continue,
                Ok(Some(Ok(msg))) => msg,
            };
            let Ok((_id, path, unit_name, result)) =
                msg.body()
                    .deserialize::<(u32, OwnedObjectPath, String, String)>()
            else {
                continue;
            };
            let outcome = JobOutcome {
                unit: unit_name,
                result,
            };
            if path.as_str() == key {
                return Ok(outcome);
            }
            if self.unclaimed.len() >= MAX_UNCLAIMED {
                self.unclaimed.clear();
            }
            self.unclaimed.insert(path.as_str().to_string(), outcome);
        }
    }
}

/// A service's exit status as its `PropertiesChanged` signals told it; see
/// the module docs.
pub struct ServiceWatch {
    stream: MessageStream,
    exit: ServiceSnapshot,
}

impl ServiceWatch {
    pub(super) fn new(stream: MessageStream) -> ServiceWatch {
        ServiceWatch {
            stream,
            exit: ServiceSnapshot::default(),
        }
    }

    /// Takes in the signals received so far (never waits) and returns the last
    /// known `ExecMainCode`, `ExecMainStatus` and `Result` (other fields unset).
    pub fn exit(&mut self) -> &ServiceSnapshot {
        use futures_util::FutureExt;
        while let Some(Some(msg)) = self.stream.next().now_or_never() {
            let Ok(msg) = msg else { continue };
            let Ok((_iface, changed, _invalidated)) =
                msg.body()
                    .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
            else {
                continue;
            };
            if let Some(code) = prop(&changed, "ExecMainCode") {
                self.exit.exec_main_code = code;
            }
            if let Some(status) = prop(&changed, "ExecMainStatus") {
                self.exit.exec_main_status = status;
            }
            if let Some(result) = prop(&changed, "Result") {
                self.exit.result = result;
            }
        }
        &self.exit
    }
}
