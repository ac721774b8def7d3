//! The stored format: a value in JSON or in a compact binary format, inside
//! a small, versioned envelope that says which, and whether it is
//! compressed, so that any reader decodes any entry.
//!
//! **JSON, uncompressed** (the default, and what `redis-cli` shows):
//! `{"v":1,"data":{"id":42,…}}`. Functions with `stale`, `fail_safe` or
//! `early_refresh` also store when the value stops being fresh, in
//! milliseconds since the Unix epoch (`"exp":1764150000000`); with
//! `early_refresh`, also how long the body took, in milliseconds
//! (`"took":120`), which weighs how early a refresh starts.
//!
//! **Everything else** (the `binary` format, or any value compressed) starts
//! with a header whose first byte, [`BINARY_MAGIC`], never starts JSON nor a
//! lease's marker:
//!
//! ```text
//! magic  layout  format  compression  flags  [exp: u64 LE] [took: u64 LE] [raw length: u32 LE]  payload
//!  0xB1    1     0..=2      0..=1     bit 0: exp, bit 1: took             (when compressed)
//! ```
//!
//! - `format` 0 is a JSON envelope as above (compressed JSON), 1 a value in
//!   postcard, 2 a value in bitcode.
//! - `compression` 0 is none, 1 is an LZ4 block of `raw length` bytes.
//!
//! So switching a function from one format to another is not a flag day:
//! old entries still decode until they expire. An entry with another
//! layout, envelope version or format, one that is truncated, decompresses
//! to garbage or claims a size over `max_value_size`, or whose data no
//! longer matches the Rust type, is treated as a miss and overwritten by the
//! next store. The claimed size is checked before anything is allocated.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The JSON envelope version this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The first byte of an entry with a header: JSON starts with `{`, a
/// lease's marker with NUL.
pub const BINARY_MAGIC: u8 = 0xB1;

/// The header layout this release writes and reads.
const LAYOUT_VERSION: u8 = 1;

/// How a lease's marker starts: what an entry's key holds while a miss runs
/// the body (see `lease.rs`). A NUL byte never starts JSON nor a header, so
/// no entry is ever taken for a lease, nor a lease for a corrupt entry.
pub(crate) const LEASE_PREFIX: &[u8] = b"\0lease:";

/// Whether `bytes`, read from an entry's key, are a lease's marker: a miss
/// in progress, not an entry.
pub(crate) fn is_lease(bytes: &[u8]) -> bool {
    bytes.starts_with(LEASE_PREFIX)
}

/// How cached values are serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// JSON, readable in `redis-cli`: the default.
    #[default]
    Json,
    /// A compact binary format, several times faster to decode and about
    /// half the size (the `binary` feature): postcard for small values,
    /// bitcode for large ones, each chosen by measurement
    /// (`BENCHMARKS.md`). Neither describes its data, so a type that needs
    /// `deserialize_any` (`#[serde(untagged)]`, `#[serde(flatten)]`,
    /// internally tagged enums, `serde_json::Value`) or skips fields when
    /// serializing (`skip_serializing_if`) cannot use it: each store checks
    /// that its value reads back, and one that does not is logged, counted
    /// as an error and not stored.
    Binary,
}

/// How values are written: the format, and the size above which the
/// serialized value is compressed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Encoding {
    pub(crate) format: Format,
    pub(crate) compress_above: usize,
}

/// What an envelope carries beside its value.
#[derive(Clone, Copy, Default)]
pub struct Metadata {
    /// When the value stops being fresh (ms since the Unix epoch).
    pub fresh_until: Option<u64>,
    /// How long the body took (ms).
    pub took_millis: Option<u64>,
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T: ?Sized> {
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    took: Option<u64>,
    data: &'a T,
}

#[derive(Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    took: Option<u64>,
    data: T,
}

