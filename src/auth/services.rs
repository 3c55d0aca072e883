//! The service restriction of a key, applied to decoded requests: only for a key
//! with `services=`, one comparison per record (native) or per OTLP resource.
//!
//! The native API is all or nothing, so a record of another service refuses the
//! batch (403 / `PERMISSION_DENIED`) with the per-record details invalid records get.
//! OTLP refuses record by record: the resources of a forbidden service are taken out
//! of the request before it is mapped, their records counted in `partial_success`,
//! and the others are accepted.

use super::Caller;
use crate::codec::EncodedBatch;
use crate::ingest::reject::{RejectKind, Rejection};
use crate::record::Batch;
use crate::validate::otlp::{resource_service, LogsView, Rejected};
use crate::validate::{RecordError, MAX_LISTED_ERRORS};

fn reason(caller: &Caller, service: &str) -> String {
    format!(
        "service {service:?} may not be written with API key {:?} (its services: {})",
        caller.name(),
        caller.services()
    )
}

/// Refuses `batch` if a record's service is not the key's.
pub fn check_batch(caller: &Caller, batch: &Batch) -> Result<(), Rejection> {
    check_services(caller, batch.records.iter().map(|r| r.service.as_str()))
}

/// [`check_batch`] for records already encoded (the JSON path validates straight into
/// the encoding).
pub fn check_encoded(caller: &Caller, batch: &EncodedBatch) -> Result<(), Rejection> {
    // A record that does not read back (corrupted memory) has no service it may write.
    let services = batch.records().map(|r| r.map_or("", |r| r.service));
    check_services(caller, services)
}

