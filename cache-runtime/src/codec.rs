//! The stored format: JSON in a small, versioned envelope.
//!
//! `redis-cli GET user:42` shows `{"v":1,"data":{"id":42,…}}`. Functions with
//! `stale`, `fail_safe` or `early_refresh` also store when the value stops
//! being fresh, in milliseconds since the Unix epoch:
//! `{"v":1,"exp":1764150000000,"data":…}`; with `early_refresh`, also how
//! long the body took, in milliseconds (`"took":120`), which weighs how early
//! a refresh starts. The version
//! lets a future release change the layout; an entry with any other version,
//! or whose `data` no longer matches the Rust type (the struct changed), is
//! treated as a miss and overwritten by the next store.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The envelope format this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How a lease's marker starts: what an entry's key holds while a miss runs
/// the body (see `lease.rs`). A NUL byte never starts JSON, so no envelope
/// is ever taken for a lease, nor a lease for a corrupt envelope.
pub(crate) const LEASE_PREFIX: &[u8] = b"\0lease:";

/// Whether `bytes`, read from an entry's key, are a lease's marker: a miss
/// in progress, not an entry.
pub(crate) fn is_lease(bytes: &[u8]) -> bool {
    bytes.starts_with(LEASE_PREFIX)
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
}

/// What an envelope carries beside its value.
#[derive(Clone, Copy, Default)]
pub struct Metadata {
    /// When the value stops being fresh (ms since the Unix epoch).
    pub fresh_until: Option<u64>,
    /// How long the body took (ms).
    pub took_millis: Option<u64>,
}

/// Serializes `value` inside the envelope.
pub fn encode<T: Serialize + ?Sized>(
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

/// Why a stored entry could not be used.
#[derive(Debug)]
pub enum DecodeError {
    /// Written by a release with another envelope version.
    Version(u32),
    /// Not JSON, not an envelope, or `data` does not fit the type.
    Json(serde_json::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Version(v) => write!(
                f,
                "envelope version {v}, this release reads version {FORMAT_VERSION}"
            ),
            DecodeError::Json(e) => write!(f, "{e}"),
        }
    }
}

/// Decodes an entry written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Decoded<T>, DecodeError> {
    let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
    if envelope.v != FORMAT_VERSION {
        return Err(DecodeError::Version(envelope.v));
    }
    Ok(Decoded {
        value: envelope.data,
        fresh_until: envelope.exp,
        took_millis: envelope.took,
    })
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

    #[test]
    fn round_trips_and_is_readable() {
        let bytes = encode(&vec![1, 2, 3], Metadata::default()).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"data":[1,2,3]}"#
        );
        let decoded = decode::<Vec<i32>>(&bytes).unwrap();
        assert_eq!((decoded.value, decoded.fresh_until), (vec![1, 2, 3], None));

        let metadata = Metadata {
            fresh_until: Some(17),
            took_millis: Some(3),
        };
        let bytes = encode("x", metadata).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"exp":17,"took":3,"data":"x"}"#
        );
        let decoded = decode::<String>(&bytes).unwrap();
        assert_eq!(
            (decoded.fresh_until, decoded.took_millis),
            (Some(17), Some(3))
        );
    }

    #[test]
    fn other_versions_and_shapes_are_rejected() {
        assert!(matches!(
            decode::<i32>(br#"{"v":2,"data":1}"#),
            Err(DecodeError::Version(2))
        ));
        assert!(matches!(
            decode::<i32>(br#"{"v":1,"data":"x"}"#),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode::<i32>(b"\xff\x00"),
            Err(DecodeError::Json(_))
        ));
    }
}
