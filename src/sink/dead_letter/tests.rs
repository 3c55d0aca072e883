//! The salvage of refused frames against [`MemorySink`] (content-based refusals) and an
//! in-memory dead-letter table.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::salvage::insert_budget;
use super::*;
use crate::codec::EncodedBatch;
use crate::record::{Batch, Level, Record};
use crate::sink::Origin;
use crate::stats::Stats;
use crate::testing::MemorySink;

const CONSTRAINT: &str = "INSERT into `db`.`logs`: bad response: Code: 469. DB::Exception: \
     Constraint `c` for table db.logs is violated at row 1. (VIOLATED_CONSTRAINT) (version 26.9.2.1)";

/// The dead-letter table: keeps letters and tokens, or refuses everything.
#[derive(Default)]
struct Letters {
    kept: Mutex<Vec<DeadLetter>>,
    tokens: Mutex<Vec<Option<String>>>,
    refuse: Mutex<Option<SinkError>>,
}

impl Letters {
    fn kept(&self) -> Vec<DeadLetter> {
        self.kept.lock().unwrap().clone()
    }
}

impl DeadLetterTable for Letters {
    fn write(
        &self,
        letters: &[DeadLetter],
        token: Option<&str>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let result = match self.refuse.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => {
                self.kept.lock().unwrap().extend_from_slice(letters);
                self.tokens.lock().unwrap().push(token.map(str::to_string));
                Ok(())
            }
        };
        std::future::ready(result)
    }
}

