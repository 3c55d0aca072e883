//! Messages to systemd's service manager (`sd_notify`).
//!
//! A no-op when `NOTIFY_SOCKET` is unset, so the same binary runs by hand.
//! Failures are logged, never fatal: systemd itself reports a worker that
//! never became ready.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "could not notify systemd");
    }
}

/// The worker can serve: listeners adopted, sink connected.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// One-line summary shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// SIGTERM received: draining.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Liveness ping for `WatchdogSec`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Asks systemd for `extension` more time to finish stopping.
pub fn extend_timeout(extension: Duration) {
    let usec = u32::try_from(extension.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}
