//! Pins: an INSERT with a deduplication token that failed on a server honouring
//! tokens is retried on that server only, for up to [`Timing::pin_limit`] (see the
//! delivery guarantee in the parent module).

use std::collections::HashMap;
use std::sync::{MutexGuard, PoisonError};

use tokio::time::Instant;

use super::{EndpointSink, Endpoints, Pinned};

impl<S: EndpointSink> Endpoints<S> {
    fn lock_pins(&self) -> MutexGuard<'_, HashMap<String, Pinned>> {
        self.pins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn pin(&self, token: &str, endpoint: usize) {
        let mut pins = self.lock_pins();
        // Pins of INSERTs the batcher gave up on are never unpinned: forget old ones.
        let keep = self.timing.pin_limit * 2;
        pins.retain(|_, p| p.since.elapsed() < keep);
        pins.entry(token.to_string()).or_insert(Pinned {
            endpoint,
            since: Instant::now(),
        });
    }

    pub(super) fn unpin(&self, token: Option<&str>) {
        if let Some(token) = token {
            self.lock_pins().remove(token);
        }
    }

    /// The endpoint an INSERT with `token` must be retried on, unless the pin expired.
    pub(super) fn pinned(&self, token: &str) -> Option<usize> {
        let mut pins = self.lock_pins();
        let pin = *pins.get(token)?;
        let limit = self.timing.pin_limit;
        if pin.since.elapsed() < limit || self.slots[pin.endpoint].status.is_up() {
            return Some(pin.endpoint);
        }
        pins.remove(token);
        tracing::warn!(
            endpoint = %self.slots[pin.endpoint].status.url,
            token,
            "ClickHouse endpoint {} has been down for over {limit:?}: the INSERT pinned to \
             it moves to another endpoint; if its earlier attempt did commit, its rows are \
             stored twice",
            self.slots[pin.endpoint].status.url
        );
        None
    }
}
