//! How replayed frames are cut (`cut.rs`): as the recorded range, under its token;
//! without a token when the range cannot be gathered; and what goes to the range log.

use super::*;
use crate::sink::dedup::{FrameRange, RangeLog};

/// What the batcher recorded: ("sending" | "splitting", first, last).
#[derive(Default)]
struct Recorded(Mutex<Vec<(&'static str, u64, u64)>>);

impl RangeLog for Recorded {
    fn sending(&self, range: FrameRange) {
        self.0
            .lock()
            .unwrap()
            .push(("sending", range.first, range.last));
    }
    fn splitting(&self, range: FrameRange) {
        self.0
            .lock()
            .unwrap()
            .push(("splitting", range.first, range.last));
    }
}

/// Recorded range `first..=last`, its last frame appended at 999 ms.
fn range(first: u64, last: u64) -> FrameRange {
    FrameRange {
        first,
        last,
        last_appended_unix_ms: 999,
    }
}

/// Frame `seq` of spool `sp`, appended at `1000 + seq` ms.
fn origin(seq: u64) -> Origin {
    Origin {
        spool: "sp".into(),
        seq,
        appended_unix_ms: 1000 + seq,
    }
}

/// A batcher that cuts at 2 rows (1-row frames) or 20 ms, recording ranges.
fn harness(sink: &Arc<FakeSink>) -> (Harness, Arc<Recorded>) {
    let h = start(cfg(2, 20), u64::MAX, sink);
    let log = Arc::new(Recorded::default());
    h.handle.record_ranges_in(log.clone());
    (h, log)
}

/// Submits one-row frames, `(seq, recorded range)`, and returns their receipts.
async fn submit(h: &Harness, frames: &[(u64, Option<FrameRange>)]) -> Vec<Receipt> {
    let mut receipts = Vec::new();
    for &(seq, range) in frames {
        let receipt = h.handle.submit_replayed(batch(1), origin(seq), range);
        receipts.push(within(1_000, receipt).await.unwrap());
    }
    receipts
}

async fn all_ok(receipts: Vec<Receipt>, ms: u64) {
    for receipt in receipts {
        within(ms, receipt).await.unwrap();
    }
}

fn some(token: &str) -> Option<String> {
    Some(token.to_string())
}

#[tokio::test]
async fn a_replayed_range_is_one_insert_under_its_recorded_token() {
    let sink = FakeSink::new();
    let (h, log) = harness(&sink);
    let r = range(5, 7);
    // 6..=7 are what is left of 5..=7 (5 was acknowledged): still that range's token,
    // although it exceeds max_rows. Then frames never sent, cut freely.
    let receipts = submit(
        &h,
        &[(6, Some(r)), (7, Some(r)), (8, None), (9, None), (10, None)],
    )
    .await;
    all_ok(receipts, 2_000).await;
    assert_eq!(sink.inserts(), vec![2, 2, 1]);
    assert_eq!(
        sink.tokens(),
        vec![
            some("sp-5-7-999"),
            some("sp-8-9-1009"),
            some("sp-10-10-1010")
        ]
    );
    // Only the new ranges are recorded; 5..=7 is in the log already.
    assert_eq!(
        *log.0.lock().unwrap(),
        vec![("sending", 8, 9), ("sending", 10, 10)]
    );
    h.stop().await;
}

#[tokio::test]
async fn a_range_waits_for_its_last_frame() {
    let sink = FakeSink::new();
    let (h, _) = harness(&sink);
    let r = range(1, 3);
    let mut receipts = submit(&h, &[(1, Some(r)), (2, Some(r))]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        sink.inserts().is_empty(),
        "cut before the range was gathered"
    );
    receipts.extend(submit(&h, &[(3, Some(r))]).await);
    all_ok(receipts, 1_000).await;
    assert_eq!(
        (sink.inserts(), sink.tokens()),
        (vec![3], vec![some("sp-1-3-999")])
    );
    h.stop().await;
}

#[tokio::test]
async fn a_range_that_cannot_be_gathered_goes_without_a_token() {
    let sink = FakeSink::new();
    let (h, log) = harness(&sink);
    let r = range(1, 3);
    // Frame 3 does not come (lost to quarantine, say): after the stall time 1..=2 go
    // token-less, and so does 3 should it come after all.
    let receipts = submit(&h, &[(1, Some(r)), (2, Some(r))]).await;
    let waited = Instant::now();
    all_ok(receipts, 2 * cut::REPLAY_STALL.as_millis() as u64).await;
    assert!(waited.elapsed() >= cut::REPLAY_STALL - Duration::from_millis(100));
    all_ok(submit(&h, &[(3, Some(r))]).await, 1_000).await;
    assert_eq!(
        (sink.inserts(), sink.tokens()),
        (vec![2, 1], vec![None, None])
    );
    assert!(
        log.0.lock().unwrap().is_empty(),
        "nothing recorded without a token"
    );

    // At a stop an incomplete range goes at once, without a token.
    let sink = FakeSink::new();
    let (h, _) = harness(&sink);
    let receipts = submit(&h, &[(4, Some(range(4, 9)))]).await;
    h.handle.close();
    all_ok(receipts, 1_000).await;
    assert_eq!(sink.tokens(), vec![None]);
    h.stop().await;
}

#[tokio::test]
async fn a_refused_range_is_recorded_as_split_and_retried_frame_by_frame() {
    let sink = FakeSink::new();
    sink.then(Err(SinkError::Rejected {
        reason: "Code: 27".into(),
    }));
    let (h, log) = harness(&sink);
    let receipts = submit(&h, &[(1, None), (2, None)]).await;
    for receipt in receipts {
        let _ = within(2_000, receipt).await;
    }
    assert_eq!(
        sink.tokens(),
        vec![
            some("sp-1-2-1002"),
            some("sp-1-1-1001"),
            some("sp-2-2-1002")
        ]
    );
    assert_eq!(
        *log.0.lock().unwrap(),
        vec![("sending", 1, 2), ("splitting", 1, 2)]
    );
    h.stop().await;
}
