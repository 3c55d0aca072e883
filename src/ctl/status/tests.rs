use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::ctl::env_files::EnvFiles;
use crate::ctl::inventory::Health;
use crate::ctl::systemd::{ServiceSnapshot, UnitSnapshot};
use crate::ctl::worker_client::WorkerStatsView;

const NOW_US: u64 = 1_714_564_800_000_000; // 2024-05-01T12:00:00Z

fn target(active: &str, wants: &[&str]) -> UnitSnapshot {
    UnitSnapshot {
        id: "zero-logs.target".into(),
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: active.into(),
        condition_result: true,
        active_enter_realtime_us: NOW_US - 90_000_000,
        wants: wants.iter().map(|s| s.to_string()).collect(),
        service: None,
    }
}

fn instance(name: &str, wanted: bool, pid: u32, requests: u64, health: Health) -> Instance {
    let running = pid != 0;
    Instance {
        name: name.into(),
        wanted,
        unit: UnitSnapshot {
            id: format!("zero-logs@{name}.service"),
            load_state: "loaded".into(),
            active_state: if running { "active" } else { "inactive" }.into(),
            sub_state: if running { "running" } else { "dead" }.into(),
            condition_result: true,
            active_enter_realtime_us: 0,
            wants: vec![],
            service: Some(ServiceSnapshot {
                main_pid: pid,
                n_restarts: 1,
                memory_current: None,
                ..Default::default()
            }),
        },
        uptime: running.then(|| Duration::from_secs(125)),
        stats: running.then(|| WorkerStatsView {
            pid,
            requests,
            requests_failed: 1,
            rss_bytes: 8 * 1024 * 1024,
            ..Default::default()
        }),
        health,
        checked_at: running.then(|| SystemTime::UNIX_EPOCH + Duration::from_micros(NOW_US)),
    }
}

fn inventory(instances: Vec<Instance>) -> Inventory {
    let wants: Vec<String> = instances
        .iter()
        .filter(|i| i.wanted)
        .map(|i| i.unit.id.clone())
        .collect();
    let wants: Vec<&str> = wants.iter().map(String::as_str).collect();
    Inventory {
        target: target("active", &wants),
        instances,
        systemd_version: "252.39-1~deb12u2".into(),
        taken_at: SystemTime::UNIX_EPOCH + Duration::from_micros(NOW_US),
    }
}

fn size(text: &str) -> ClusterSize {
    let mut env = EnvFiles::default();
    env.parse(text, Path::new("/etc/zero-logs/zero-logs.env"));
    ClusterSize::from_env(&env, 2)
}

#[test]
fn table_lists_instances_with_rss_fallback_and_health() {
    let inv = inventory(vec![
        instance("1", true, 101, 500, Health::Ok),
        instance("2", true, 0, 0, Health::NotRunning),
        instance(
            "surge",
            false,
            303,
            7,
            Health::Unhealthy("shutting down".into()),
        ),
    ]);
    let table = render_table(&inv, Some(&size("CLUSTER_WORKERS=2\n")));
    let expected = "\
zero-logs.target: active/active, 2 wanted, 2 running, 1 healthy, up 1m30s
N = 2 (CLUSTER_WORKERS=2 from /etc/zero-logs/zero-logs.env:1)
INSTANCE       STATE           PID  UPTIME  RESTARTS  MEMORY        REQUESTS  HEALTH
1              active/running  101  2m05s   1         8.0MiB (rss)  500       ok
2              inactive/dead   -    -       1         -             -         not running
surge (extra)  active/running  303  2m05s   1         8.0MiB (rss)  7         unhealthy: shutting down
";
    assert_eq!(table, expected, "\n{table}");
}

#[test]
fn table_notes_a_pending_daemon_reload() {
    let inv = inventory(vec![instance("1", true, 101, 5, Health::Ok)]);
    let table = render_table(&inv, Some(&size("CLUSTER_WORKERS=3\n")));
    assert!(
        table.contains("the env files say 3 but the target wants 1"),
        "{table}"
    );
}

#[test]
fn cgroup_memory_wins_over_rss() {
    let mut i = instance("1", true, 101, 5, Health::Ok);
    i.unit.service.as_mut().unwrap().memory_current = Some(3 * 1024 * 1024);
    assert_eq!(i.memory(), Some((3 * 1024 * 1024, "cgroup")));
    let json = serde_json::to_value(status_json(&inventory(vec![i]), "private", None)).unwrap();
    assert_eq!(json["instances"][0]["memoryBytes"], 3 * 1024 * 1024);
    assert_eq!(json["instances"][0]["memorySource"], "cgroup");
}

