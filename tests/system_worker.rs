//! System tests of the workers under systemd ("systemd is the master"): load
//! spread over the instances, restarts under load, the watchdog (frozen worker,
//! stuck flusher), the memory-limit self-restart, `WORKER_ID` in the journal, and
//! stopping the target / socket activation. Each scenario boots its own container
//! (harness: `tests/system/`, recipe: SYSTEMD-TESTS.md; a boot takes ~0.5 s) with
//! its own ClickHouse, and compares the rows in ClickHouse with the records the
//! load generator got acknowledged.
//!
//! Needs root, `systemd-nspawn` (`scripts/install-deps`) and Debian's ClickHouse;
//! fails loudly without them. Run:
//! `cargo test --features test-support --test system_worker -- --nocapture`.
//! Every scenario prints its numbers as `[worker:<scenario>] …` lines.

mod system;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use system::cluster::Cluster;
use system::{LoadReport, LoadSpec, Pinned, SystemdContainer};

const WORKERS: usize = 3;

/// This file's requests and checks on the shared [`Cluster`] (ClickHouse,
/// container with `WORKERS` instances, load runtime).
trait WorkerChecks {
    /// One request on a fresh connection; (status, body, time to the answer).
    fn post_one(&self, service: &str, records: usize) -> (u16, String, Duration);
    /// Per instance: `/stats` `requests` now.
    fn requests(&self) -> BTreeMap<String, u64>;
}

impl WorkerChecks for Cluster {
    fn post_one(&self, service: &str, records: usize) -> (u16, String, Duration) {
        let url = format!("{}/api/v1/logs", self.c().base_url());
        let batch: Vec<serde_json::Value> = (0..records)
            .map(|i| serde_json::json!({"service": service, "message": format!("one {i}")}))
            .collect();
        let body = serde_json::to_vec(&batch).unwrap();
        self.rt.block_on(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let req = http::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let started = Instant::now();
            let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
                .await
                .expect("no answer within 30 s")
                .expect("request failed");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                String::from_utf8_lossy(&body).into_owned(),
                started.elapsed(),
            )
        })
    }

    fn requests(&self) -> BTreeMap<String, u64> {
        self.c().spread("requests")
    }
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(i, n)| (i.clone(), n.saturating_sub(*before.get(i).unwrap_or(&0))))
        .collect()
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `(µs since the epoch, MESSAGE)` of journal entries.
fn messages(entries: &[serde_json::Value]) -> Vec<(u64, String)> {
    entries
        .iter()
        .filter_map(|e| {
            let ts = e["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
            // MESSAGE is an array of bytes when it is not valid UTF-8.
            let msg = e["MESSAGE"].as_str()?.to_string();
            Some((ts, msg))
        })
        .collect()
}

/// Journal entries of one instance (its own and systemd's about it) since `since_us`.
fn instance_entries(c: &SystemdContainer, instance: &str, since_us: u64) -> Vec<serde_json::Value> {
    let unit = format!("zero-logs@{instance}.service");
    c.journal_query(&["-u", &unit])
        .into_iter()
        .filter(|e| {
            e["__REALTIME_TIMESTAMP"]
                .as_str()
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|t| t >= since_us)
        })
        .collect()
}

/// `(µs, MESSAGE)` of one instance's journal since `since_us`.
fn instance_journal(c: &SystemdContainer, instance: &str, since_us: u64) -> Vec<(u64, String)> {
    messages(&instance_entries(c, instance, since_us))
}

/// For each "drained; exiting" of the worker: ms until systemd's next
/// "Deactivated successfully" (the process's exit, plus the ExecStopPost= shell).
fn drain_to_exit_ms(journal: &[(u64, String)]) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, (ts, m)) in journal.iter().enumerate() {
        if m == "drained; exiting" {
            if let Some((end, _)) = journal[i..]
                .iter()
                .find(|(_, m)| m.ends_with("Deactivated successfully."))
            {
                out.push((end - ts) / 1000);
            }
        }
    }
    out
}

fn first_with(journal: &[(u64, String)], needle: &str) -> Option<u64> {
    journal
        .iter()
        .find(|(_, m)| m.contains(needle))
        .map(|(ts, _)| *ts)
}

fn show_journal(journal: &[(u64, String)], since_us: u64) -> String {
    journal
        .iter()
        .map(|(ts, m)| format!("  +{:>6} ms  {m}", (*ts as i64 - since_us as i64) / 1000))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One poll of a unit's restart-relevant properties.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitSnap {
    active: String,
    sub: String,
    main_pid: u32,
    n_restarts: u32,
    result: String,
    exec_main_code: String,
    exec_main_status: String,
}

