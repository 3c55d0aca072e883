//! serde plumbing: walks a body with serde_json, borrowing strings from it, and hands
//! each record's fields to a [`Draft`]. No `serde_json::Value` is built.
//!
//! Every visitor accepts any JSON type, so a wrong type becomes a precise per-field
//! [`RecordError`](super::RecordError) instead of serde's generic message that would
//! abort the whole body.
//!
//! The same visitors run under two parsers (see `super::decode_encoded`): sonic-rs
//! first, in *fast* mode, then serde_json if sonic-rs gave up. In fast mode a visitor
//! gives up ([`give_up`]) wherever the body is going to be refused anyway or where the
//! two parsers could disagree: nested content (which serde_json skips iteratively, at
//! any depth, while sonic-rs's skipping recurses without a limit), floats (sonic-rs
//! reads `-0` as `0.0`, and rounds some long decimals differently from serde_json's
//! default), records past the cap and any record that failed a rule. Giving up costs
//! only those bodies a second parse; it keeps every message and limit serde_json's.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::fields::{Accepted, Checker, Draft, Field};
use super::{DecodeError, Decoder, Shown};

/// A JSON value as far as validation cares: scalars (strings borrowed from the body
/// when they contain no escapes), containers only noted, their contents skipped.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'de> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl<'de> Value<'de> {
    /// "a number (42)", for "expected X, got Y" messages.
    pub(super) fn describe(&self) -> Describe<'_, 'de> {
        Describe(self)
    }

    /// The text an attribute stores: strings as they are, numbers as JSON prints them,
    /// booleans as `true`/`false`. `Ok(None)` for null (skipped), `Err` for containers.
    pub(super) fn into_text(self) -> Result<Option<Cow<'de, str>>, ()> {
        Ok(Some(match self {
            Value::Null => return Ok(None),
            Value::Array | Value::Object => return Err(()),
            Value::Str(s) => s,
            Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Value::U64(n) => Cow::Owned(n.to_string()),
            Value::I64(n) => Cow::Owned(n.to_string()),
            // JSON has no NaN/inf, so `from_f64` succeeds; it prints like serde_json
            // writes floats (shortest round-trip form, e.g. `1.5`, `1e300`).
            Value::F64(n) => Cow::Owned(
                serde_json::Number::from_f64(n).map_or_else(|| n.to_string(), |n| n.to_string()),
            ),
        }))
    }
}

pub(super) struct Describe<'a, 'de>(&'a Value<'de>);

impl fmt::Display for Describe<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "a boolean ({b})"),
            Value::U64(n) => write!(f, "a number ({n})"),
            Value::I64(n) => write!(f, "a number ({n})"),
            Value::F64(n) => write!(f, "a number ({n})"),
            Value::Str(s) => write!(f, "a string ({})", Shown(s)),
            Value::Array => f.write_str("an array"),
            Value::Object => f.write_str("an object"),
        }
    }
}