/// A decoded entry.
pub struct Decoded<T> {
    pub value: T,
    /// When the value stops being fresh (ms since the Unix epoch), for
    /// entries written with `stale`, `fail_safe` or `early_refresh`.
    pub fresh_until: Option<u64>,
    /// How long the body took to make the value (ms), for entries written
    /// with `early_refresh`.
    pub took_millis: Option<u64>,
    /// The size of the value's serialized form, before compression: its
    /// weight in the local tier.
    pub serialized_len: usize,
}

/// An encoded entry, and the size of its value before compression (what
/// `max_value_size` bounds, so that every entry stored can be read back).
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) raw_len: usize,
}

/// Why a value could not be encoded.
#[derive(Debug)]
pub enum EncodeError {
    /// serde_json refused it (a map with non-string keys, a failing
    /// `Serialize` impl).
    Json(serde_json::Error),
    /// The binary format refused it, or it did not read back as written.
    Binary(String),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::Json(e) => write!(f, "{e}"),
            EncodeError::Binary(e) => write!(
                f,
                "the binary format cannot hold this type ({e}); use `format = \"json\"`"
            ),
        }
    }
}

/// Why a stored entry could not be used.
#[derive(Debug)]
pub enum DecodeError {
    /// Written by a release with another envelope version or header layout.
    Version(u32),
    /// Not JSON, not an envelope, or `data` does not fit the type.
    Json(serde_json::Error),
    /// A header that is truncated, names an unknown format or compression,
    /// or decompresses to something else than it claims.
    Header(&'static str),
    /// Its value claims more bytes than `max_value_size`.
    TooLarge(usize),
    /// A binary value that does not fit the type, or needs the `binary`
    /// feature.
    Binary(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Version(v) => write!(
                f,
                "envelope version {v}, this release reads version {FORMAT_VERSION}"
            ),
            DecodeError::Json(e) => write!(f, "{e}"),
            DecodeError::Header(why) => write!(f, "a corrupt header: {why}"),
            DecodeError::TooLarge(len) => {
                write!(f, "it claims {len} bytes, over `max_value_size`")
            }
            DecodeError::Binary(e) => write!(f, "{e}"),
        }
    }
}

/// The sub-formats a header names.
const JSON: u8 = 0;
const POSTCARD: u8 = 1;
const BITCODE: u8 = 2;

const UNCOMPRESSED: u8 = 0;
const LZ4: u8 = 1;

const HAS_EXP: u8 = 1;
const HAS_TOOK: u8 = 2;

/// Serializes `value` inside the envelope, as `encoding` says.
pub(crate) fn encode<T: Serialize + DeserializeOwned>(
    value: &T,
    metadata: Metadata,
    encoding: Encoding,
) -> Result<Encoded, EncodeError> {
    match encoding.format {
        Format::Json => {
            let json = encode_json(value, metadata).map_err(EncodeError::Json)?;
            if json.len() <= encoding.compress_above {
                let raw_len = json.len();
                return Ok(Encoded {
                    bytes: json,
                    raw_len,
                });
            }
            // The metadata is in the JSON envelope, compressed with it.
            Ok(with_header(JSON, Metadata::default(), &json, true))
        }
        Format::Binary => {
            let (format, payload) = binary::encode_checked(value)?;
            let compress = payload.len() > encoding.compress_above;
            Ok(with_header(format, metadata, &payload, compress))
        }
    }
}

/// The readable JSON envelope, for values written without a format (a
/// test's fixtures, `Cache`'s raw writes): never compressed.
pub(crate) fn encode_json<T: Serialize + ?Sized>(
    value: &T,
    metadata: Metadata,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&EnvelopeRef {
        v: FORMAT_VERSION,
        exp: metadata.fresh_until,
        took: metadata.took_millis,
        data: value,
    })
}

