//! The one form of an OTLP logs request that the mapping ([`super::otlp_encoded`])
//! reads: [`LogsView`], every text and id borrowed, built either straight from a
//! protobuf body by our own reader ([`LogsView::decode`], [`super::wire`]) or from a
//! request prost or serde decoded ([`LogsView::from_request`]: OTLP/JSON, gRPC, and
//! the bodies our reader leaves to prost). One set of mapping rules runs over both.
//!
//! The view is flat: resources, scopes, records and top-level attributes each live
//! in one vector, and a parent names its children by a range of indexes, so a
//! request costs four allocations, not a few per record. Nested values (an array or
//! a key/value list inside a value) are read when the mapping walks them
//! ([`Array`], [`Map`]): they are rare, and the reader has already checked them.

use std::ops::Range;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use super::wire::{self, WireError};

/// An `ExportLogsServiceRequest`, its text borrowed from the body or from a decoded
/// request.
#[derive(Debug, Default, Clone)]
pub struct LogsView<'a> {
    pub(super) resources: Vec<ResourceLogsView<'a>>,
    pub(super) scopes: Vec<ScopeLogsView<'a>>,
    pub(super) records: Vec<RecordView<'a>>,
    /// The top-level attributes of every resource, scope and record.
    pub(super) attributes: Vec<Attribute<'a>>,
}

/// A `ResourceLogs` with its `Resource` (absent = no attributes).
#[derive(Debug, Default, Clone)]
pub(super) struct ResourceLogsView<'a> {
    pub attributes: Range<usize>,
    pub scopes: Range<usize>,
    pub schema_url: &'a str,
}

/// A `ScopeLogs` with its `InstrumentationScope` (absent = empty name and version,
/// no attributes).
#[derive(Debug, Default, Clone)]
pub(super) struct ScopeLogsView<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub attributes: Range<usize>,
    pub records: Range<usize>,
    pub schema_url: &'a str,
}

/// A `LogRecord`: the fields the mapping reads (the dropped-attribute count is not).
#[derive(Debug, Default, Clone)]
pub(super) struct RecordView<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    /// `None`: no body field; `Some(Value::Empty)`: a body with no value set.
    pub body: Option<Value<'a>>,
    pub attributes: Range<usize>,
    pub flags: u32,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub event_name: &'a str,
}

/// A `KeyValue`; a missing value and a value with nothing set are both
/// [`Value::Empty`] (the mapping treats them alike).
#[derive(Debug, Clone, Copy)]
pub struct Attribute<'a> {
    pub key: &'a str,
    pub value: Value<'a>,
}

/// An `AnyValue`.
#[derive(Debug, Clone, Copy, Default)]
pub enum Value<'a> {
    /// No field of the `oneof` set.
    #[default]
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Array<'a>),
    Map(Map<'a>),
    /// `string_value_strindex`: an index into a string table that logs do not have;
    /// written as JSON `null`, as before.
    StrIndex,
}

/// An `ArrayValue`'s elements.
#[derive(Debug, Clone, Copy)]
pub enum Array<'a> {
    Decoded(&'a [AnyValue]),
    /// The `ArrayValue` message's bytes, already checked by the reader.
    Wire(&'a [u8]),
}

/// A `KeyValueList`'s entries.
#[derive(Debug, Clone, Copy)]
pub enum Map<'a> {
    Decoded(&'a [KeyValue]),
    /// The `KeyValueList` message's bytes, already checked by the reader.
    Wire(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The view of a decoded `AnyValue` (`None`: the field was absent).
    pub fn of(value: Option<&'a AnyValue>) -> Value<'a> {
        use any_value::Value as V;
        match value.and_then(|v| v.value.as_ref()) {
            None => Value::Empty,
            Some(V::StringValue(s)) => Value::Str(s),
            Some(V::BoolValue(b)) => Value::Bool(*b),
            Some(V::IntValue(i)) => Value::Int(*i),
            Some(V::DoubleValue(d)) => Value::Double(*d),
            Some(V::BytesValue(b)) => Value::Bytes(b),
            Some(V::ArrayValue(a)) => Value::Array(Array::Decoded(&a.values)),
            Some(V::KvlistValue(l)) => Value::Map(Map::Decoded(&l.values)),
            Some(V::StringValueStrindex(_)) => Value::StrIndex,
        }
    }
}

impl<'a> Attribute<'a> {
    fn of(kv: &'a KeyValue) -> Attribute<'a> {
        Attribute {
            key: &kv.key,
            value: Value::of(kv.value.as_ref()),
        }
    }
}

impl<'a> Array<'a> {
    /// The elements in order.
    pub fn iter(self) -> Items<'a> {
        match self {
            Array::Decoded(values) => Items::Decoded(values.iter()),
            Array::Wire(bytes) => Items::Wire(wire::array_items(bytes)),
        }
    }
}

impl<'a> Map<'a> {
    /// The entries in order (repeated keys included).
    pub fn iter(self) -> Entries<'a> {
        match self {
            Map::Decoded(values) => Entries::Decoded(values.iter()),
            Map::Wire(bytes) => Entries::Wire(wire::map_entries(bytes)),
        }
    }
}

/// [`Array::iter`].
pub enum Items<'a> {
    Decoded(std::slice::Iter<'a, AnyValue>),
    Wire(wire::ArrayItems<'a>),
}

impl<'a> Iterator for Items<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        match self {
            Items::Decoded(values) => values.next().map(|v| Value::of(Some(v))),
            Items::Wire(items) => items.next(),
        }
    }
}

