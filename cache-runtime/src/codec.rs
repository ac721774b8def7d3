//! The stored format: JSON in a small, versioned envelope.
//!
//! `redis-cli GET user:42` shows `{"v":1,"data":{"id":42,…}}`. The version
//! lets a future release change the layout; an entry with any other version,
//! or whose `data` no longer matches the Rust type (the struct changed), is
//! treated as a miss and overwritten by the next store.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The envelope format this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct EnvelopeRef<'a, T: ?Sized> {
    v: u32,
    data: &'a T,
}

#[derive(Deserialize)]
struct Envelope<T> {
    v: u32,
    data: T,
}

/// Serializes `value` inside the envelope.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&EnvelopeRef {
        v: FORMAT_VERSION,
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
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
    if envelope.v != FORMAT_VERSION {
        return Err(DecodeError::Version(envelope.v));
    }
    Ok(envelope.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_readable() {
        let bytes = encode(&vec![1, 2, 3]).unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), r#"{"v":1,"data":[1,2,3]}"#);
        assert_eq!(decode::<Vec<i32>>(&bytes).unwrap(), vec![1, 2, 3]);
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
        assert!(matches!(decode::<i32>(b"\xff\x00"), Err(DecodeError::Json(_))));
    }
}