/// `payload` behind a header, LZ4-compressed if `compress`.
fn with_header(format: u8, metadata: Metadata, payload: &[u8], compress: bool) -> Encoded {
    let mut bytes = Vec::with_capacity(
        32 + if compress {
            payload.len() / 2
        } else {
            payload.len()
        },
    );
    let mut flags = 0;
    if metadata.fresh_until.is_some() {
        flags |= HAS_EXP;
    }
    if metadata.took_millis.is_some() {
        flags |= HAS_TOOK;
    }
    let compression = if compress { LZ4 } else { UNCOMPRESSED };
    bytes.extend_from_slice(&[BINARY_MAGIC, LAYOUT_VERSION, format, compression, flags]);
    for field in [metadata.fresh_until, metadata.took_millis]
        .into_iter()
        .flatten()
    {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    if compress {
        // `raw_len` fits: `max_value_size` is checked against it before a
        // store, and a value over 4 GiB could not be stored in Redis anyway.
        let raw_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&raw_len.to_le_bytes());
        bytes.extend_from_slice(&lz4_flex::block::compress(payload));
    } else {
        bytes.extend_from_slice(payload);
    }
    Encoded {
        bytes,
        raw_len: payload.len(),
    }
}

/// Decodes an entry written by [`encode`] or [`encode_json`], allocating
/// at most `max_value_size` bytes for a compressed value.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    max_value_size: usize,
) -> Result<Decoded<T>, DecodeError> {
    let Some(entry) = parse_header(bytes, max_value_size)? else {
        return decode_json(bytes);
    };
    match entry.format {
        JSON => decode_json(&entry.payload),
        format => Ok(Decoded {
            value: binary::decode(format, &entry.payload)?,
            fresh_until: entry.metadata.fresh_until,
            took_millis: entry.metadata.took_millis,
            serialized_len: entry.payload.len(),
        }),
    }
}

/// When an entry's value stops being fresh, without decoding the value
/// itself (only a JSON envelope's fields are parsed).
pub(crate) fn fresh_until(bytes: &[u8], max_value_size: usize) -> Result<Option<u64>, DecodeError> {
    match parse_header(bytes, max_value_size)? {
        None => decode_json::<serde::de::IgnoredAny>(bytes).map(|entry| entry.fresh_until),
        Some(entry) if entry.format == JSON => {
            decode_json::<serde::de::IgnoredAny>(&entry.payload).map(|entry| entry.fresh_until)
        }
        Some(entry) => Ok(entry.metadata.fresh_until),
    }
}

/// An entry with a header: its format, metadata and (decompressed) payload.
struct WithHeader<'a> {
    format: u8,
    metadata: Metadata,
    payload: std::borrow::Cow<'a, [u8]>,
}

/// Parses an entry's header, and decompresses its payload; `None` for an
/// entry without one (a JSON envelope).
fn parse_header(
    bytes: &[u8],
    max_value_size: usize,
) -> Result<Option<WithHeader<'_>>, DecodeError> {
    let Some((&BINARY_MAGIC, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    let mut reader = Header { rest };
    let [layout, format, compression, flags] = reader.take::<4>()?;
    if layout != LAYOUT_VERSION {
        return Err(DecodeError::Version(layout.into()));
    }
    if !matches!(format, JSON | POSTCARD | BITCODE) {
        return Err(DecodeError::Header("an unknown format"));
    }
    if flags & !(HAS_EXP | HAS_TOOK) != 0 {
        return Err(DecodeError::Header("unknown fields"));
    }
    let mut metadata = Metadata::default();
    if flags & HAS_EXP != 0 {
        metadata.fresh_until = Some(u64::from_le_bytes(reader.take::<8>()?));
    }
    if flags & HAS_TOOK != 0 {
        metadata.took_millis = Some(u64::from_le_bytes(reader.take::<8>()?));
    }
    let payload = match compression {
        UNCOMPRESSED => std::borrow::Cow::Borrowed(reader.rest),
        LZ4 => {
            let raw_len = u32::from_le_bytes(reader.take::<4>()?) as usize;
            if raw_len > max_value_size {
                return Err(DecodeError::TooLarge(raw_len));
            }
            let mut buffer = vec![0; raw_len];
            match lz4_flex::block::decompress_into(reader.rest, &mut buffer) {
                Ok(written) if written == raw_len => std::borrow::Cow::Owned(buffer),
                _ => return Err(DecodeError::Header("it does not decompress to its size")),
            }
        }
        _ => return Err(DecodeError::Header("an unknown compression")),
    };
    Ok(Some(WithHeader {
        format,
        metadata,
        payload,
    }))
}

/// Decodes a JSON envelope.
fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<Decoded<T>, DecodeError> {
    let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
    if envelope.v != FORMAT_VERSION {
        return Err(DecodeError::Version(envelope.v));
    }
    Ok(Decoded {
        value: envelope.data,
        fresh_until: envelope.exp,
        took_millis: envelope.took,
        serialized_len: bytes.len(),
    })
}

/// Reads a header's fields, failing on a truncated one.
struct Header<'a> {
    rest: &'a [u8],
}

