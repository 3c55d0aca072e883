//! Tables over a ClickHouse cluster (`CLICKHOUSE_CLUSTER`): the DDL zero-logs runs
//! `ON CLUSTER`, the sharding key, and the checks of an existing `Distributed` table.
//!
//! With a cluster `c`, table `t` in database `db`, zero-logs creates (in this order,
//! each statement `ON CLUSTER`, so ClickHouse runs it on every host of `c` through its
//! ZooKeeper DDL queue):
//!
//! ```sql
//! CREATE DATABASE IF NOT EXISTS `db` ON CLUSTER `c`
//! CREATE TABLE IF NOT EXISTS `db`.`t_local` ON CLUSTER `c` (…) ENGINE = MergeTree …
//! CREATE TABLE IF NOT EXISTS `db`.`t` ON CLUSTER `c` AS `db`.`t_local`
//! ENGINE = Distributed('c', 'db', 't_local', cityHash64(service, message, timestamp))
//! ```
//!
//! The local table is exactly the single-server table of the version ([`table_ddl`]);
//! the `Distributed` table takes its columns (`AS`), so the layout check reads the same
//! columns on either. zero-logs INSERTs into `t` with `insert_distributed_sync = 1`.
//!
//! Why a hash of the row's content as the sharding key, never `rand()`: an INSERT that
//! is retried, or replayed after a crash, under its deduplication token (see
//! [`dedup`](crate::sink::dedup)) must give every shard the very rows it gave it the
//! first time, or a shard that already holds "its" part under that token would drop a
//! *different* set of rows. A per-row hash sends each row to the same shard whatever
//! rows travel with it, so a replay of a subset of an INSERT's rows (which the spool
//! does) stays a subset on every shard. `cityHash64` is a fixed function (CityHash
//! v1.0.2) in every ClickHouse version, so an upgraded server shards alike.

use super::{qualified_table, quote_identifier, table_ddl, Features, Layout, TableOptions};
use crate::config::TableSchema;

/// Appended to the configured table's name for the per-shard MergeTree table.
pub const LOCAL_SUFFIX: &str = "_local";

/// The query setting that makes an INSERT into a `Distributed` table return only once
/// every shard stored its rows (known as such from 1.1 to 26.x; 23.x added the alias
/// `distributed_foreground_insert`).
pub const SYNC_INSERT_SETTING: &str = "insert_distributed_sync";

/// The name of the per-shard table behind the `Distributed` table `table`.
pub fn local_table(table: &str) -> String {
    format!("{table}{LOCAL_SUFFIX}")
}

/// The sharding key of a layout: a hash of columns every row fills, spread by the
/// message and the event time (a chatty service still spans every shard), and the same
/// for the same row on every version (see the module documentation).
pub fn sharding_key(layout: Layout) -> &'static str {
    match layout {
        // The DateTime column holds whole seconds; timestamp_ns tells rows apart.
        Layout::Legacy => "cityHash64(service, message, timestamp_ns)",
        Layout::DateTime64Nested | Layout::DateTime64Map => {
            "cityHash64(service, message, timestamp)"
        }
        Layout::Otel => "cityHash64(ServiceName, Body, Timestamp)",
    }
}

/// The statements that create database, per-shard table and `Distributed` table on
/// every host of `cluster`, in order; or why this server version cannot hold the table
/// (the same reasons as [`table_ddl`]).
pub fn cluster_ddl(
    database: &str,
    table: &str,
    cluster: &str,
    features: Features,
    options: TableOptions,
    version: &str,
) -> Result<Vec<String>, String> {
    let local = local_table(table);
    let local_ddl = table_ddl(database, &local, features, options, version)?;
    let layout = match options.schema {
        TableSchema::Native => features.layout(),
        TableSchema::Otel => Layout::Otel,
    };
    let on_cluster = format!("ON CLUSTER {}", quote_identifier(cluster));
    Ok(vec![
        format!(
            "CREATE DATABASE IF NOT EXISTS {} {on_cluster}",
            quote_identifier(database)
        ),
        insert_on_cluster(&local_ddl, &qualified_table(database, &local), &on_cluster),
        format!(
            "CREATE TABLE IF NOT EXISTS {} {on_cluster} AS {}\nENGINE = Distributed({}, {}, {}, {})",
            qualified_table(database, table),
            qualified_table(database, &local),
            quote_string(cluster),
            quote_string(database),
            quote_string(&local),
            sharding_key(layout),
        ),
    ])
}