/// Generates the scalar `visit_*` methods, each passing a [`Value`] to `self.other`.
macro_rules! scalars_to_other {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.other(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.other(Value::I64(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.other(Value::U64(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.other(Value::F64(v))
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            self.other(Value::Str(Cow::Borrowed(v)))
        }
        // serde_json calls this for strings with escapes (decoded into its scratch).
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.other(Value::Str(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            self.other(Value::Str(Cow::Owned(v)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.other(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            self.other(Value::Null)
        }
    };
}

/// The error a fast-mode visitor returns to stop sonic-rs: the caller then parses
/// the body again with serde_json, which alone decides what to answer.
pub(super) const GAVE_UP: &str = "the fast parser gave up; parse again with serde_json";

#[cold]
pub(super) fn give_up<E: de::Error>() -> E {
    E::custom(GAVE_UP)
}

/// A value that is not looked at: fast mode gives up when there is one.
struct GiveUpSeed;

impl<'de> DeserializeSeed<'de> for GiveUpSeed {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(give_up())
    }
}

/// Skips an array's elements. In fast mode it gives up instead: sonic-rs skips nested
/// values recursively without a depth limit (a deeply nested body would overflow the
/// stack), and nested content is refused anyway.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A, fast: bool) -> Result<(), A::Error> {
    if fast {
        return Err(give_up());
    }
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// [`drain_seq`] for an object.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A, fast: bool) -> Result<(), A::Error> {
    if fast {
        return Err(give_up());
    }
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Any JSON value as a [`Value`]; `fast`: see the module doc.
struct ValueSeed {
    fast: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> ValueSeed {
    fn other<E: de::Error>(self, v: Value<'de>) -> Result<Value<'de>, E> {
        if self.fast && matches!(v, Value::F64(_)) {
            return Err(give_up());
        }
        Ok(v)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    scalars_to_other!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value<'de>, A::Error> {
        drain_seq(seq, self.fast).map(|()| Value::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value<'de>, A::Error> {
        drain_map(map, self.fast).map(|()| Value::Object)
    }
}

/// A key of a record object.
enum Key<'de> {
    Known(Field, &'static str),
    Other(Cow<'de, str>),
}

fn known_key(name: &str) -> Option<Key<'static>> {
    let (field, name) = match name {
        "timestamp" => (Field::Timestamp, "timestamp"),
        "time" => (Field::Timestamp, "time"),
        "ts" => (Field::Timestamp, "ts"),
        "level" => (Field::Level, "level"),
        "service" => (Field::Service, "service"),
        "message" => (Field::Message, "message"),
        "msg" => (Field::Message, "msg"),
        "trace_id" => (Field::TraceId, "trace_id"),
        "span_id" => (Field::SpanId, "span_id"),
        "attributes" => (Field::Attributes, "attributes"),
        _ => return None,
    };
    Some(Key::Known(field, name))
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(known_key(v).unwrap_or(Key::Other(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(known_key(v).unwrap_or_else(|| Key::Other(Cow::Owned(v.to_owned()))))
    }
}

/// What became of one element of a batch.
pub(super) enum Element<'de> {
    /// A JSON object: `Some` if valid, `None` if its problems were reported.
    Record(Option<Accepted<'de>>),
    /// Not an object; the caller decides how bad that is.
    NotObject(Value<'de>),
}

/// One record (a JSON object) validated straight from the parser.
pub(super) struct RecordSeed<'c, 'l> {
    pub(super) chk: &'c mut Checker<'l>,
    pub(super) index: usize,
    /// Fast mode (sonic-rs): see the module doc.
    pub(super) fast: bool,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_> {
    type Value = Element<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Element<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> RecordSeed<'_, '_> {
    fn other<E>(self, v: Value<'de>) -> Result<Element<'de>, E> {
        Ok(Element::NotObject(v))
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, '_> {
    type Value = Element<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log record object")
    }

    scalars_to_other!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element<'de>, A::Error> {
        drain_seq(seq, self.fast)?;
        Ok(Element::NotObject(Value::Array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element<'de>, A::Error> {
        let (chk, fast) = (self.chk, self.fast);
        let mut draft = Draft::new(self.index);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Known(Field::Attributes, name) => {
                    // Consumed even when duplicated: the parser must move past it.
                    draft.first_time(chk, Field::Attributes, name);
                    map.next_value_seed(AttributesSeed {
                        chk: &mut *chk,
                        draft: &mut draft,
                        fast,
                    })?;
                }
                Key::Known(field, name) => {
                    let value = map.next_value_seed(ValueSeed { fast })?;
                    draft.json_field(chk, field, name, value);
                }
                Key::Other(name) => {
                    let value = map.next_value_seed(ValueSeed { fast })?;
                    draft.json_extra(chk, name, value);
                }
            }
        }
        Ok(Element::Record(draft.finish(chk)))
    }
}

/// The value of `attributes`: its entries go straight into the draft.
struct AttributesSeed<'a, 'l, 'de> {
    chk: &'a mut Checker<'l>,
    draft: &'a mut Draft<'de>,
    fast: bool,
}

impl<'de> DeserializeSeed<'de> for AttributesSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> AttributesSeed<'_, '_, 'de> {
    fn other<E>(self, v: Value<'de>) -> Result<(), E> {
        self.draft.attributes_not_object(self.chk, v);
        Ok(())
    }
}

impl<'de> Visitor<'de> for AttributesSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat object of attributes")
    }

    scalars_to_other!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq, self.fast)?;
        self.other(Value::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fast = self.fast;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            let value = map.next_value_seed(ValueSeed { fast })?;
            self.draft.json_attribute(self.chk, key, value);
        }
        Ok(())
    }
}

/// A string, borrowed from the body when it has no escapes.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

const SHAPES: &str =
    "send a JSON array of records, [{...}, ...], or an object {\"logs\": [{...}, ...]}";

/// The whole body in [`Format::Json`](super::Format::Json): an array, or `{"logs": [...]}`.
pub(super) struct BodySeed<'d, 'l>(pub(super) &'d mut Decoder<'l>);

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> BodySeed<'_, '_> {
    fn other<E: de::Error>(self, v: Value<'de>) -> Result<(), E> {
        let reason = format!("the body is {}; {SHAPES}", v.describe());
        Err(self.0.fatal(None, reason))
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SHAPES)
    }

    scalars_to_other!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        read_records(self.0, seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let dec = self.0;
        let mut saw_logs = false;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if key != "logs" {
                let hint = if known_key(&key).is_some() {
                    " (it looks like a single record: wrap it in an array)"
                } else {
                    ""
                };
                let reason = format!(
                    "unexpected key {} in the top-level object{hint}; only \"logs\" is allowed: \
                     {SHAPES}",
                    Shown(&key)
                );
                return Err(dec.fatal(None, reason));
            }
            if saw_logs {
                return Err(dec.fatal(None, "duplicate \"logs\" key in the top-level object"));
            }
            saw_logs = true;
            map.next_value_seed(LogsSeed(&mut *dec))?;
        }
        if !saw_logs {
            return Err(dec.fatal(
                None,
                format!("the top-level object has no \"logs\" key; {SHAPES}"),
            ));
        }
        Ok(())
    }
}

/// The value of the wrapper's `logs` key.
struct LogsSeed<'d, 'l>(&'d mut Decoder<'l>);

impl<'de> DeserializeSeed<'de> for LogsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> LogsSeed<'_, '_> {
    fn other<E: de::Error>(self, v: Value<'de>) -> Result<(), E> {
        let reason = format!("\"logs\" must be an array of records, got {}", v.describe());
        Err(self.0.fatal(None, reason))
    }
}

impl<'de> Visitor<'de> for LogsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    scalars_to_other!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        read_records(self.0, seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.other(Value::Object)
    }
}

fn read_records<'de, A: SeqAccess<'de>>(dec: &mut Decoder<'_>, mut seq: A) -> Result<(), A::Error> {
    let fast = dec.fast;
    loop {
        let index = dec.count;
        dec.current = Some(index);
        if fast && dec.chk.failed() {
            // The body is refused: serde_json lists why.
            return Err(give_up());
        }
        if index < dec.max {
            let seed = RecordSeed {
                chk: &mut dec.chk,
                index,
                fast,
            };
            match seq.next_element_seed(seed)? {
                None => break,
                Some(Element::Record(record)) => dec.keep(record),
                Some(Element::NotObject(value)) => dec.not_object(index, &value),
            }
        } else if fast {
            // Past the cap the body is refused; serde_json counts the records.
            if seq.next_element_seed(GiveUpSeed)?.is_none() {
                break;
            }
        } else if seq.next_element::<IgnoredAny>()?.is_none() {
            // Past the cap only the count matters, for the error message.
            break;
        }
        dec.count += 1;
    }
    dec.current = None;
    Ok(())
}

impl Decoder<'_> {
    /// Records why the body is unusable and returns the error that unwinds serde.
    fn fatal<E: de::Error>(&mut self, index: Option<usize>, reason: impl Into<String>) -> E {
        self.fatal = Some(DecodeError::Malformed {
            index,
            reason: reason.into(),
        });
        E::custom("body rejected")
    }
}