impl Header<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (field, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Header("it is truncated"))?;
        self.rest = rest;
        Ok(*field)
    }
}

/// The binary formats, with the `binary` feature.
#[cfg(feature = "binary")]
mod binary {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::{BITCODE, DecodeError, EncodeError, POSTCARD};

    /// Above this size, the binary format uses bitcode rather than
    /// postcard: bitcode decodes a large value about twice as fast, postcard
    /// a small one about four times as fast (`BENCHMARKS.md`, "Large
    /// values").
    const BITCODE_ABOVE: usize = 16 * 1024;

    /// Serializes `value` in postcard, or, when that is large, in bitcode;
    /// then reads it back, so that a type the format cannot hold is refused
    /// here rather than read wrong later: the value must decode, from every
    /// byte, and encode again to as many bytes. (Not to the same bytes: a
    /// `HashMap` may come back in another order.)
    pub(super) fn encode_checked<T: Serialize + DeserializeOwned>(
        value: &T,
    ) -> Result<(u8, Vec<u8>), EncodeError> {
        let small = postcard::to_allocvec(value).map_err(|e| EncodeError::Binary(e.to_string()))?;
        let (format, payload) = if small.len() > BITCODE_ABOVE {
            let large =
                bitcode::serialize(value).map_err(|e| EncodeError::Binary(e.to_string()))?;
            (BITCODE, large)
        } else {
            (POSTCARD, small)
        };
        let again: T = decode(format, &payload).map_err(|e| EncodeError::Binary(e.to_string()))?;
        let again_len = match format {
            POSTCARD => postcard::to_allocvec(&again).map(|bytes| bytes.len()).ok(),
            _ => bitcode::serialize(&again).map(|bytes| bytes.len()).ok(),
        };
        if again_len != Some(payload.len()) {
            return Err(EncodeError::Binary(
                "it does not read back as written, as with `skip_serializing_if`".to_owned(),
            ));
        }
        Ok((format, payload))
    }

    /// Decodes a value from every byte of `payload`.
    pub(super) fn decode<T: DeserializeOwned>(
        format: u8,
        payload: &[u8],
    ) -> Result<T, DecodeError> {
        let error = |e: &dyn std::fmt::Display| DecodeError::Binary(e.to_string());
        if format == POSTCARD {
            match postcard::take_from_bytes(payload) {
                Ok((value, [])) => Ok(value),
                Ok(_) => Err(DecodeError::Binary("trailing bytes".to_owned())),
                Err(e) => Err(error(&e)),
            }
        } else {
            bitcode::deserialize(payload).map_err(|e| error(&e))
        }
    }
}

/// Without the `binary` feature: binary entries are misses, and the binary
/// format cannot be chosen (the builder and the attribute refuse it).
#[cfg(not(feature = "binary"))]
mod binary {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::{DecodeError, EncodeError};