/// `ON CLUSTER` goes right after the table name; the single-server DDL is reused as it
/// is, so the per-shard table can never drift from the table of one server (the unit
/// tests pin that it starts with `head`).
fn insert_on_cluster(ddl: &str, qualified: &str, on_cluster: &str) -> String {
    let head = format!("CREATE TABLE IF NOT EXISTS {qualified}");
    ddl.replacen(&head, &format!("{head} {on_cluster}"), 1)
}

/// A ClickHouse string literal: single quotes, with `\` and `'` escaped.
pub fn quote_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// What an existing `Distributed` table points at, from `system.tables.engine_full`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedTarget {
    pub cluster: String,
    pub database: String,
    pub table: String,
    /// The sharding key expression as the server prints it; `None` without one.
    pub sharding_key: Option<String>,
}

/// Checks that the table zero-logs writes to (`qualified`) is a `Distributed` table
/// over `cluster`, from its `system.tables` `engine` and `engine_full`; returns what it
/// points at, or the problem with its fix.
pub fn check_distributed(
    qualified: &str,
    cluster: &str,
    engine: &str,
    engine_full: &str,
) -> Result<DistributedTarget, String> {
    if engine != "Distributed" {
        return Err(format!(
            "table {qualified} is a {engine} table, and CLICKHOUSE_CLUSTER={cluster} writes \
             through a Distributed table over the cluster's shards (rows written to a \
             {engine} table stay on one server); point CLICKHOUSE_TABLE at a new name to \
             have the tables created, or unset CLICKHOUSE_CLUSTER to write this table"
        ));
    }
    let target = parse_distributed(engine_full).ok_or_else(|| {
        format!("cannot read the Distributed engine of table {qualified}: {engine_full}")
    })?;
    if target.cluster != cluster {
        return Err(format!(
            "table {qualified} is Distributed over cluster `{}`, not over \
             CLICKHOUSE_CLUSTER={cluster}; set CLICKHOUSE_CLUSTER={} or point \
             CLICKHOUSE_TABLE at a new name",
            target.cluster, target.cluster
        ));
    }
    Ok(target)
}

/// Why an existing `Distributed` table's sharding key can lose rows when an INSERT is
/// deduplicated by token, if it can: a key that is not a function of the row.
pub fn sharding_key_hazard(target: &DistributedTarget) -> Option<String> {
    let key = target.sharding_key.as_deref()?.to_ascii_lowercase();
    let random = [
        "rand",
        "now",
        "generateuuid",
        "rownumberinblock",
        "blocknumber",
    ]
    .iter()
    .any(|f| key.contains(&f.to_ascii_lowercase()));
    random.then(|| {
        format!(
            "the sharding key {} is not a function of the row alone: a retried or \
             replayed INSERT would split its rows differently across shards, and a shard \
             that already holds its part under the INSERT's deduplication token drops a \
             different set of rows (lost); use a hash of the row's columns such as {}",
            target.sharding_key.as_deref().unwrap_or_default(),
            sharding_key(Layout::DateTime64Map)
        )
    })
}

/// `Distributed('c', 'db', 't'[, key][, policy])` → its parts; names may be quoted
/// with `'`, `` ` `` or not at all (ClickHouse prints them as they were written).
fn parse_distributed(engine_full: &str) -> Option<DistributedTarget> {
    let args = engine_full
        .trim()
        .strip_prefix("Distributed(")?
        .strip_suffix(')')?;
    let args = split_arguments(args);
    let name = |i: usize| args.get(i).map(|a| unquote(a));
    Some(DistributedTarget {
        cluster: name(0)?,
        database: name(1)?,
        table: name(2)?,
        sharding_key: args.get(3).map(|k| k.trim().to_string()),
    })
}