impl UnitSnap {
    fn of(c: &SystemdContainer, instance: &str) -> UnitSnap {
        let p = c.unit_properties(
            &format!("zero-logs@{instance}.service"),
            &[
                "ActiveState",
                "SubState",
                "MainPID",
                "NRestarts",
                "Result",
                "ExecMainCode",
                "ExecMainStatus",
            ],
        );
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        UnitSnap {
            active: get("ActiveState"),
            sub: get("SubState"),
            main_pid: get("MainPID").parse().unwrap_or(0),
            n_restarts: get("NRestarts").parse().unwrap_or(0),
            result: get("Result"),
            exec_main_code: get("ExecMainCode"),
            exec_main_status: get("ExecMainStatus"),
        }
    }

    fn running(&self) -> bool {
        self.active == "active" && self.sub == "running"
    }

    fn brief(&self) -> String {
        format!(
            "{}/{} pid {} NRestarts {} Result={} ExecMainCode={} ExecMainStatus={}",
            self.active,
            self.sub,
            self.main_pid,
            self.n_restarts,
            self.result,
            self.exec_main_code,
            self.exec_main_status
        )
    }
}

/// How an instance got replaced: every distinct state seen while polling.
struct Replacement {
    trace: Vec<(Duration, UnitSnap)>,
    last: UnitSnap,
    took: Duration,
}