    pub(super) fn encode_checked<T: Serialize + DeserializeOwned>(
        _: &T,
    ) -> Result<(u8, Vec<u8>), EncodeError> {
        Err(EncodeError::Binary(
            "the binary format needs the `binary` feature of cache-runtime".to_owned(),
        ))
    }

    pub(super) fn decode<T: DeserializeOwned>(_: u8, _: &[u8]) -> Result<T, DecodeError> {
        Err(DecodeError::Binary(
            "an entry in the binary format, which needs the `binary` feature of cache-runtime"
                .to_owned(),
        ))
    }
}

/// Milliseconds since the Unix epoch, the unit of `exp`.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, crate::units::millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn encoding(format: Format, compress_above: usize) -> Encoding {
        Encoding {
            format,
            compress_above,
        }
    }

    fn round_trip<T: Serialize + DeserializeOwned>(value: &T, encoding: Encoding) -> (Vec<u8>, T) {
        let metadata = Metadata {
            fresh_until: Some(17),
            took_millis: Some(3),
        };
        let encoded = encode(value, metadata, encoding).unwrap();
        let decoded = decode::<T>(&encoded.bytes, MAX).unwrap();
        assert_eq!(
            (decoded.fresh_until, decoded.took_millis),
            (Some(17), Some(3))
        );
        (encoded.bytes, decoded.value)
    }

    #[test]
    fn small_json_stays_readable() {
        let bytes = encode(
            &vec![1, 2, 3],
            Metadata::default(),
            encoding(Format::Json, 64),
        )
        .unwrap()
        .bytes;
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"data":[1,2,3]}"#
        );
        let (bytes, value) = round_trip(&"x".to_owned(), encoding(Format::Json, 64));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"exp":17,"took":3,"data":"x"}"#
        );
        assert_eq!(value, "x");
    }

    #[test]
    fn large_values_are_compressed_in_any_format() {
        let large: Vec<String> = (0..1000).map(|i| format!("user{i}@example.com")).collect();
        let formats: &[Format] = if cfg!(feature = "binary") {
            &[Format::Json, Format::Binary]
        } else {
            &[Format::Json]
        };
        for &format in formats {
            let (bytes, value) = round_trip(&large, encoding(format, 1024));
            assert_eq!(value, large);
            assert_eq!((bytes[0], bytes[3]), (BINARY_MAGIC, LZ4), "{format:?}");
            let uncompressed = encode(&large, Metadata::default(), encoding(format, usize::MAX))
                .unwrap()
                .bytes;
            assert!(bytes.len() * 2 < uncompressed.len(), "{format:?}");
            // What a local copy weighs: the value's size, not the bytes in Redis.
            let decoded = decode::<Vec<String>>(&bytes, MAX).unwrap();
            assert!(
                decoded.serialized_len * 2 > uncompressed.len(),
                "{format:?}"
            );
        }
    }

    #[test]
    fn a_compressed_entry_that_claims_too_much_is_refused_before_allocating() {
        let large = "a".repeat(10_000);
        let bytes = encode(&large, Metadata::default(), encoding(Format::Json, 100))
            .unwrap()
            .bytes;
        assert!(matches!(
            decode::<String>(&bytes, 1000),
            Err(DecodeError::TooLarge(_))
        ));
        // A small entry that claims 4 GiB: refused by its claim alone.
        let mut bomb = bytes[..5].to_vec();
        bomb.extend_from_slice(&u32::MAX.to_le_bytes());
        bomb.extend_from_slice(&[0x1f; 16]);
        assert!(matches!(
            decode::<String>(&bomb, MAX),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn corrupt_and_truncated_entries_are_errors() {
        let large = "a".repeat(10_000);
        let bytes = encode(&large, Metadata::default(), encoding(Format::Json, 100))
            .unwrap()
            .bytes;
        for cut in [1, 3, 7, bytes.len() - 1] {
            assert!(
                decode::<String>(&bytes[..cut], MAX).is_err(),
                "cut at {cut}"
            );
        }
        let mut garbage = bytes.clone();
        for byte in &mut garbage[9..] {
            *byte ^= 0x5a;
        }
        assert!(decode::<String>(&garbage, MAX).is_err());
        let mut unknown = bytes.clone();
        unknown[2] = 9;
        assert!(matches!(
            decode::<String>(&unknown, MAX),
            Err(DecodeError::Header(_))
        ));
        let mut later_layout = bytes;
        later_layout[1] = 2;
        assert!(matches!(
            decode::<String>(&later_layout, MAX),
            Err(DecodeError::Version(2))
        ));
    }

    #[test]
    fn other_versions_and_shapes_are_rejected() {
        assert!(matches!(
            decode::<i32>(br#"{"v":2,"data":1}"#, MAX),
            Err(DecodeError::Version(2))
        ));
        assert!(matches!(
            decode::<i32>(br#"{"v":1,"data":"x"}"#, MAX),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode::<i32>(b"\xff\x00", MAX),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn freshness_is_read_without_the_value() {
        let metadata = Metadata {
            fresh_until: Some(42),
            took_millis: None,
        };
        let json = encode(&1, metadata, encoding(Format::Json, 64))
            .unwrap()
            .bytes;
        assert_eq!(fresh_until(&json, MAX).unwrap(), Some(42));
        let compressed = encode(&"a".repeat(500), metadata, encoding(Format::Json, 64))
            .unwrap()
            .bytes;
        assert_eq!(fresh_until(&compressed, MAX).unwrap(), Some(42));
    }

    #[cfg(feature = "binary")]
    mod binary_format {
        use super::*;

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct User {
            id: i64,
            name: String,
        }

        #[test]
        fn small_values_use_postcard_and_large_ones_bitcode() {
            let user = User {
                id: 7,
                name: "Ada".into(),
            };
            let (bytes, value) = round_trip(&user, encoding(Format::Binary, usize::MAX));
            assert_eq!(value, user);
            assert_eq!(bytes[2], POSTCARD);
            assert!(bytes.len() < 30, "{} bytes", bytes.len());

            let users: Vec<User> = (0..2000)
                .map(|id| User {
                    id,
                    name: format!("user{id}"),
                })
                .collect();
            let (bytes, value) = round_trip(&users, encoding(Format::Binary, usize::MAX));
            assert_eq!(value, users);
            assert_eq!(bytes[2], BITCODE);
        }

        #[test]
        fn a_type_the_format_cannot_hold_is_refused_at_encoding() {
            #[derive(Serialize, Deserialize)]
            #[serde(untagged)]
            enum Either {
                Number(u32),
                Text(String),
            }
            let refused = encode(
                &Either::Text("x".into()),
                Metadata::default(),
                encoding(Format::Binary, 64),
            );
            assert!(matches!(refused, Err(EncodeError::Binary(_))));
            let value = serde_json::json!({"a": [1, 2]});
            let refused = encode(&value, Metadata::default(), encoding(Format::Binary, 64));
            assert!(matches!(refused, Err(EncodeError::Binary(_))));

            #[derive(Serialize, Deserialize)]
            struct Sparse {
                #[serde(skip_serializing_if = "Option::is_none")]
                note: Option<u32>,
                id: u32,
            }
            let refused = encode(
                &vec![
                    Sparse { note: None, id: 1 },
                    Sparse {
                        note: Some(2),
                        id: 3,
                    },
                ],
                Metadata::default(),
                encoding(Format::Binary, 64),
            );
            assert!(matches!(refused, Err(EncodeError::Binary(_))));
        }

        #[test]
        fn hash_maps_are_not_refused_for_their_order() {
            let map: std::collections::HashMap<String, u32> =
                (0..100).map(|i| (format!("k{i}"), i)).collect();
            let (_, value) = round_trip(&map, encoding(Format::Binary, usize::MAX));
            assert_eq!(value, map);
        }
    }
}
