//! Which deduplication token each INSERT attempt carries.

use super::*;

/// A one-row batch from frame `seq` of `spool`, or (`None`) from the HTTP path.
type Source = Option<(&'static str, u64)>;

/// Submits one-row batches in order to a batcher that cuts one INSERT of all of them
/// (`max_rows` = their number), with `script` as the sink's first answers; returns
/// the token of every INSERT attempt.
async fn tokens_of(from: &[Source], script: Vec<Result<(), SinkError>>) -> Vec<Option<String>> {
    let sink = FakeSink::new();
    for answer in script {
        sink.then(answer);
    }
    let h = start(cfg(from.len(), 60_000), 5_000, &sink);
    let mut receipts = Vec::new();
    for origin in from {
        let receipt = match origin {
            Some((spool, seq)) => {
                let origin = Origin {
                    spool: (*spool).into(),
                    seq: *seq,
                    appended_unix_ms: 1000 + seq,
                };
                h.handle.submit_from(batch(1), origin).await.unwrap()
            }
            None => h.handle.try_submit(batch(1)).unwrap(),
        };
        receipts.push(receipt);
    }
    for receipt in receipts {
        // Outcomes are checked by the other tests; here only the tokens matter.
        let _ = within(3_000, receipt).await;
    }
    h.stop().await;
    sink.tokens()
}

fn some(token: &str) -> Option<String> {
    Some(token.to_string())
}

#[tokio::test]
async fn contiguous_frames_of_one_spool_share_a_range_token() {
    let tokens = tokens_of(&[Some(("sp", 5)), Some(("sp", 6)), Some(("sp", 7))], vec![]).await;
    assert_eq!(tokens, vec![some("sp-5-7-1007")]);
    let tokens = tokens_of(&[Some(("sp", 9))], vec![]).await;
    assert_eq!(tokens, vec![some("sp-9-9-1009")]);
}

#[tokio::test]
async fn gaps_mixed_spools_and_batches_without_origin_get_no_token() {
    for (case, from) in [
        ("gap", [Some(("sp", 5)), Some(("sp", 7))]),
        ("descending", [Some(("sp", 6)), Some(("sp", 5))]),
        ("two spools", [Some(("a", 5)), Some(("b", 6))]),
        ("one without origin", [Some(("sp", 5)), None]),
        ("none with origin", [None, None]),
    ] {
        assert_eq!(tokens_of(&from, vec![]).await, vec![None], "{case}");
    }
}

#[tokio::test]
async fn a_rejected_merged_insert_retries_each_frame_with_its_own_token() {
    let rejected = || {
        Err(SinkError::Rejected {
            reason: "Code: 27 cannot parse".into(),
        })
    };
    let tokens = tokens_of(
        &[Some(("sp", 5)), Some(("sp", 6)), Some(("sp", 7))],
        vec![rejected(), Ok(()), rejected(), Ok(())],
    )
    .await;
    assert_eq!(
        tokens,
        vec![
            some("sp-5-7-1007"),
            some("sp-5-5-1005"),
            some("sp-6-6-1006"),
            some("sp-7-7-1007")
        ]
    );
    // A batch without origin is retried alone without a token, even after a merged
    // INSERT that had none either.
    let tokens = tokens_of(&[Some(("sp", 5)), None], vec![rejected(), Ok(()), Ok(())]).await;
    assert_eq!(tokens, vec![None, some("sp-5-5-1005"), None]);
}

#[tokio::test]
async fn every_transient_retry_sends_the_same_token() {
    let down = || {
        Err(SinkError::Unavailable {
            reason: "timed out".into(),
        })
    };
    let tokens = tokens_of(
        &[Some(("sp", 5)), Some(("sp", 6))],
        vec![down(), down(), Ok(())],
    )
    .await;
    assert_eq!(tokens, vec![some("sp-5-6-1006"); 3]);
    // The per-frame retries of a rejected merged INSERT keep theirs too.
    let tokens = tokens_of(
        &[Some(("sp", 5)), Some(("sp", 6))],
        vec![
            Err(SinkError::Rejected {
                reason: "Code: 53".into(),
            }),
            down(),
            Ok(()),
            Ok(()),
        ],
    )
    .await;
    assert_eq!(
        tokens,
        vec![
            some("sp-5-6-1006"),
            some("sp-5-5-1005"),
            some("sp-5-5-1005"),
            some("sp-6-6-1006")
        ]
    );
}