fn check_services<'a>(
    caller: &Caller,
    services: impl Iterator<Item = &'a str>,
) -> Result<(), Rejection> {
    if !caller.is_restricted() {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut count = 0;
    for (index, service) in services.enumerate() {
        if !caller.allows(service) {
            count += 1;
            if errors.len() < MAX_LISTED_ERRORS {
                errors.push(RecordError {
                    index,
                    field: "service".into(),
                    reason: reason(caller, service),
                });
            }
        }
    }
    if count == 0 {
        return Ok(());
    }
    tracing::info!(
        key = caller.name(),
        records = count,
        "records refused: service not allowed for the key"
    );
    let mut rejection = Rejection::new(
        RejectKind::Forbidden,
        format!(
            "{count} record(s) of a service API key {:?} may not write; the batch was rejected \
             whole, nothing of it was written",
            caller.name()
        ),
    );
    rejection.details = errors;
    Err(rejection)
}

/// The OTLP records taken out by [`restrict`], and how to renumber the rest.
#[derive(Debug, Default)]
pub struct Forbidden {
    pub count: usize,
    errors: Vec<RecordError>,
    /// `(first index in the restricted request, first index in the original, len)`
    /// of every kept resource.
    kept: Vec<(usize, usize, usize)>,
}

/// Removes from `request` the resources whose service `caller` may not write.
pub fn restrict(caller: &Caller, request: &mut LogsView<'_>, default_service: &str) -> Forbidden {
    let mut forbidden = Forbidden::default();
    if !caller.is_restricted() {
        return forbidden;
    }
    let (mut original, mut restricted) = (0, 0);
    request.retain_resources(|resource| {
        let records = resource.record_count();
        let service = resource_service(&resource, default_service);
        let allowed = caller.allows(&service);
        if allowed {
            forbidden.kept.push((restricted, original, records));
            restricted += records;
        } else {
            forbidden.count += records;
            let listed = forbidden.errors.len();
            forbidden.errors.extend(
                (original..original + records)
                    .take(MAX_LISTED_ERRORS.saturating_sub(listed))
                    .map(|index| RecordError {
                        index,
                        field: "resource.service.name".into(),
                        reason: reason(caller, &service),
                    }),
            );
        }
        original += records;
        allowed
    });
    if forbidden.count > 0 {
        let counters = &caller.0.state.counters;
        counters
            .records_forbidden
            .fetch_add(forbidden.count as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            key = caller.name(),
            records = forbidden.count,
            "OTLP records refused: service not allowed for the key"
        );
    }
    forbidden
}

impl Forbidden {
    /// Adds these records to `rejected` (mapped from the restricted request), with
    /// every index back in the original request's numbering.
    pub fn merge_into(self, rejected: &mut Rejected) {
        if self.count == 0 {
            return;
        }
        for error in &mut rejected.errors {
            if let Some(&(at, from, _)) = self
                .kept
                .iter()
                .rev()
                .find(|(at, _, len)| *at <= error.index && *len > 0)
            {
                error.index = error.index - at + from;
            }
        }
        rejected.count += self.count;
        rejected.errors.extend(self.errors);
        rejected.errors.sort_by_key(|e| e.index);
        rejected.errors.truncate(MAX_LISTED_ERRORS);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;
    use crate::auth::keys::parse;
    use crate::auth::limits::KeyLimits;
    use crate::auth::{Auth, AuthConfig, AuthMode, Decision};
    use crate::config::RecordLimits;
    use crate::validate::otlp::{otlp_encoded, OtlpOptions};

    fn caller(line: &str) -> Caller {
        let limits = KeyLimits {
            records_per_sec: 0,
            bytes_per_sec: 0,
            spool_share_percent: 100,
        };
        let cfg = AuthConfig {
            mode: AuthMode::Keys,
            keys_file: "/k".into(),
            defaults: limits.clone(),
        };
        let auth = Auth::new(cfg, Decision::Keys(parse(line, &limits).unwrap()), None);
        let key = auth.keys().keys()[0].clone();
        Caller(key)
    }

    fn resource(service: Option<&str>, bodies: &[&str]) -> ResourceLogs {
        let text = |s: &str| AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        };
        ResourceLogs {
            resource: Some(Resource {
                attributes: service
                    .map(|s| KeyValue {
                        key: "service.name".into(),
                        value: Some(text(s)),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: bodies
                    .iter()
                    .map(|b| LogRecord {
                        body: (!b.is_empty()).then(|| text(b)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn otlp_records_keep_their_request_index_around_removed_resources() {
        let key = caller("k 0123456789abcdef services=a,unknown_service\n");
        // Records 0-1 (a), 2-4 (b: forbidden), 5-6 (a; 6 has no body: invalid), 7 (the
        // default service: allowed).
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                resource(Some("a"), &["x", "y"]),
                resource(Some("b"), &["x", "y", "z"]),
                resource(Some("a"), &["x", ""]),
                resource(None, &["x"]),
            ],
        };
        let mut view = LogsView::from_request(&request);
        let forbidden = restrict(&key, &mut view, "unknown_service");
        assert_eq!(forbidden.count, 3);
        let options = OtlpOptions {
            default_service: "unknown_service".into(),
        };
        let (batch, mut rejected) = otlp_encoded(&view, &RecordLimits::default(), &options, 1);
        assert_eq!(batch.len(), 4);
        assert_eq!(
            rejected.errors[0].index, 3,
            "numbered in the restricted request"
        );
        forbidden.merge_into(&mut rejected);
        assert_eq!(rejected.count, 4);
        // (A record may have several entries.)
        let mut indexes: Vec<usize> = rejected.errors.iter().map(|e| e.index).collect();
        indexes.dedup();
        assert_eq!(indexes, [2, 3, 4, 6]);
        assert!(
            rejected.errors[0].reason.contains("\"b\""),
            "{:?}",
            rejected.errors[0]
        );
        assert_eq!(
            key.0
                .state
                .counters
                .records_forbidden
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }

    #[test]
    fn native_batches_name_each_forbidden_record() {
        let key = caller("k 0123456789abcdef services=a\n");
        let limits = RecordLimits::default();
        let body = br#"[{"service":"a","message":"m"},{"service":"b","message":"m"}]"#;
        let batch =
            crate::validate::decode(body, crate::validate::Format::Json, &limits, 1).unwrap();
        let refused = check_batch(&key, &batch).unwrap_err();
        assert_eq!(refused.kind, RejectKind::Forbidden);
        assert_eq!(refused.details.len(), 1);
        assert_eq!(
            (refused.details[0].index, refused.details[0].field.as_str()),
            (1, "service")
        );
        let free = caller("k 0123456789abcdef\n");
        assert!(check_batch(&free, &batch).is_ok());
    }
}