struct Setup {
    sink: Arc<MemorySink>,
    letters: Arc<Letters>,
    stats: Arc<Stats>,
    salvager: Salvager<MemorySink, Letters>,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

fn setup() -> Setup {
    let sink = Arc::new(MemorySink::new());
    sink.refuse_messages_containing(
        "poison",
        SinkError::Rejected {
            reason: CONSTRAINT.into(),
        },
    );
    let letters = Arc::new(Letters::default());
    let stats = Arc::new(Stats::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quarantine").join("dead-letter.jsonl");
    let salvager = Salvager::new(
        Arc::clone(&sink),
        Arc::clone(&letters),
        DeadLetterFile::new(&file),
        Arc::clone(&stats),
        "db.logs",
    );
    Setup {
        sink,
        letters,
        stats,
        salvager,
        _dir: dir,
        file,
    }
}

/// `n` rows; those at `poison` have "poison" in their message.
fn frame(n: usize, poison: &[usize]) -> EncodedBatch {
    let records = (0..n)
        .map(|i| Record {
            timestamp_ns: 1_714_564_800_000_000_000 + i as i64,
            level: Level::Info,
            service: "svc".into(),
            message: if poison.contains(&i) {
                format!("poison {i}")
            } else {
                format!("good {i}")
            },
            trace_id: String::new(),
            span_id: String::new(),
            attributes: vec![("i".into(), i.to_string())],
            otel: None,
        })
        .collect();
    EncodedBatch::encode(&Batch::new(records))
}

fn origin() -> Origin {
    Origin {
        spool: "1-00000000000000ab".into(),
        seq: 7,
        appended_unix_ms: 1_700_000_000_000,
    }
}

async fn salvage(s: &Setup, batch: &EncodedBatch, reason: &str) -> Salvaged {
    let origin = origin();
    let refused = Refused {
        batch,
        origin: &origin,
        frame: "1-00000000000000ab-7",
        reason,
    };
    let stop = CancellationToken::new();
    s.salvager.salvage_frame(refused, &stop).await
}

fn messages(records: &[Record]) -> Vec<String> {
    let mut m: Vec<String> = records.iter().map(|r| r.message.clone()).collect();
    m.sort();
    m
}

#[tokio::test]
async fn good_rows_land_and_each_bad_row_becomes_a_letter() {
    let s = setup();
    let poison = [3, 50, 99];
    let outcome = salvage(&s, &frame(100, &poison), CONSTRAINT).await;
    assert_eq!(outcome, Salvaged::Placed);

    let stored = s.sink.rows();
    assert_eq!(stored.len(), 97, "every good row once");
    assert!(stored.iter().all(|r| r.message.starts_with("good ")));
    let unique = messages(&stored);
    assert_eq!(
        unique.len(),
        unique
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );

    let letters = s.letters.kept();
    let records: Vec<serde_json::Value> = letters
        .iter()
        .map(|l| serde_json::from_str(&l.record).unwrap())
        .collect();
    let sent: Vec<&str> = records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        ["poison 3", "poison 50", "poison 99"],
        "in frame order"
    );
    assert_eq!(records[0]["attributes"]["i"], "3");
    assert_eq!(records[0]["timestamp"], "2024-05-01T12:00:00.000000003Z");
    for letter in &letters {
        assert_eq!((letter.reason, letter.code), (Reason::Constraint, 469));
        assert!(
            letter
                .error
                .starts_with("Code: 469. DB::Exception: Constraint"),
            "{}",
            letter.error
        );
        assert_eq!(
            (letter.table.as_str(), letter.frame.as_str()),
            ("db.logs", "1-00000000000000ab-7")
        );
    }
    assert_eq!(
        *s.letters.tokens.lock().unwrap(),
        [Some(format!("{}-dead", origin().token()))]
    );

    // Each bad row costs at most 2·⌈log₂ 100⌉ = 14 sub-INSERTs.
    let snapshot = s.stats.snapshot();
    let attempts = snapshot.inserts + snapshot.insert_failures;
    assert!(attempts <= 3 * 14, "{attempts} sub-INSERTs");
    assert_eq!(snapshot.rows_inserted, 97);
    assert_eq!(snapshot.rows_dead_lettered_constraint, 3);
    assert_eq!(snapshot.rows_dead_letter_file, 0);
    assert!(!s.file.exists());
}

#[tokio::test]
async fn a_replayed_salvage_sends_the_same_tokens() {
    let s = setup();
    salvage(&s, &frame(40, &[7, 8]), CONSTRAINT).await;
    let first = s.sink.tokens();
    let again = setup();
    salvage(&again, &frame(40, &[7, 8]), CONSTRAINT).await;
    assert_eq!(again.sink.tokens(), first);
    let base = origin().token();
    for token in &first {
        let token = token.as_deref().unwrap();
        assert!(token.starts_with(&format!("{base}-r")), "{token}");
    }
    assert!(first.contains(&Some(format!("{base}-r0-5"))), "{first:?}");
}

#[tokio::test]
async fn statement_refusals_quarantine_the_whole_frame_without_splitting() {
    let s = setup();
    let batch = frame(10, &[]);
    let reason =
        "INSERT into `db`.`logs`: bad response: Code: 16. DB::Exception: No such column span_id";
    match salvage(&s, &batch, reason).await {
        Salvaged::Unplaced {
            batch: rest,
            reason: why,
        } => {
            assert_eq!(rest, batch);
            assert_eq!(why, reason);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.sink.inserts(), 0);
}

#[tokio::test]
async fn an_unwritable_table_sends_the_letters_to_the_file() {
    let s = setup();
    *s.letters.refuse.lock().unwrap() = Some(SinkError::Rejected {
        reason: "Code: 60. DB::Exception: Table db.logs_rejected does not exist".into(),
    });
    assert_eq!(
        salvage(&s, &frame(20, &[0, 19]), CONSTRAINT).await,
        Salvaged::Placed
    );
    assert_eq!(s.sink.rows().len(), 18);
    let text = std::fs::read_to_string(&s.file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["reason"], "constraint");
    assert_eq!(lines[0]["code"], 469);
    assert_eq!(lines[0]["record"]["message"], "poison 0");
    assert_eq!(lines[1]["record"]["message"], "poison 19");
    let snapshot = s.stats.snapshot();
    assert_eq!(
        (
            snapshot.rows_dead_lettered_constraint,
            snapshot.rows_dead_letter_file
        ),
        (2, 2)
    );
}

#[tokio::test]
async fn letters_with_no_place_go_to_the_quarantine_alone() {
    let s = setup();
    *s.letters.refuse.lock().unwrap() = Some(SinkError::Rejected {
        reason: "Code: 497. DB::Exception: Not enough privileges".into(),
    });
    // The file's directory is a regular file: the append fails.
    std::fs::write(s.file.parent().unwrap(), b"not a directory").unwrap();
    match salvage(&s, &frame(8, &[5]), CONSTRAINT).await {
        Salvaged::Unplaced { batch, reason } => {
            let rest = batch.decode().unwrap().records;
            assert_eq!(messages(&rest), ["poison 5"]);
            assert!(reason.contains("dead-letter file"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.sink.rows().len(), 7);
    assert_eq!(s.stats.snapshot().rows_dead_lettered_constraint, 0);
}

#[tokio::test]
async fn a_frame_of_mostly_bad_rows_stops_at_the_budget() {
    let s = setup();
    let n = 1000;
    let poison: Vec<usize> = (0..n).filter(|i| i % 3 != 0).collect();
    let outcome = salvage(&s, &frame(n, &poison), CONSTRAINT).await;
    let Salvaged::Unplaced { batch, .. } = outcome else {
        panic!("{outcome:?}");
    };
    let rest = batch.decode().unwrap().records;
    let snapshot = s.stats.snapshot();
    assert!(
        (snapshot.inserts + snapshot.insert_failures) as usize <= insert_budget(n),
        "{snapshot:?}"
    );
    // Every row is in exactly one place.
    let mut all = messages(&s.sink.rows());
    all.extend(s.letters.kept().iter().map(|l| {
        let record: serde_json::Value = serde_json::from_str(&l.record).unwrap();
        record["message"].as_str().unwrap().to_string()
    }));
    all.extend(messages(&rest));
    all.sort();
    let expected = messages(&frame(n, &poison).decode().unwrap().records);
    assert_eq!(all, expected);
    assert!(!rest.is_empty() && s.letters.kept().len() >= MAX_ISOLATED_ROWS);
}

#[tokio::test]
async fn an_outage_during_bisection_is_waited_out_or_stopped() {
    let s = setup();
    s.sink.set_down(Some("connection refused"));
    let sink = Arc::clone(&s.sink);
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.set_down(None);
    });
    assert_eq!(
        salvage(&s, &frame(6, &[2]), CONSTRAINT).await,
        Salvaged::Placed
    );
    back.await.unwrap();
    assert_eq!(s.sink.rows().len(), 5);
    assert!(s.stats.snapshot().insert_failures >= 2);

    let s = setup();
    s.sink.set_down(Some("connection refused"));
    let origin = origin();
    let batch = frame(6, &[2]);
    let refused = Refused {
        batch: &batch,
        origin: &origin,
        frame: "f",
        reason: CONSTRAINT,
    };
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stopper.cancel();
    });
    assert_eq!(
        s.salvager.salvage_frame(refused, &stop).await,
        Salvaged::Stopped
    );
    assert!(s.letters.kept().is_empty());
}

#[test]
fn refusals_are_classified_and_trimmed() {
    let r = Refusal::parse(CONSTRAINT);
    assert_eq!(
        (r.code, r.reason(), r.is_row_level()),
        (Some(469), Reason::Constraint, true)
    );
    assert!(r.error.starts_with("Code: 469."));
    let old =
        Refusal::parse("bad response: Code: 53, e.displayText() = DB::Exception: Type mismatch");
    assert_eq!(
        (old.reason(), old.is_row_level()),
        (Reason::TypeMismatch, true)
    );
    assert_eq!(Refusal::parse("Code: 131. x").reason(), Reason::TooLarge);
    assert_eq!(
        Refusal::parse("Code: 395. throwIf").reason(),
        Reason::Constraint
    );
    let custom = Refusal::parse("a queued batch is damaged");
    assert_eq!((custom.code, custom.reason()), (None, Reason::Other));
    for code in [16, 60, 164, 497, 33] {
        assert!(
            !Refusal::parse(&format!("Code: {code}. x")).is_row_level(),
            "{code}"
        );
    }
    let long = Refusal::parse(&format!("Code: 469. {}", "é".repeat(2000)));
    assert!(long.error.len() <= super::MAX_ERROR_BYTES + '…'.len_utf8());
}

#[test]
fn the_ddl_fits_old_and_new_servers() {
    let old = table::create_table_sql("logs", "logs", false);
    assert!(
        old.starts_with("CREATE TABLE IF NOT EXISTS `logs`.`logs_rejected` ("),
        "{old}"
    );
    assert!(!old.contains("SETTINGS"), "{old}");
    let new = table::create_table_sql("logs", "logs", true);
    assert!(
        new.ends_with("SETTINGS non_replicated_deduplication_window = 1000"),
        "{new}"
    );
}
