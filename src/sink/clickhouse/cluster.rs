//! The cluster steps of [`ClickHouseSink::connect`] (`CLICKHOUSE_CLUSTER`): the cluster
//! must be known to the server, the tables are created `ON CLUSTER`, and the table
//! written to must be a `Distributed` table over that cluster whose INSERTs return
//! only once every shard stored its rows. The DDL text and the reasoning behind it are
//! in [`schema::cluster`].

use super::{describe, retry, schema, Class, ClickHouseSink, SinkError};
use crate::config::ClickHouseConfig;
use schema::cluster::{self, DistributedTarget};

impl ClickHouseSink {
    /// Fails, listing the clusters the server knows, unless `cluster` is one of them.
    pub(super) async fn check_cluster_known(&self, cluster: &str) -> Result<(), SinkError> {
        let known: Vec<String> = self
            .control(
                self.client
                    .query("SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster")
                    .fetch_all(),
            )
            .await
            .map_err(|e| self.startup_error("listing its clusters", e))?;
        if known.iter().any(|name| name == cluster) {
            return Ok(());
        }
        Err(SinkError::Rejected {
            reason: cluster::unknown_cluster(cluster, &self.url, &known),
        })
    }

    /// Runs `statements` (`ON CLUSTER` DDL from [`cluster::cluster_ddl`]) one by one.
    pub(super) async fn create_on_cluster(
        &self,
        cluster: &str,
        statements: &[String],
    ) -> Result<(), SinkError> {
        // The server waits for every host of the cluster up to
        // distributed_ddl_task_timeout (180 s by default): keep that inside our own
        // timeout, so a host that is down is named in the server's answer instead of
        // the query timing out here. wait_end_of_query: the answer streams one row per
        // host, and an error after the first row would otherwise come with HTTP 200.
        let wait = self.control_timeout.as_secs().saturating_sub(1).max(1);
        for ddl in statements {
            let query = self
                .client
                .query(ddl)
                .with_setting("distributed_ddl_task_timeout", wait.to_string())
                .with_setting("wait_end_of_query", "1");
            self.control(query.execute())
                .await
                .map_err(|error| self.ddl_error(cluster, ddl, error))?;
        }
        Ok(())
    }

    /// Checks that `cfg.table` is a `Distributed` table over `cluster` with a sharding
    /// key that keeps deduplication tokens safe (see [`schema::cluster`]), and makes
    /// every later INSERT synchronous over the shards.
    pub(super) async fn use_distributed(
        &mut self,
        cfg: &ClickHouseConfig,
        cluster: &str,
    ) -> Result<DistributedTarget, SinkError> {
        let row = self
            .engine_of(&cfg.database, &cfg.table)
            .await?
            .ok_or_else(|| SinkError::Rejected {
                reason: format!("table {} vanished during start-up", self.table),
            })?;
        let target =
            cluster::check_distributed(&self.table, cluster, &row.engine, &row.engine_full)
                .map_err(|reason| SinkError::Rejected { reason })?;
        if let Some(hazard) = cluster::sharding_key_hazard(&target) {
            if self.dedup_token {
                return Err(SinkError::Rejected {
                    reason: format!("table {}: {hazard}; recreate it with that key", self.table),
                });
            }
            tracing::warn!(table = %self.table, "{hazard}");
        }
        // Asynchronous Distributed INSERTs are acknowledged once queued on this server's
        // disk, before any shard has the rows: an acknowledgement would promise nothing.
        self.client = self
            .client
            .clone()
            .with_setting(cluster::SYNC_INSERT_SETTING, "1");
        Ok(target)
    }

    fn ddl_error(&self, cluster: &str, ddl: &str, error: clickhouse::error::Error) -> SinkError {
        let reason = format!(
            "ClickHouse at {} failed `{}`: {}; {}",
            self.url,
            ddl.lines().next().unwrap_or(ddl),
            describe(&error),
            cluster::ddl_hint(cluster)
        );
        match retry::classify(&error) {
            Class::Transient => SinkError::Unavailable { reason },
            Class::Permanent => SinkError::Rejected { reason },
        }
    }
}