impl Replacement {
    fn show(&self) -> String {
        self.trace
            .iter()
            .map(|(t, s)| format!("  +{:>6} ms  {}", t.as_millis(), s.brief()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A state seen between the old process's end and the new one's start
    /// (`auto-restart`), if the polling caught one.
    fn auto_restart(&self) -> Option<&UnitSnap> {
        self.trace
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.sub == "auto-restart")
    }
}

/// Polls `zero-logs@instance` (~every 50 ms) until it runs a process other than
/// `old_pid` (and, with `auto`, `NRestarts` passed `old_restarts`); records each
/// distinct state.
fn watch_replacement(
    c: &SystemdContainer,
    instance: &str,
    old_pid: u32,
    old_restarts: u32,
    auto: bool,
    within: Duration,
) -> Replacement {
    let started = Instant::now();
    let mut trace: Vec<(Duration, UnitSnap)> = Vec::new();
    loop {
        let snap = UnitSnap::of(c, instance);
        if trace.last().map(|(_, s)| s) != Some(&snap) {
            trace.push((started.elapsed(), snap.clone()));
        }
        let replaced = snap.running()
            && snap.main_pid != 0
            && snap.main_pid != old_pid
            && (!auto || snap.n_restarts > old_restarts);
        if replaced {
            return Replacement {
                trace,
                last: snap,
                took: started.elapsed(),
            };
        }
        if started.elapsed() > within {
            let r = Replacement {
                trace,
                last: snap,
                took: started.elapsed(),
            };
            panic!(
                "zero-logs@{instance} (pid {old_pid}) was not replaced within {within:?}; states:\n{}",
                r.show()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `POST path` to one instance's test hook ([`SystemdContainer::debug_post`]);
/// the answer must be 200 with a body starting with `expect`. An unexpected
/// answer is printed (with its headers) and the hook tried again, at most 3 times.
fn hook(
    c: &SystemdContainer,
    instance: &str,
    path: &str,
    expect: &str,
) -> system::container::DebugPost {
    for attempt in 1..=3 {
        let answer = c
            .debug_post(instance, path)
            .unwrap_or_else(|e| panic!("{path} on instance {instance}: {e}"));
        if answer.status == 200 && answer.body.starts_with(expect) {
            return answer;
        }
        // The router's fallback is gRPC's: "unimplemented" means no such route.
        assert!(
            !answer.headers.iter().any(|h| h == "grpc-status: 12"),
            "the worker in the container has no {path} route: it was built without the \
             `test-hooks` feature (another cargo command rewrote target/debug/zero-logs \
             before this test process snapshotted it?); answer: {answer:?}"
        );
        eprintln!(
            "[worker] ANOMALY: {path} on instance {instance}, attempt {attempt}: expected 200 {expect:?}…, got {answer:?}"
        );
    }
    panic!("{path} on instance {instance}: no expected answer in 3 attempts");
}

fn assert_nothing_lost(f: &Cluster, scenario: &str, reports: &[(&str, &LoadReport)]) {
    for (service, report) in reports {
        let stored = f.wait_rows(service, report.acknowledged_records);
        eprintln!(
            "[worker:{scenario}] {service}: acknowledged {} records, stored {stored}",
            report.acknowledged_records
        );
        assert_eq!(
            stored,
            report.acknowledged_records,
            "{scenario}/{service}: rows in ClickHouse vs records acknowledged; {}",
            report.summary()
        );
    }
}

/// Scenario 2 (spread) and 6 (WORKER_ID in the journal), one container.
#[test]
fn load_spreads_over_every_instance_and_journal_has_worker_ids() {
    let f = Cluster::start(WORKERS, &[]);
    let c = f.c();

    // The unit's seccomp filter (`~@resources`) lets `sched_setattr` through, so
    // every instance runs with the default 100 µs slice (src/sched.rs). The container
    // shares this kernel: where it keeps no per-thread slice (before 6.12), this
    // thread reads 0 too, and so do the workers.
    let slices = c.spread("cpu_slice_us");
    let kernel_keeps_slices = !zero_logs::sched::thread_slice().unwrap().is_zero();
    let expected = if kernel_keeps_slices {
        zero_logs::sched::DEFAULT_SLICE.as_micros() as u64
    } else {
        0
    };
    assert!(
        slices.len() == WORKERS && slices.values().all(|&us| us == expected),
        "cpu_slice_us per instance {slices:?}, expected {expected} everywhere"
    );

    // Fresh connection per request.
    let before = f.requests();
    let run = f.load(LoadSpec {
        duration: Duration::from_secs(3),
        ..LoadSpec::fresh("spread-fresh", 12)
    });
    let fresh = f.rt.block_on(run.wait());
    let fresh_spread = delta(&f.requests(), &before);
    eprintln!(
        "[worker:spread] fresh connections: {}\n[worker:spread] fresh connections, requests per instance: {fresh_spread:?}",
        fresh.summary()
    );
    fresh.assert_no_failures();
    assert_eq!(fresh_spread.len(), WORKERS, "{fresh_spread:?}");
    assert_eq!(
        fresh_spread.values().sum::<u64>(),
        fresh.requests,
        "/stats requests vs requests sent"
    );
    for (instance, n) in &fresh_spread {
        assert!(
            *n > 0,
            "instance {instance} served no request out of {} on fresh connections: {fresh_spread:?}",
            fresh.requests
        );
    }

    // Keep-alive: one connection per client for the whole run, so the spread is
    // that of the (24) connections' accepts.
    let before = f.requests();
    let run = f.load(LoadSpec {
        duration: Duration::from_secs(3),
        fresh_connections: false,
        ..LoadSpec::fresh("spread-keepalive", 24)
    });
    let keepalive = f.rt.block_on(run.wait());
    let keepalive_spread = delta(&f.requests(), &before);
    eprintln!(
        "[worker:spread] keep-alive: {}\n[worker:spread] keep-alive, requests per instance: {keepalive_spread:?}",
        keepalive.summary()
    );
    keepalive.assert_no_failures();
    assert_eq!(
        keepalive_spread.values().sum::<u64>(),
        keepalive.requests,
        "/stats requests vs requests sent"
    );
    // Each worker pauses after an accept while it holds connections
    // (src/serve.rs), so the 24 long-lived connections spread too.
    for (instance, n) in &keepalive_spread {
        assert!(
            *n > 0,
            "instance {instance} got none of the 24 keep-alive connections: {keepalive_spread:?}"
        );
    }
    assert_nothing_lost(
        &f,
        "spread",
        &[("spread-fresh", &fresh), ("spread-keepalive", &keepalive)],
    );

    // Scenario 6: every instance's own entries carry WORKER_ID = its instance.
    let all = c.journal_query(&["-u", "zero-logs@*"]);
    let mut own: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new(); // (with id, without, mismatched)
    let mut wrong = Vec::new();
    let mut worker2 = Vec::new();
    for e in &all {
        let Some(unit) = e["_SYSTEMD_UNIT"].as_str() else {
            continue;
        };
        let Some(instance) = unit
            .strip_prefix("zero-logs@")
            .and_then(|u| u.strip_suffix(".service"))
        else {
            // PID 1's entries about the units (UNIT=…) carry no WORKER_ID.
            continue;
        };
        let entry = own.entry(instance.to_string()).or_default();
        match e["WORKER_ID"].as_str() {
            Some(id) if id == instance => {
                entry.0 += 1;
                if id == "2" {
                    worker2.push(e["__CURSOR"].as_str().unwrap_or_default().to_string());
                }
            }
            Some(id) => {
                entry.2 += 1;
                wrong.push(format!("{unit}: WORKER_ID={id}: {}", e["MESSAGE"]));
            }
            None => {
                entry.1 += 1;
                // Lines a worker writes to stdout/stderr (not its native journal
                // logging) have no WORKER_ID; there should be none.
                wrong.push(format!(
                    "{unit} ({}): no WORKER_ID: {}",
                    e["_TRANSPORT"], e["MESSAGE"]
                ));
            }
        }
    }
    eprintln!(
        "[worker:journal] {} entries for zero-logs@*; per instance (with matching WORKER_ID, without, mismatched): {own:?}",
        all.len()
    );
    assert_eq!(own.len(), WORKERS, "{own:?}");
    assert!(own.values().all(|(ok, _, _)| *ok > 0), "{own:?}");
    assert!(
        wrong.is_empty(),
        "journal entries without their own WORKER_ID:\n{}",
        wrong.join("\n")
    );

    let filtered = c.journal_query(&["-u", "zero-logs@*", "WORKER_ID=2"]);
    let strays: Vec<String> = filtered
        .iter()
        .filter(|e| {
            e["WORKER_ID"].as_str() != Some("2")
                || e["_SYSTEMD_UNIT"].as_str() != Some("zero-logs@2.service")
        })
        .map(|e| format!("{} {} {}", e["_SYSTEMD_UNIT"], e["WORKER_ID"], e["MESSAGE"]))
        .collect();
    let cursors: Vec<&str> = filtered
        .iter()
        .filter_map(|e| e["__CURSOR"].as_str())
        .collect();
    let missing = worker2
        .iter()
        .filter(|cur| !cursors.contains(&cur.as_str()))
        .count();
    eprintln!(
        "[worker:journal] `journalctl -u 'zero-logs@*' WORKER_ID=2`: {} entries, {} of another instance or unit, {} of instance 2's entries missing",
        filtered.len(),
        strays.len(),
        missing
    );
    assert!(
        strays.is_empty(),
        "WORKER_ID=2 returned entries of other instances:\n{}",
        strays.join("\n")
    );
    assert!(!filtered.is_empty());
    assert_eq!(missing, 0, "WORKER_ID=2 missed entries of instance 2");
    f.done("spread+journal");
}

/// Scenario 3: `systemctl restart zero-logs@2`, then every instance one by one,
/// under continuous load.
#[test]
fn restarts_one_by_one_under_load_fail_nothing_and_lose_nothing() {
    let f = Cluster::start(WORKERS, &[]);
    let c = f.c();
    let since = now_us();
    let fresh = f.load(LoadSpec::fresh("restart-fresh", 8));
    let keepalive = f.load(LoadSpec {
        fresh_connections: false,
        ..LoadSpec::fresh("restart-keepalive", 4)
    });
    let load_started = fresh.started();
    std::thread::sleep(Duration::from_millis(700));

    let mut timings = Vec::new();
    let mut order = vec!["2".to_string()];
    order.extend((1..=WORKERS).map(|i| i.to_string()));
    for instance in &order {
        let before = c.instances();
        let old = before[instance].clone();
        let started = Instant::now();
        let at = started.duration_since(load_started);
        c.systemctl_ok(&["restart", &format!("zero-logs@{instance}.service")]);
        let returned = started.elapsed();
        let r = watch_replacement(
            c,
            instance,
            old.main_pid,
            old.n_restarts,
            false,
            Duration::from_secs(30),
        );
        let after = c.instances();
        assert_ne!(after[instance].main_pid, old.main_pid);
        // The others kept their processes.
        for (i, s) in &before {
            if i != instance {
                assert_eq!(after[i].main_pid, s.main_pid, "instance {i} changed too");
            }
        }
        timings.push(format!(
            "@{instance} at load +{} ms: pid {} -> {}, `systemctl restart` returned after {} ms, running after {} ms, NRestarts {}",
            at.as_millis(),
            old.main_pid,
            r.last.main_pid,
            returned.as_millis(),
            (returned + r.took).as_millis(),
            r.last.n_restarts
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fresh = f.stop(fresh);
    let keepalive = f.stop(keepalive);

    // Probe (reported, not asserted): connections the workers accepted before
    // their client sent anything, when one of those workers restarts. The worker
    // took them off the shared backlog, so no other worker can serve them; the
    // drain closes them (about a third: those @2 held). Closing a connection that
    // stayed silent is fair; the same path also drops connections whose request
    // was already on its way (the failures the loads above can show).
    let idle_conns = 12;
    let mut idle: Vec<Pinned> = (0..idle_conns)
        .map(|_| Pinned::connect(c.port()).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    c.systemctl_ok(&["restart", "zero-logs@2.service"]);
    let probe_body = r#"[{"service":"restart-idle-probe","message":"first byte after a restart"}]"#;
    let mut idle_outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for conn in &mut idle {
        conn.set_timeout(Duration::from_secs(5));
        let outcome = match conn.request("POST", "/api/v1/logs", Some(probe_body)) {
            Ok(a) => format!("HTTP {}", a.status),
            Err(e) if e.contains("closed") => "closed without an answer".into(),
            Err(e) if e.contains("ConnectionReset") || e.contains("Broken pipe") => "reset".into(),
            Err(e) => e,
        };
        *idle_outcomes.entry(outcome).or_default() += 1;
    }
    let probe_acked = idle_outcomes.get("HTTP 202").copied().unwrap_or(0);
    eprintln!(
        "[worker:restart] probe: {idle_conns} connections opened, first byte sent 300 ms later, \
         after `systemctl restart zero-logs@2`: {idle_outcomes:?}"
    );
    assert_eq!(f.wait_rows("restart-idle-probe", probe_acked), probe_acked);

    eprintln!("[worker:restart] {}", timings.join("\n[worker:restart] "));
    let gaps: BTreeMap<String, Vec<u64>> = (1..=WORKERS)
        .map(|i| {
            let i = i.to_string();
            let gaps = drain_to_exit_ms(&instance_journal(c, &i, since));
            (i, gaps)
        })
        .collect();
    eprintln!(
        "[worker:restart] \"drained; exiting\" -> \"Deactivated successfully\" (ms): {gaps:?}"
    );
    eprintln!("[worker:restart] fresh connections: {}", fresh.summary());
    eprintln!(
        "[worker:restart] fresh connections, acknowledged per 0.5 s: {}",
        fresh.timeline()
    );
    eprintln!("[worker:restart] keep-alive: {}", keepalive.summary());
    // Both must be complete in ClickHouse whatever failed: a failed request was
    // never acknowledged, and nothing acknowledged may be missing.
    assert_nothing_lost(
        &f,
        "restart",
        &[("restart-fresh", &fresh), ("restart-keepalive", &keepalive)],
    );
    // Keep-alive clients can lose the HTTP/1.1 race with a draining worker that
    // closes their idle connection just as they send the next request
    // (`IncompleteMessage`): reported, asserted only on request.
    if keepalive.failed_requests > 0 {
        eprintln!(
            "[worker:restart] NOTE: {} of {} keep-alive requests failed across {} restarts",
            keepalive.failed_requests,
            keepalive.requests,
            order.len()
        );
    }
    fresh.assert_no_failures();
    if std::env::var_os("ZERO_LOGS_EXPECT_KEEPALIVE_DRAIN").is_some() {
        keepalive.assert_no_failures();
    }
    f.done("restart");
}

/// Scenario 4: a frozen worker (SIGSTOP) and a worker whose flusher is stuck are
/// killed by the watchdog and replaced; the others keep serving.
#[test]
fn watchdog_replaces_a_frozen_worker_and_a_stuck_flusher() {
    let f = Cluster::start(WORKERS, &[("WORKER_WATCHDOG_TIMEOUT", "3000")]);
    let c = f.c();
    let watchdog = c.unit_property("zero-logs@2.service", "WatchdogUSec");
    assert_eq!(watchdog, "3s", "WatchdogSec from WORKER_WATCHDOG_TIMEOUT");

    // --- frozen worker ---
    // Warm up, then let every request finish: the worker is frozen while it has
    // no request in flight (a request in flight on it when it is frozen can only
    // fail; the victim connection below shows what such a client sees).
    let warm = f.load(LoadSpec {
        duration: Duration::from_secs(1),
        ..LoadSpec::fresh("watchdog-frozen", 8)
    });
    let warm = f.rt.block_on(warm.wait());
    warm.assert_no_failures();
    let mut victim = Pinned::to_instance(c.port(), "2", 200).expect("a connection to instance 2");
    let old = UnitSnap::of(c, "2");
    let before = f.requests();
    let frozen_at = now_us();
    c.kill_inside(old.main_pid, "STOP");
    let t_frozen = Instant::now();
    let during = f.load(LoadSpec {
        service: "watchdog-frozen-2".into(),
        ..LoadSpec::fresh("", 8)
    });
    // A client whose connection the frozen worker had already accepted.
    let victim_thread = std::thread::spawn(move || {
        victim.set_timeout(Duration::from_secs(20));
        let body = r#"[{"service":"watchdog-victim","message":"sent to a frozen worker"}]"#;
        victim.request("POST", "/api/v1/logs", Some(body))
    });
    let r = watch_replacement(
        c,
        "2",
        old.main_pid,
        old.n_restarts,
        true,
        Duration::from_secs(30),
    );
    let replaced_after = t_frozen.elapsed();
    let victim_outcome = victim_thread.join().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let during = f.stop(during);
    let spread = delta(&f.requests(), &before);
    let journal = instance_journal(c, "2", frozen_at);
    eprintln!(
        "[worker:watchdog] frozen pid {} at +0; replaced by pid {} after {} ms; states:\n{}",
        old.main_pid,
        r.last.main_pid,
        replaced_after.as_millis(),
        r.show()
    );
    eprintln!(
        "[worker:watchdog] journal of zero-logs@2 since the freeze:\n{}",
        show_journal(&journal, frozen_at)
    );
    eprintln!("[worker:watchdog] load while frozen: {}", during.summary());
    eprintln!(
        "[worker:watchdog] load while frozen, acknowledged per 0.5 s: {}",
        during.timeline()
    );
    eprintln!("[worker:watchdog] requests per instance while frozen (new @2 included): {spread:?}");
    eprintln!("[worker:watchdog] victim connection (accepted by @2 before the freeze): {victim_outcome:?}");
    let killed = first_with(&journal, "Watchdog timeout").unwrap_or_else(|| {
        panic!(
            "no watchdog timeout in the journal:\n{}",
            show_journal(&journal, frozen_at)
        )
    });
    eprintln!(
        "[worker:watchdog] freeze -> watchdog timeout: {} ms",
        (killed - frozen_at) / 1000
    );
    assert!(
        journal.iter().any(
            |(_, m)| m.contains("Failed with result 'watchdog'") || m.contains("status=6/ABRT")
        ),
        "neither Result=watchdog nor SIGABRT in the journal"
    );
    if let Some(s) = r.auto_restart() {
        assert_eq!(s.result, "watchdog", "{}", r.show());
    }
    assert!(r.last.n_restarts > old.n_restarts);
    during.assert_no_failures();
    for i in ["1", "3"] {
        assert!(
            spread[i] > 0,
            "instance {i} did not serve while @2 was frozen: {spread:?}"
        );
    }
    // It hangs while the worker is frozen and fails when the watchdog kills it
    // (not answered, not left hanging).
    match &victim_outcome {
        Ok(a) => panic!("the frozen worker answered {a:?}"),
        Err(e) => assert!(
            !e.contains("WouldBlock") && !e.contains("TimedOut"),
            "the victim connection hung past the watchdog kill: {e}"
        ),
    }
    assert_nothing_lost(
        &f,
        "watchdog",
        &[("watchdog-frozen", &warm), ("watchdog-frozen-2", &during)],
    );
    assert_eq!(f.rows("watchdog-victim"), 0);

    // --- stuck flusher ---
    let old = UnitSnap::of(c, "3");
    let stalled_load = f.load(LoadSpec::fresh("watchdog-stall", 8));
    std::thread::sleep(Duration::from_millis(500));
    let stalled_at = now_us();
    let t_stalled = Instant::now();
    let stall_offset = t_stalled.duration_since(stalled_load.started());
    let answer = hook(
        c,
        "3",
        "/debug/stall-flusher?ms=20000",
        "flush loop stalls for 20000 ms",
    );
    eprintln!("[worker:watchdog] stall-flusher hook: {answer:?}");
    let r = watch_replacement(
        c,
        "3",
        old.main_pid,
        old.n_restarts,
        true,
        Duration::from_secs(30),
    );
    let replaced_after = t_stalled.elapsed();
    std::thread::sleep(Duration::from_millis(1000));
    let stalled = f.stop(stalled_load);
    let journal = instance_journal(c, "3", stalled_at);
    eprintln!(
        "[worker:watchdog] stalled flusher on pid {}; replaced by pid {} after {} ms; states:\n{}",
        old.main_pid,
        r.last.main_pid,
        replaced_after.as_millis(),
        r.show()
    );
    eprintln!(
        "[worker:watchdog] journal of zero-logs@3 since the stall:\n{}",
        show_journal(&journal, stalled_at)
    );
    eprintln!(
        "[worker:watchdog] load around the stall (stall at +{} ms, replaced at +{} ms): {}",
        stall_offset.as_millis(),
        (stall_offset + replaced_after).as_millis(),
        stalled.summary()
    );
    eprintln!(
        "[worker:watchdog] load around the stall, acknowledged per 0.5 s: {}",
        stalled.timeline()
    );
    assert!(
        first_with(&journal, "withholding WATCHDOG=1").is_some(),
        "the worker did not log that it withholds the pings"
    );
    assert!(
        first_with(&journal, "Watchdog timeout").is_some(),
        "no watchdog timeout in the journal"
    );
    assert!(r.last.n_restarts > old.n_restarts);
    if let Some(s) = r.auto_restart() {
        assert_eq!(s.result, "watchdog", "{}", r.show());
    }
    // Requests that reached @3 after its flusher stalled wait for a commit that
    // never comes and fail when the watchdog kills it: failures are expected here,
    // but nothing acknowledged is missing, and at most the failed requests' rows
    // can be there without an acknowledgement.
    let stored = f.wait_rows("watchdog-stall", stalled.acknowledged_records);
    eprintln!(
        "[worker:watchdog] stall: acknowledged {} records, stored {stored}, failed requests {}",
        stalled.acknowledged_records, stalled.failed_requests
    );
    assert!(
        stored >= stalled.acknowledged_records,
        "{}",
        stalled.summary()
    );
    assert!(
        stored <= stalled.acknowledged_records + stalled.failed_requests * 10,
        "{}",
        stalled.summary()
    );
    // Exactly the two targeted instances were restarted, once each: the short
    // watchdog never hit a healthy worker.
    let restarts: BTreeMap<String, u32> = c
        .instances()
        .into_iter()
        .map(|(i, s)| (i, s.n_restarts))
        .collect();
    eprintln!("[worker:watchdog] NRestarts at the end: {restarts:?}");
    assert_eq!(
        restarts,
        BTreeMap::from([("1".into(), 0), ("2".into(), 1), ("3".into(), 1)])
    );
    f.done("watchdog");
}

/// How much the memory scenario makes instance 2 leak. With
/// `WORKER_MEMORY_LIMIT=200MiB` the generator sets `MemoryHigh=250MiB` and
/// `MemoryMax=300MiB`; an idle worker has ~11 MiB RSS, so +220 MiB lands between
/// the worker's own limit and `MemoryHigh`: the graceful path is what a host with
/// memory accounting would run too (+300 MiB would pass `MemoryMax` there, and
/// the kernel would kill the worker first; the test container enforces neither).
const GROW_MB: u64 = 220;

/// Scenario 5: a worker over `WORKER_MEMORY_LIMIT` drains, exits 0 and is started
/// anew, under load, without a failed request.
#[test]
fn memory_limit_restart_is_graceful_under_load() {
    let f = Cluster::start(WORKERS, &[("WORKER_MEMORY_LIMIT", "200MiB")]);
    let c = f.c();
    let limits = c.unit_properties(
        "zero-logs@2.service",
        &["MemoryHigh", "MemoryMax", "MemoryCurrent"],
    );
    eprintln!("[worker:memory] unit limits: {limits:?}");
    let rss_before = c.spread("rss_bytes");
    let old = UnitSnap::of(c, "2");
    let running = f.load(LoadSpec::fresh("memory", 8));
    std::thread::sleep(Duration::from_millis(700));
    let since = now_us();
    let t_grow = Instant::now();
    let answer = hook(
        c,
        "2",
        &format!("/debug/grow-memory?mb={GROW_MB}"),
        &format!("leaked {GROW_MB} MiB"),
    );
    eprintln!("[worker:memory] grow-memory hook: {answer:?}");
    let r = watch_replacement(
        c,
        "2",
        old.main_pid,
        old.n_restarts,
        true,
        Duration::from_secs(30),
    );
    let replaced_after = t_grow.elapsed();
    std::thread::sleep(Duration::from_millis(700));
    let report = f.stop(running);
    let rss_after = c.spread("rss_bytes");
    let entries = instance_entries(c, "2", since);
    let journal = messages(&entries);
    let decided = entries.iter().find(|e| {
        e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.starts_with("resident memory above WORKER_MEMORY_LIMIT"))
    });
    eprintln!(
        "[worker:memory] the worker's decision: RSS_BYTES={} LIMIT_BYTES={}",
        decided.map_or("?".into(), |e| e["RSS_BYTES"].to_string()),
        decided.map_or("?".into(), |e| e["LIMIT_BYTES"].to_string())
    );
    eprintln!(
        "[worker:memory] \"drained; exiting\" -> \"Deactivated successfully\": {:?} ms",
        drain_to_exit_ms(&journal)
    );
    eprintln!("[worker:memory] RSS before (bytes): {rss_before:?}; after: {rss_after:?}");
    eprintln!(
        "[worker:memory] pid {} replaced by pid {} after {} ms; states:\n{}",
        old.main_pid,
        r.last.main_pid,
        replaced_after.as_millis(),
        r.show()
    );
    eprintln!(
        "[worker:memory] journal of zero-logs@2 since the hook:\n{}",
        show_journal(&journal, since)
    );
    eprintln!("[worker:memory] load: {}", report.summary());
    eprintln!(
        "[worker:memory] load, acknowledged per 0.5 s: {}",
        report.timeline()
    );
    assert!(r.last.n_restarts > old.n_restarts, "{}", r.show());
    assert!(
        first_with(&journal, "draining for a memory-limit restart").is_some(),
        "no drain in the journal"
    );
    assert!(
        first_with(&journal, "Deactivated successfully").is_some(),
        "systemd did not see a successful exit"
    );
    assert!(
        !journal
            .iter()
            .any(|(_, m)| m.contains("Failed with result") || m.contains("Main process exited")),
        "the old worker did not exit 0"
    );
    if let Some(s) = r.auto_restart() {
        assert_eq!(
            (
                s.result.as_str(),
                s.exec_main_code.as_str(),
                s.exec_main_status.as_str()
            ),
            ("success", "1", "0"),
            "{}",
            r.show()
        );
    }
    report.assert_no_failures();
    assert_nothing_lost(&f, "memory", &[("memory", &report)]);
    let restarts: BTreeMap<String, u32> = c
        .instances()
        .into_iter()
        .map(|(i, s)| (i, s.n_restarts))
        .collect();
    eprintln!("[worker:memory] NRestarts at the end: {restarts:?}");
    assert_eq!(
        restarts,
        BTreeMap::from([("1".into(), 0), ("2".into(), 1), ("3".into(), 0)])
    );
    f.done("memory");
}

/// Scenario 8 (stop the target under load) then 7 (socket activation with every
/// instance stopped), one container.
#[test]
fn stop_target_under_load_loses_nothing_and_the_socket_starts_a_worker_again() {
    let f = Cluster::start(WORKERS, &[]);
    let c = f.c();
    let socket_props = ["ActiveState", "ActiveEnterTimestampMonotonic", "NRefused"];
    let socket0 = c.unit_properties("zero-logs.socket", &socket_props);
    assert_eq!(socket0["ActiveState"], "active");
    let old = c.instances();

    let running = f.load(LoadSpec::fresh("stop-target", 8));
    std::thread::sleep(Duration::from_millis(1500));
    let stop_at = now_us();
    let started = Instant::now();
    c.systemctl_ok(&["stop", "zero-logs.target"]);
    let stop_took = started.elapsed();
    let right_after: BTreeMap<String, String> = (1..=WORKERS)
        .map(|i| (i.to_string(), UnitSnap::of(c, &i.to_string()).brief()))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let report = f.stop(running);
    let after_load = c.instances();
    eprintln!(
        "[worker:stop] `systemctl stop zero-logs.target` took {} ms; right after: {right_after:?}",
        stop_took.as_millis()
    );
    eprintln!(
        "[worker:stop] after the load: {:?}",
        after_load
            .iter()
            .map(|(i, s)| (
                i,
                format!("{}/{} pid {}", s.active_state, s.sub_state, s.main_pid)
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("[worker:stop] load: {}", report.summary());
    eprintln!(
        "[worker:stop] load, acknowledged per 0.5 s (stop at +1.5 s): {}",
        report.timeline()
    );
    report.assert_no_failures();
    assert_nothing_lost(&f, "stop", &[("stop-target", &report)]);
    // Each old process drained and exited 0 (systemd: "Deactivated successfully",
    // never "Main process exited", which it logs only for a failure).
    let mut gaps = BTreeMap::new();
    for (i, s) in &old {
        let journal = instance_journal(c, i, stop_at);
        assert!(
            first_with(&journal, "drained; exiting").is_some()
                && first_with(&journal, "Deactivated successfully").is_some()
                && !journal
                    .iter()
                    .any(|(_, m)| m.contains("Failed with result")
                        || m.contains("Main process exited")),
            "zero-logs@{i} (pid {}) did not drain and exit 0:\n{}",
            s.main_pid,
            show_journal(&journal, stop_at)
        );
        gaps.insert(i.clone(), drain_to_exit_ms(&journal));
    }
    let journal1 = instance_journal(c, "1", stop_at);
    eprintln!(
        "[worker:stop] \"drained; exiting\" -> \"Deactivated successfully\" (ms): {gaps:?}; zero-logs@1 since the stop:\n{}",
        show_journal(&journal1, stop_at)
    );
    // Connections that arrived while the target stopped may have made the socket
    // start zero-logs@1 again (by design). Stop what runs now that no client
    // sends: then every instance is inactive with a clean exit.
    if after_load.values().any(|s| s.active_state != "inactive") {
        c.systemctl_ok(&["stop", "zero-logs@1.service"]);
    }
    for i in 1..=WORKERS {
        let s = UnitSnap::of(c, &i.to_string());
        assert_eq!(
            (
                s.active.as_str(),
                s.result.as_str(),
                s.exec_main_status.as_str()
            ),
            ("inactive", "success", "0"),
            "zero-logs@{i}: {}",
            s.brief()
        );
    }

    // Scenario 7: nothing runs; one request.
    let (status, body, took) = f.post_one("socket-activation", 3);
    let after = c.instances();
    eprintln!(
        "[worker:activation] answered {status} {body} after {} ms with every instance stopped; instances now: {:?}",
        took.as_millis(),
        after
            .iter()
            .map(|(i, s)| (i, format!("{}/{} pid {}", s.active_state, s.sub_state, s.main_pid)))
            .collect::<Vec<_>>()
    );
    assert_eq!((status, body.as_str()), (202, r#"{"accepted":3}"#));
    assert_eq!(f.wait_rows("socket-activation", 3), 3);
    assert!(after["1"].is_running(), "{after:?}");
    for i in 2..=WORKERS {
        assert_eq!(after[&i.to_string()].active_state, "inactive", "{after:?}");
    }
    let socket1 = c.unit_properties("zero-logs.socket", &socket_props);
    eprintln!("[worker:activation] socket before: {socket0:?}, after: {socket1:?}");
    assert_eq!(
        socket0, socket1,
        "the socket left `active` (or refused connections) at some point"
    );
    f.done("stop+activation");
}