/// Splits at the commas outside parentheses and quotes.
fn split_arguments(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut escaped, mut start) = (0usize, None, false, 0);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '`' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, ',') if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A name argument without its quotes and escapes.
fn unquote(arg: &str) -> String {
    let arg = arg.trim();
    let inner = ['\'', '`', '"']
        .iter()
        .find_map(|q| arg.strip_prefix(*q).and_then(|a| a.strip_suffix(*q)))
        .unwrap_or(arg);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The start-up error for a `CLICKHOUSE_CLUSTER` that the server does not know.
pub fn unknown_cluster(cluster: &str, url: &str, known: &[String]) -> String {
    let known = if known.is_empty() {
        "none: its config has no <remote_servers>".to_string()
    } else {
        known.join(", ")
    };
    format!(
        "CLICKHOUSE_CLUSTER={cluster}: ClickHouse at {url} has no cluster of that name \
         (system.clusters lists: {known}); set CLICKHOUSE_CLUSTER to one of those, or add \
         <remote_servers><{cluster}>…</{cluster}></remote_servers> to every server's \
         config, or unset CLICKHOUSE_CLUSTER to write one server"
    )
}

/// Added to "table does not exist" with a cluster: `ON CLUSTER` DDL creates tables on
/// the cluster's hosts only, so a server outside the cluster never gets them.
pub fn absent_table_hint(cluster: &str) -> String {
    format!(
        " (with CLICKHOUSE_CLUSTER={cluster} the tables are created on the servers of \
         the cluster only: point CLICKHOUSE_URL at one of them, or create the \
         Distributed table on this server yourself, see docs/SCALE.md)"
    )
}

/// What to do when `ON CLUSTER` DDL failed: the usual cause and both ways out.
pub fn ddl_hint(cluster: &str) -> String {
    format!(
        "`ON CLUSTER {cluster}` DDL needs every server of the cluster to have <zookeeper> \
         and <distributed_ddl> in its config and to be up; fix that, or create the \
         tables on every shard yourself (the statements are in docs/SCALE.md, without \
         `ON CLUSTER`) and set CLICKHOUSE_CREATE_TABLE=false"
    )
}

#[cfg(test)]
mod tests {
    use super::super::{create_table_sql, ServerVersion};
    use super::*;

    fn ddl(version: &str, schema: TableSchema) -> Result<Vec<String>, String> {
        let parsed = ServerVersion::parse(version).unwrap();
        let options = TableOptions {
            schema,
            ttl_days: 0,
        };
        cluster_ddl("db", "logs", "c", Features::of(parsed), options, version)
    }

    #[test]
    fn ddl_for_18_16_creates_database_local_and_distributed_tables_on_the_cluster() {
        let sql = ddl("18.16.1", TableSchema::Native).unwrap();
        assert_eq!(sql.len(), 3);
        assert_eq!(sql[0], "CREATE DATABASE IF NOT EXISTS `db` ON CLUSTER `c`");
        let single = create_table_sql(
            "db",
            "logs_local",
            Features::of(ServerVersion::new(18, 16, 1)),
            0,
        );
        assert_eq!(
            sql[1],
            single.replacen("`logs_local` (", "`logs_local` ON CLUSTER `c` (", 1)
        );
        assert!(sql[1].contains("timestamp_ns UInt64") && sql[1].contains("ENGINE = MergeTree"));
        assert_eq!(
            sql[2],
            "CREATE TABLE IF NOT EXISTS `db`.`logs` ON CLUSTER `c` AS `db`.`logs_local`\n\
             ENGINE = Distributed('c', 'db', 'logs_local', cityHash64(service, message, timestamp_ns))"
        );
    }

    #[test]
    fn ddl_for_26_x_keeps_the_dedup_window_on_the_shards_and_hashes_the_datetime64() {
        for version in ["22.2.2.1", "26.9.2.1"] {
            let sql = ddl(version, TableSchema::Native).unwrap();
            assert!(sql[1].starts_with(
                "CREATE TABLE IF NOT EXISTS `db`.`logs_local` ON CLUSTER `c` (\n    timestamp DateTime64(9, 'UTC'),"
            ), "{}", sql[1]);
            assert!(
                sql[1].ends_with(&format!(
                    "SETTINGS non_replicated_deduplication_window = {}",
                    super::super::DEDUP_WINDOW
                )),
                "{}",
                sql[1]
            );
            assert!(
                sql[2].ends_with("cityHash64(service, message, timestamp))"),
                "{}",
                sql[2]
            );
        }
        let otel = ddl("26.9.2.1", TableSchema::Otel).unwrap();
        assert!(otel[1].contains("ON CLUSTER `c` ("), "{}", otel[1]);
        assert!(
            otel[2].ends_with("cityHash64(ServiceName, Body, Timestamp))"),
            "{}",
            otel[2]
        );
    }

    #[test]
    fn ddl_refuses_what_the_version_cannot_hold() {
        let err = ddl("18.16.1", TableSchema::Otel).unwrap_err();
        assert!(
            err.contains("CLICKHOUSE_SCHEMA=otel needs ClickHouse 22.1"),
            "{err}"
        );
    }

    #[test]
    fn names_are_quoted() {
        let options = TableOptions {
            schema: TableSchema::Native,
            ttl_days: 0,
        };
        let sql = cluster_ddl("d", "t", "my-c.1'x", Features::oldest(), options, "?").unwrap();
        assert_eq!(
            sql[0],
            "CREATE DATABASE IF NOT EXISTS `d` ON CLUSTER `my-c.1'x`"
        );
        assert!(
            sql[2].contains("Distributed('my-c.1\\'x', 'd', 't_local', "),
            "{}",
            sql[2]
        );
    }

    #[test]
    fn reads_distributed_tables_as_servers_print_them() {
        // 18.16 and 26.x print the engine as it was written.
        let ours =
            "Distributed('c', 'db', 'logs_local', cityHash64(service, message, timestamp_ns))";
        let target = check_distributed("`db`.`logs`", "c", "Distributed", ours).unwrap();
        assert_eq!(
            target,
            DistributedTarget {
                cluster: "c".into(),
                database: "db".into(),
                table: "logs_local".into(),
                sharding_key: Some("cityHash64(service, message, timestamp_ns)".into()),
            }
        );
        assert_eq!(sharding_key_hazard(&target), None);
        let bare =
            check_distributed("t", "my_c", "Distributed", "Distributed(my_c, db, `x,y`)").unwrap();
        assert_eq!((bare.table.as_str(), bare.sharding_key), ("x,y", None));
    }

    #[test]
    fn refuses_other_engines_and_clusters_and_flags_random_keys() {
        let err =
            check_distributed("`db`.`logs`", "c", "MergeTree", "MergeTree ORDER BY x").unwrap_err();
        assert!(
            err.contains("is a MergeTree table") && err.contains("CLICKHOUSE_CLUSTER=c"),
            "{err}"
        );
        let err = check_distributed(
            "`db`.`logs`",
            "c",
            "Distributed",
            "Distributed('other', 'db', 'l', rand())",
        )
        .unwrap_err();
        assert!(
            err.contains("over cluster `other`") && err.contains("CLICKHOUSE_CLUSTER=other"),
            "{err}"
        );
        let random = check_distributed(
            "t",
            "c",
            "Distributed",
            "Distributed('c', 'db', 'l', rand())",
        )
        .unwrap();
        let hazard = sharding_key_hazard(&random).unwrap();
        assert!(
            hazard.contains("rand()") && hazard.contains("cityHash64("),
            "{hazard}"
        );
    }

    #[test]
    fn unknown_cluster_lists_the_known_ones() {
        let known = ["a".to_string(), "b".to_string()];
        let msg = unknown_cluster("x", "http://h:8123", &known);
        assert!(
            msg.contains("CLICKHOUSE_CLUSTER=x") && msg.contains("lists: a, b"),
            "{msg}"
        );
        assert!(unknown_cluster("x", "u", &[]).contains("no <remote_servers>"));
    }
}
