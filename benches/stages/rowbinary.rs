//! A RowBinary writer for serde rows, into a `Vec<u8>`: the stand-in for the
//! clickhouse crate's serializer, which is private and only reachable through an
//! INSERT over HTTP. Same wire format for the types our rows use: integers
//! little-endian, strings and arrays/maps as a LEB128 length then the items. The
//! rows themselves (`LegacyRow`, `OtelRow`, their attribute views) are the sink's; the
//! sink now writes RowBinary itself (`sink::rowbinary`), and this is the comparison.

use serde::ser::{self, Impossible, Serialize};

#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Error {
        Error(msg.to_string())
    }
}

/// Appends `row` to `out` as one RowBinary row.
pub fn write_row<R: Serialize>(out: &mut Vec<u8>, row: &R) -> Result<(), Error> {
    row.serialize(&mut Writer(out))
}

pub struct Writer<'o>(&'o mut Vec<u8>);

impl Writer<'_> {
    fn leb128(&mut self, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn length(&mut self, len: Option<usize>) -> Result<(), Error> {
        let len = len.ok_or_else(|| Error("RowBinary needs lengths up front".into()))?;
        self.leb128(len as u64);
        Ok(())
    }
}

fn unsupported(what: &str) -> Error {
    Error(format!("the stages bench writes no {what}"))
}

macro_rules! le {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Error> {
            self.0.extend_from_slice(&v.to_le_bytes());
            Ok(())
        })*
    };
}

impl<'a, 'o> ser::Serializer for &'a mut Writer<'o> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Error>;

    le!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_f32: f32, serialize_f64: f64);

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0.push(u8::from(v));
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), Error> {
        Err(unsupported("char"))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.leb128(v.len() as u64);
        self.0.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.0.push(1);
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), Error> {
        self.0.push(0);
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Error> {
        Err(unsupported("enum"))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(unsupported("enum"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        self.length(len)?;
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(unsupported("tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(unsupported("enum"))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self, Error> {
        self.length(len)?;
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(unsupported("enum"))
    }
}

impl ser::SerializeSeq for &mut Writer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Error> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Writer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Error> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Writer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, k: &T) -> Result<(), Error> {
        k.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Error> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// Checks the writer against the real thing: `batch` inserted by the sink for a server
/// of `version` (layout from the version, as at start-up) into a listener on loopback
/// that keeps the request body; the body must be `rows` (what a writer under test made
/// of the same records). Loopback means no LZ4 (`CLICKHOUSE_COMPRESSION=auto`), so the
/// body is plain RowBinary. Panics on a difference: the bench would measure another
/// format than the sink sends.
pub fn check_against_sink(
    batch: &zero_logs::codec::EncodedBatch,
    version: zero_logs::sink::ServerVersion,
    rows: &[u8],
) {
    let schema = zero_logs::config::TableSchema::Native;
    check_schema_against_sink(batch, version, schema, rows);
}

/// [`check_against_sink`] for the `otel_logs` layout (`CLICKHOUSE_SCHEMA=otel`, a
/// 22.2 server).
pub fn check_otel_against_sink(batch: &zero_logs::codec::EncodedBatch, rows: &[u8]) {
    let version = zero_logs::sink::ServerVersion::new(22, 2, 0);
    let schema = zero_logs::config::TableSchema::Otel;
    check_schema_against_sink(batch, version, schema, rows);
}

fn check_schema_against_sink(
    batch: &zero_logs::codec::EncodedBatch,
    version: zero_logs::sink::ServerVersion,
    schema: zero_logs::config::TableSchema,
    rows: &[u8],
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let body = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = zero_logs::config::ClickHouseConfig {
            url: format!("http://{}", listener.local_addr().unwrap()),
            database: "db".into(),
            table: "logs".into(),
            user: String::new(),
            password: String::new(),
            create_table: false,
            retry_budget: std::time::Duration::from_secs(1),
            insert_timeout: std::time::Duration::from_secs(5),
            compression: zero_logs::config::Compression::Auto,
            schema,
            ttl_days: 0,
            cluster: None,
        };
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut chunk = [0u8; 16384];
            loop {
                if let Some(body) = request_body(&raw) {
                    let answer =
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    return body;
                }
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the sink closed the connection mid-request");
                raw.extend_from_slice(&chunk[..n]);
            }
        });
        let sink = zero_logs::sink::ClickHouseSink::assuming_server(&cfg, version);
        sink.insert(std::slice::from_ref(batch), None)
            .await
            .unwrap();
        server.await.unwrap()
    });
    assert!(
        body == rows,
        "the sink sent {} B for {version}, the writer under test makes {} B: not the same RowBinary",
        body.len(),
        rows.len()
    );
}

/// The body of the HTTP request in `raw` once it is complete (chunked or sized).
fn request_body(raw: &[u8]) -> Option<Vec<u8>> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let mut data = &raw[head_end..];
    if !head.contains("transfer-encoding: chunked") {
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        return data.get(..length).map(<[u8]>::to_vec);
    }
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return data.starts_with(b"\r\n").then_some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