/// [`Map::iter`].
pub enum Entries<'a> {
    Decoded(std::slice::Iter<'a, KeyValue>),
    Wire(wire::MapEntries<'a>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        match self {
            Entries::Decoded(values) => values.next().map(Attribute::of),
            Entries::Wire(entries) => entries.next(),
        }
    }
}

impl<'a> LogsView<'a> {
    /// Reads an OTLP/HTTP protobuf body. A body prost would also refuse is refused;
    /// one our reader leaves to prost ([`WireError::Unsupported`]: a singular message
    /// field sent twice, which protobuf merges) is refused too, so the caller decodes
    /// it with prost instead ([`LogsView::from_request`]).
    pub fn decode(body: &'a [u8]) -> Result<LogsView<'a>, WireError> {
        wire::decode(body)
    }

    /// The view of a decoded request (OTLP/JSON through serde, gRPC through tonic).
    pub fn from_request(request: &'a ExportLogsServiceRequest) -> LogsView<'a> {
        let mut view = LogsView::default();
        for resource_logs in &request.resource_logs {
            let attributes = view.push_attributes(
                resource_logs
                    .resource
                    .as_ref()
                    .map_or(&[][..], |r| &r.attributes),
            );
            let first_scope = view.scopes.len();
            for scope_logs in &resource_logs.scope_logs {
                let scope = scope_logs.scope.as_ref();
                let attributes = view.push_attributes(scope.map_or(&[][..], |s| &s.attributes));
                let first_record = view.records.len();
                for log in &scope_logs.log_records {
                    let attributes = view.push_attributes(&log.attributes);
                    view.records.push(RecordView {
                        time_unix_nano: log.time_unix_nano,
                        observed_time_unix_nano: log.observed_time_unix_nano,
                        severity_number: log.severity_number,
                        severity_text: &log.severity_text,
                        body: log.body.as_ref().map(|b| Value::of(Some(b))),
                        attributes,
                        flags: log.flags,
                        trace_id: &log.trace_id,
                        span_id: &log.span_id,
                        event_name: &log.event_name,
                    });
                }
                view.scopes.push(ScopeLogsView {
                    name: scope.map_or("", |s| &s.name),
                    version: scope.map_or("", |s| &s.version),
                    attributes,
                    records: first_record..view.records.len(),
                    schema_url: &scope_logs.schema_url,
                });
            }
            view.resources.push(ResourceLogsView {
                attributes,
                scopes: first_scope..view.scopes.len(),
                schema_url: &resource_logs.schema_url,
            });
        }
        view
    }

    fn push_attributes(&mut self, attributes: &'a [KeyValue]) -> Range<usize> {
        let first = self.attributes.len();
        self.attributes.extend(attributes.iter().map(Attribute::of));
        first..self.attributes.len()
    }

    /// The number of log records in the request.
    pub fn record_count(&self) -> usize {
        self.resources
            .iter()
            .map(|r| self.resource_records(r))
            .sum()
    }

    fn resource_records(&self, resource: &ResourceLogsView<'a>) -> usize {
        self.scopes[resource.scopes.clone()]
            .iter()
            .map(|s| s.records.len())
            .sum()
    }

    /// The resources in order, each with what a key's service restriction reads.
    pub fn resources(&self) -> impl Iterator<Item = ResourceRef<'_, 'a>> {
        self.resources.iter().map(move |resource| ResourceRef {
            view: self,
            resource,
        })
    }

    /// Keeps the resources (with their scopes and records) for which `keep` is true.
    pub fn retain_resources(&mut self, mut keep: impl FnMut(ResourceRef<'_, 'a>) -> bool) {
        let kept: Vec<bool> = self.resources().map(&mut keep).collect();
        let mut kept = kept.into_iter();
        self.resources.retain(|_| kept.next().unwrap_or(true));
    }

    pub(super) fn attributes_of(&self, range: &Range<usize>) -> &[Attribute<'a>] {
        &self.attributes[range.clone()]
    }
}

/// One resource of a [`LogsView`].
#[derive(Clone, Copy)]
pub struct ResourceRef<'v, 'a> {
    view: &'v LogsView<'a>,
    resource: &'v ResourceLogsView<'a>,
}

impl<'a> ResourceRef<'_, 'a> {
    /// The number of log records under this resource.
    pub fn record_count(&self) -> usize {
        self.view.resource_records(self.resource)
    }

    /// The attributes of the `Resource`.
    pub fn attributes(&self) -> &[Attribute<'a>] {
        self.view.attributes_of(&self.resource.attributes)
    }
}

impl LogsView<'_> {
    /// An owned request with what the view holds, for tests and the fuzz targets: two
    /// views are the same when their owned forms encode the same. What the view does
    /// not keep is left out (dropped counts, entity references, string-table indexes),
    /// a `Resource` and an `InstrumentationScope` are always present, and a value with
    /// nothing set is absent.
    pub fn to_request(&self) -> ExportLogsServiceRequest {
        use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource;

        let attributes = |range: &Range<usize>| -> Vec<KeyValue> {
            self.attributes_of(range).iter().map(owned_kv).collect()
        };
        let record = |r: &RecordView<'_>| LogRecord {
            time_unix_nano: r.time_unix_nano,
            observed_time_unix_nano: r.observed_time_unix_nano,
            severity_number: r.severity_number,
            severity_text: r.severity_text.to_owned(),
            body: r.body.map(owned_any),
            attributes: attributes(&r.attributes),
            flags: r.flags,
            trace_id: r.trace_id.to_vec(),
            span_id: r.span_id.to_vec(),
            event_name: r.event_name.to_owned(),
            ..Default::default()
        };
        let scope = |s: &ScopeLogsView<'_>| ScopeLogs {
            scope: Some(InstrumentationScope {
                name: s.name.to_owned(),
                version: s.version.to_owned(),
                attributes: attributes(&s.attributes),
                ..Default::default()
            }),
            log_records: self.records[s.records.clone()].iter().map(record).collect(),
            schema_url: s.schema_url.to_owned(),
        };
        ExportLogsServiceRequest {
            resource_logs: self
                .resources
                .iter()
                .map(|r| ResourceLogs {
                    resource: Some(Resource {
                        attributes: attributes(&r.attributes),
                        ..Default::default()
                    }),
                    scope_logs: self.scopes[r.scopes.clone()].iter().map(scope).collect(),
                    schema_url: r.schema_url.to_owned(),
                })
                .collect(),
        }
    }
}

fn owned_kv(kv: &Attribute<'_>) -> KeyValue {
    KeyValue {
        key: kv.key.to_owned(),
        value: match kv.value {
            Value::Empty => None,
            value => Some(owned_any(value)),
        },
        ..Default::default()
    }
}

fn owned_any(value: Value<'_>) -> AnyValue {
    use any_value::Value as V;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    let value = match value {
        Value::Empty => None,
        Value::Str(s) => Some(V::StringValue(s.to_owned())),
        Value::Bool(b) => Some(V::BoolValue(b)),
        Value::Int(i) => Some(V::IntValue(i)),
        Value::Double(d) => Some(V::DoubleValue(d)),
        Value::Bytes(b) => Some(V::BytesValue(b.to_vec())),
        Value::Array(a) => Some(V::ArrayValue(ArrayValue {
            values: a.iter().map(owned_any).collect(),
        })),
        Value::Map(m) => Some(V::KvlistValue(KeyValueList {
            values: m.iter().map(|kv| owned_kv(&kv)).collect(),
        })),
        Value::StrIndex => Some(V::StringValueStrindex(0)),
    };
    AnyValue { value }
}
