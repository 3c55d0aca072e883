use super::*;

/// An environment for `Config::load` and the daemon's loader in tests.
pub(crate) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_without_anything_set() {
    let cfg = Config::load(&ServeFlags::default(), &env(&[])).unwrap();
    assert_eq!(cfg.listen.addrs, vec!["127.0.0.1:3000".parse().unwrap()]);
    assert_eq!(cfg.clickhouse.url, "http://127.0.0.1:8123");
    assert_eq!(cfg.clickhouse.database, "logs");
    assert_eq!(cfg.ingest.max_body_bytes, 10 << 20);
    assert!(cfg.ingest.pool_validation);
    assert_eq!(cfg.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(cfg.admin.worker_id, "1");
}

#[test]
fn env_values_are_parsed_with_units() {
    let cfg = Config::load(
        &ServeFlags::default(),
        &env(&[
            ("LISTEN_ADDRS", "127.0.0.1:4000, [::1]:4001"),
            ("MAX_BODY_BYTES", "2MB"),
            ("GRACEFUL_SHUTDOWN_TIMEOUT", "5000"),
            ("ENABLE_WORKER_VALIDATION", "false"),
            ("WORKER_POOL_MIN_WORKERS", "2"),
            ("WORKER_POOL_MAX_WORKERS", "4"),
            ("CLICKHOUSE_PASSWORD", "s3cret"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.listen.addrs.len(), 2);
    assert_eq!(cfg.ingest.max_body_bytes, 2 << 20);
    assert_eq!(cfg.shutdown_timeout, Duration::from_millis(5000));
    assert!(!cfg.ingest.pool_validation);
    assert_eq!(
        (cfg.ingest.pool_min_threads, cfg.ingest.pool_max_threads),
        (2, 4)
    );
    assert_eq!(cfg.clickhouse.password, "s3cret");
}

#[test]
fn flags_override_env() {
    let flags = ServeFlags::default()
        .with("BATCH_MAX_ROWS", "500")
        .with("LISTEN_ADDRS", "127.0.0.1:5000");
    let cfg = Config::load(
        &flags,
        &env(&[("BATCH_MAX_ROWS", "7"), ("LISTEN_ADDRS", "127.0.0.1:1")]),
    )
    .unwrap();
    assert_eq!(cfg.batch.max_rows, 500);
    assert_eq!(cfg.listen.addrs, vec!["127.0.0.1:5000".parse().unwrap()]);
}

#[test]
fn errors_name_the_variable_and_the_accepted_form() {
    let cases = [
        ("GRACEFUL_SHUTDOWN_TIMEOUT", "soon", "milliseconds"),
        ("MAX_BODY_BYTES", "ten megs", "expected bytes"),
        ("ENABLE_WORKER_VALIDATION", "maybe", "true or false"),
        ("BATCH_MAX_ROWS", "0", "at least 1"),
        ("LISTEN_ADDRS", "localhost", "IP:PORT"),
        ("CLICKHOUSE_URL", "tcp://x:9000", "http://"),
        ("CLICKHOUSE_TABLE", "logs; DROP", "identifier"),
        ("WORKER_ID", "a/b", "%i"),
    ];
    for (var, value, expected) in cases {
        let err = Config::load(&ServeFlags::default(), &env(&[(var, value)])).unwrap_err();
        assert_eq!(err.source_name, var, "{err}");
        let text = err.to_string();
        assert!(text.contains(var) && text.contains(expected), "{text}");
    }
}

#[test]
fn cross_field_rules_are_checked() {
    let err = Config::load(
        &ServeFlags::default(),
        &env(&[
            ("WORKER_POOL_MIN_WORKERS", "8"),
            ("WORKER_POOL_MAX_WORKERS", "2"),
        ]),
    )
    .unwrap_err();
    assert_eq!(err.source_name, "WORKER_POOL_MIN_WORKERS");
    let err = Config::load(
        &ServeFlags::default(),
        &env(&[("MAX_INFLIGHT_BYTES", "1M"), ("MAX_BODY_BYTES", "2M")]),
    )
    .unwrap_err();
    assert_eq!(err.source_name, "MAX_INFLIGHT_BYTES");
}

#[test]
fn byte_sizes() {
    assert_eq!(bytes("512"), Ok(512));
    assert_eq!(bytes("64K"), Ok(64 << 10));
    assert_eq!(bytes("10MB"), Ok(10 << 20));
    assert_eq!(bytes("1GiB"), Ok(1 << 30));
    assert!(bytes("1TB").is_err());
    assert!(bytes("").is_err());
    assert!(bytes("-1").is_err());
}

#[test]
fn spool_defaults_follow_systemd_state_directory() {
    let cfg = Config::load(
        &ServeFlags::default(),
        &env(&[
            ("STATE_DIRECTORY", "/var/lib/zero-logs"),
            ("WORKER_ID", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.ack_mode, AckMode::Spool);
    assert_eq!(cfg.spool.root, PathBuf::from("/var/lib/zero-logs/spool"));
    assert_eq!(cfg.spool.dir(), PathBuf::from("/var/lib/zero-logs/spool/3"));
    assert_eq!(cfg.spool.max_bytes, 1 << 30);

    let cfg = Config::load(&ServeFlags::default(), &env(&[("HOME", "/home/op")])).unwrap();
    assert_eq!(
        cfg.spool.root,
        PathBuf::from("/home/op/.local/state/zero-logs/spool")
    );
}

#[test]
fn spool_settings_parse_and_flags_win() {
    let flags = ServeFlags::default()
        .with("SPOOL_DIR", "/srv/spool")
        .with("ACK_MODE", "ClickHouse");
    let cfg = Config::load(
        &flags,
        &env(&[
            ("SPOOL_DIR", "/elsewhere"),
            ("ACK_MODE", "spool"),
            ("SPOOL_MAX_BYTES", "64MiB"),
            ("SPOOL_SEGMENT_BYTES", "1M"),
            ("SPOOL_COMMIT_WINDOW", "5"),
            ("SPOOL_ADOPT_IDLE", "1000"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.ack_mode, AckMode::ClickHouse);
    assert_eq!(cfg.spool.root, PathBuf::from("/srv/spool"));
    assert_eq!(cfg.spool.max_bytes, 64 << 20);
    assert_eq!(cfg.spool.segment_bytes, 1 << 20);
    assert_eq!(cfg.spool.commit_window, Duration::from_millis(5));
    assert_eq!(cfg.spool.orphan_min_idle, Duration::from_secs(1));
}

#[test]
fn bad_spool_settings_name_the_variable() {
    for (var, value, hint) in [
        ("ACK_MODE", "disk", "spool or clickhouse"),
        ("SPOOL_MAX_BYTES", "1000", "at least 1MiB"),
        ("SPOOL_ADOPT_INTERVAL", "0", "at least 1"),
    ] {
        let err = Config::load(&ServeFlags::default(), &env(&[(var, value)])).unwrap_err();
        assert_eq!(err.source_name, var);
        assert!(err.reason.contains(hint), "{var}: {}", err.reason);
    }
}

#[test]
fn compression_is_off_only_for_loopback_clickhouse_in_auto_mode() {
    let cfg = Config::load(&ServeFlags::default(), &env(&[])).unwrap();
    assert_eq!(cfg.clickhouse.compression, Compression::Auto);
    for url in [
        "http://127.0.0.1:8123",
        "http://127.9.9.9:8123/",
        "http://[::1]:8123",
        "http://LOCALHOST:8123",
        "https://user:pw@localhost/?x=1",
    ] {
        assert!(!Compression::Auto.lz4_for(url), "{url}");
        assert!(Compression::Lz4.lz4_for(url), "{url}");
    }
    for url in [
        "http://10.0.0.5:8123",
        "http://[2001:db8::1]:8123",
        "https://clickhouse.example:8443",
        "http://localhost.example:8123",
        "http://127.0.0.1.example:8123",
    ] {
        assert!(Compression::Auto.lz4_for(url), "{url}");
        assert!(!Compression::None.lz4_for(url), "{url}");
    }
    let cfg = Config::load(
        &ServeFlags::default(),
        &env(&[("CLICKHOUSE_COMPRESSION", "NONE")]),
    )
    .unwrap();
    assert_eq!(cfg.clickhouse.compression, Compression::None);
    let err = Config::load(
        &ServeFlags::default(),
        &env(&[("CLICKHOUSE_COMPRESSION", "zstd")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("CLICKHOUSE_COMPRESSION") && err.contains("auto, lz4 or none"),
        "{err}"
    );
}

#[test]
fn cpu_slice_defaults_to_100_us_and_0_keeps_the_kernels() {
    let slice = |pairs: &[(&str, &str)]| {
        Config::load(&ServeFlags::default(), &env(pairs)).map(|c| c.supervision.cpu_slice)
    };
    assert_eq!(slice(&[]).unwrap(), Some(Duration::from_micros(100)));
    assert_eq!(slice(&[("WORKER_CPU_SLICE_US", "0")]).unwrap(), None);
    assert_eq!(
        slice(&[("WORKER_CPU_SLICE_US", "3000")]).unwrap(),
        Some(Duration::from_millis(3))
    );
    for bad in ["50", "100001", "1ms", "-1"] {
        let err = slice(&[("WORKER_CPU_SLICE_US", bad)]).unwrap_err();
        assert_eq!(err.source_name, "WORKER_CPU_SLICE_US");
        assert!(
            err.reason
                .contains("0 (the kernel's default) or 100..=100000"),
            "{bad}: {}",
            err.reason
        );
    }
}

#[test]
fn clickhouse_cluster_is_a_name_or_unset() {
    let load = |vars: &[(&str, &str)]| Config::load(&ServeFlags::default(), &env(vars));
    assert_eq!(load(&[]).unwrap().clickhouse.cluster, None);
    let cfg = load(&[("CLICKHOUSE_CLUSTER", "logs-2.eu_1")]).unwrap();
    assert_eq!(cfg.clickhouse.cluster.as_deref(), Some("logs-2.eu_1"));
    for bad in ["two words", "a`b", "x'y"] {
        let err = load(&[("CLICKHOUSE_CLUSTER", bad)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CLICKHOUSE_CLUSTER") && err.contains("remote_servers"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn clickhouse_url_takes_a_list_and_a_single_url_stays_one() {
    let urls = |value: &str| {
        let cfg = Config::load(&ServeFlags::default(), &env(&[("CLICKHOUSE_URL", value)]));
        cfg.map(|c| {
            let urls: Vec<String> = c.clickhouse.urls().iter().map(|u| u.to_string()).collect();
            (c.clickhouse.url, urls)
        })
    };
    let (raw, single) = urls("http://u:p@ch:8123").unwrap();
    assert_eq!(raw, "http://u:p@ch:8123");
    assert_eq!(single, ["http://u:p@ch:8123"]);
    let (_, two) = urls("http://ch1:8123, https://ch2:8443").unwrap();
    assert_eq!(two, ["http://ch1:8123", "https://ch2:8443"]);

    for (value, expected) in [
        (
            "http://ch1:8123,,http://ch2:8123",
            "element 2 of the list is empty",
        ),
        ("http://ch1:8123,", "element 2 of the list is empty"),
        (
            "http://ch1:8123,ch2:8123",
            "ch2:8123: expected an http:// or https:// URL",
        ),
        (
            "http://ch1:8123, http://ch1:8123",
            "http://ch1:8123 is listed twice",
        ),
    ] {
        let err = urls(value).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("CLICKHOUSE_URL") && text.contains(expected),
            "{value}: {text}"
        );
    }
}