#[test]
fn stats_json_has_the_cluster_api_shape() {
    let inv = inventory(vec![
        instance("1", true, 101, 500, Health::Ok),
        instance("2", true, 102, 250, Health::Unreachable("timeout".into())),
    ]);
    let json =
        serde_json::to_value(cluster_stats(&inv, Some(&size("CLUSTER_MAX_WORKERS=8\n")))).unwrap();
    let master = &json["master"];
    assert_eq!(master["pid"], 1);
    assert_eq!(master["supervisor"], "systemd");
    assert_eq!(master["uptime"], 90.0);
    assert_eq!(master["timestamp"], "2024-05-01T12:00:00.000Z");
    assert!(master["ctlPid"].as_u64().unwrap() > 0);
    let cluster = &json["cluster"];
    assert_eq!(cluster["workers"], 2);
    assert_eq!(cluster["wantedWorkers"], 2);
    assert_eq!(cluster["healthyWorkers"], 1);
    assert_eq!(cluster["totalRequests"], 750);
    assert_eq!(cluster["totalRequestsFailed"], 2);
    assert_eq!(cluster["totalRestarts"], 2);
    assert_eq!(cluster["totalMemoryMB"], 16.0);
    assert_eq!(cluster["maxWorkers"], 8);
    assert_eq!(cluster["minWorkers"], serde_json::Value::Null);
    let w = &json["workers"][1];
    for key in [
        "id",
        "pid",
        "uptime",
        "restarts",
        "requestsHandled",
        "memoryMB",
        "healthy",
        "lastHealthCheck",
    ] {
        assert!(w.get(key).is_some(), "workers[] lacks {key}: {w}");
    }
    assert_eq!(w["id"], "2");
    assert_eq!(w["pid"], 102);
    assert_eq!(w["uptime"], 125.0);
    assert_eq!(w["requestsHandled"], 250);
    assert_eq!(w["memoryMB"], 8.0);
    assert_eq!(w["healthy"], false);
    assert_eq!(w["healthReason"], "timeout");
    assert_eq!(w["lastHealthCheck"], "2024-05-01T12:00:00.000Z");
    let text = render_stats(&cluster_stats(&inv, None));
    assert!(
        text.starts_with("cluster: 2/2 workers running, 1 healthy; 750 requests"),
        "{text}"
    );
}

#[test]
fn verdicts() {
    let ok = |n: &str| instance(n, true, 100, 1, Health::Ok);
    let v = verdict(&inventory(vec![ok("1"), ok("2")]));
    assert_eq!((v.status, v.status.exit_code()), (Verdict::Healthy, 0));
    assert_eq!(v.message, "healthy: 2/2 instances ok");

    let v = verdict(&inventory(vec![
        ok("1"),
        instance("2", true, 0, 0, Health::NotRunning),
    ]));
    assert_eq!((v.status, v.status.exit_code()), (Verdict::Degraded, 1));
    assert_eq!(
        v.message,
        "degraded: 1/2 instances healthy; zero-logs@2: inactive/dead"
    );

    let v = verdict(&inventory(vec![
        instance("1", true, 100, 0, Health::Unhealthy("sink down".into())),
        instance("2", true, 0, 0, Health::NotRunning),
    ]));
    assert_eq!((v.status, v.status.exit_code()), (Verdict::Down, 2));
    assert!(
        v.message.contains("zero-logs@1: unhealthy: sink down"),
        "{}",
        v.message
    );

    let v = verdict(&inventory(vec![]));
    assert_eq!(v.status, Verdict::Down);
    // Only a surge instance serves: degraded, not down.
    let v = verdict(&inventory(vec![
        instance("1", true, 0, 0, Health::NotRunning),
        instance("surge", false, 100, 0, Health::Ok),
    ]));
    assert_eq!(v.status, Verdict::Degraded);
}

#[test]
fn formatting() {
    assert_eq!(human_duration(Duration::from_secs(45)), "45s");
    assert_eq!(human_duration(Duration::from_secs(187)), "3m07s");
    assert_eq!(human_duration(Duration::from_secs(7500)), "2h05m");
    assert_eq!(
        human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
        "3d04h"
    );
    assert_eq!(human_bytes(512), "512B");
    assert_eq!(human_bytes(8 * 1024 * 1024 + 100 * 1024), "8.1MiB");
    assert_eq!(human_bytes(3 << 30), "3.0GiB");
    assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
        "2000-02-29T00:00:00.123Z"
    );
    assert_eq!(
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
        "2099-12-31T23:59:59.000Z"
    );
}
