//! The health side of the endpoint set: each endpoint's probe (connect or ping under
//! backoff while it is down) and the set's ping while none is up.

use std::sync::{Arc, PoisonError};

use tokio_util::sync::CancellationToken;

use super::{EndpointSink, Endpoints};
use crate::sink::SinkError;

impl<S: EndpointSink> Endpoints<S> {
    /// Pings every connected endpoint while none is up (the probes may be in a long
    /// backoff); the first to answer is up again.
    pub(super) async fn ping_all(&self) -> Result<(), SinkError> {
        if self.up_count() > 0 {
            return Ok(());
        }
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(sink) = slot.sink() else { continue };
            if sink.ping().await.is_ok() {
                self.mark_up(i, &sink.version());
                return Ok(());
            }
        }
        Err(self.all_down())
    }

    /// Endpoint `i`'s probe: waits until it is down, then connects or pings it under
    /// backoff until it answers, and marks it up.
    pub(super) async fn probe(self: Arc<Self>, i: usize, stop: CancellationToken) {
        let slot = &self.slots[i];
        loop {
            while slot.status.is_up() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = slot.went_down.notified() => {}
                }
            }
            let mut backoff = self.timing.probe.clone();
            while !slot.status.is_up() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.revive(i).await {
                    Ok(version) => self.mark_up(i, &version),
                    Err(error) => {
                        tracing::debug!(endpoint = %slot.status.url, error = %error, "still down");
                        slot.status.lock().reason = Some(error.to_string());
                    }
                }
            }
        }
    }

    /// Connects endpoint `i` if it never was, else pings it; its version on success.
    async fn revive(&self, i: usize) -> Result<String, SinkError> {
        let slot = &self.slots[i];
        if let Some(sink) = slot.sink() {
            sink.ping().await?;
            return Ok(sink.version());
        }
        let sink = (slot.connect)().await?;
        let version = sink.version();
        tracing::info!(
            endpoint = %slot.status.url,
            version = %version,
            "connected to ClickHouse endpoint {} (it was down at start-up)",
            slot.status.url
        );
        *slot.sink.write().unwrap_or_else(PoisonError::into_inner) = Some(sink);
        Ok(version)
    }
}
