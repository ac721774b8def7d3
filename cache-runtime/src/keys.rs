//! Rendering cache keys from a template and argument values.
//!
//! A key is the template's literal text with each placeholder replaced by the
//! argument's `Display` output, escaped: ASCII letters, digits, `-`, `_` and
//! `.` are kept, every other byte of the UTF-8 text becomes `%XX`. So `42`
//! stays `42` and `a:b` becomes `a%3Ab`, and keys stay readable in `redis-cli`.
//!
//! Why this makes keys injective: an escaped value never contains a byte
//! outside `[A-Za-z0-9._%-]`, and the macro requires the literal text between
//! two placeholders to contain at least one such byte (`:` in `"k:{a}:{b}"`).
//! Reading a rendered key left to right, each value therefore ends exactly
//! where the next literal's first "delimiter" byte appears, so the key
//! determines every value, and two different argument tuples can never render
//! to the same key. The escaping also keeps `{`, `}`, `*`, `?`, `[`, `]` and
//! whitespace out of keys, so user values can never form a Redis Cluster hash
//! tag or a glob pattern.
//!
//! Keys longer than the configured maximum are shortened by hashing: the head
//! of the key is kept for readability and the SHA-256 of the whole key is
//! appended, so two long keys still differ whenever their full texts differ.

use std::fmt::{self, Write};

use sha2::{Digest, Sha256};

/// Where tag sets live, after the cache's prefix. `#` never appears in an
/// escaped value, so no entry's key can take this form.
pub(crate) const TAG_MARKER: &str = "#tag:";

/// Bytes a hashed key appends: `#` and 64 hex digits.
const HASH_SUFFIX_LEN: usize = 1 + 64;
/// The smallest `max_key_len` that leaves a useful readable head.
pub(crate) const MIN_MAX_KEY_LEN: usize = HASH_SUFFIX_LEN + 63;

/// Returns whether escaping keeps this byte as it is.
#[inline]
pub(crate) fn is_unescaped(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// Builds one key. Generated code creates it with the cache's prefix, pushes
/// the template's literal parts and argument values in order, then finishes.
pub struct KeyBuilder {
    key: String,
    max_len: usize,
}

impl KeyBuilder {
    pub(crate) fn new(prefix: &str, max_len: usize, capacity_hint: usize) -> Self {
        let mut key = String::with_capacity(prefix.len() + capacity_hint);
        key.push_str(prefix);
        KeyBuilder { key, max_len }
    }

    /// Appends literal template text, unescaped.
    #[inline]
    pub fn push_literal(&mut self, literal: &str) {
        self.key.push_str(literal);
    }

    /// Appends an argument's `Display` output, escaped.
    #[inline]
    pub fn push_value<T: fmt::Display + ?Sized>(&mut self, value: &T) {
        // Writing through the escaper formats straight into the key: no
        // intermediate String per value.
        let _ = write!(Escaper(&mut self.key), "{value}");
    }

    /// The finished key, hashed if it is longer than the maximum.
    pub fn finish(self) -> String {
        shorten(self.key, self.max_len)
    }
}

/// A `fmt::Write` that escapes everything written through it.
struct Escaper<'a>(&'a mut String);

impl Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        // Copy runs of unescaped bytes at once: ids and names are mostly such
        // runs. A run is ASCII, so its ends are always char boundaries; the
        // bytes of a multi-byte character are all escaped one by one.
        let bytes = s.as_bytes();
        let mut run_start = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            if !is_unescaped(byte) {
                if run_start < i {
                    self.0.push_str(&s[run_start..i]);
                }
                self.0.push('%');
                self.0.push(HEX[usize::from(byte >> 4)] as char);
                self.0.push(HEX[usize::from(byte & 0xF)] as char);
                run_start = i + 1;
            }
        }
        if run_start < bytes.len() {
            self.0.push_str(&s[run_start..]);
        }
        Ok(())
    }
}

/// Escapes one value as a placeholder would.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let _ = Escaper(&mut out).write_str(value);
    out
}

/// Shortens `key` to at most `max_len` bytes by hashing, if it is longer.
pub(crate) fn shorten(key: String, max_len: usize) -> String {
    if key.len() <= max_len {
        return key;
    }
    let mut head_len = max_len - HASH_SUFFIX_LEN;
    while !key.is_char_boundary(head_len) {
        head_len -= 1;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut short = String::with_capacity(max_len);
    short.push_str(&key[..head_len]);
    short.push('#');
    for byte in digest {
        let _ = write!(short, "{byte:02x}");
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(parts: &[Result<&str, &str>]) -> String {
        let mut builder = KeyBuilder::new("", 256, 0);
        for part in parts {
            match part {
                Ok(literal) => builder.push_literal(literal),
                Err(value) => builder.push_value(value),
            }
        }
        builder.finish()
    }

    #[test]
    fn plain_values_stay_readable() {
        assert_eq!(render(&[Ok("user:"), Err("42")]), "user:42");
        assert_eq!(render(&[Ok("v:"), Err("a-b_c.D")]), "v:a-b_c.D");
    }

    #[test]
    fn delimiters_and_patterns_are_escaped() {
        assert_eq!(escape("x:y"), "x%3Ay");
        assert_eq!(escape("%{}*?\n "), "%25%7B%7D%2A%3F%0A%20");
        assert_eq!(escape("é"), "%C3%A9");
        assert_eq!(escape("aé"), "a%C3%A9");
        assert_eq!(escape("éa€b"), "%C3%A9a%E2%82%ACb");
        assert_ne!(
            render(&[Ok("k:"), Err("x:y"), Ok(":"), Err("z")]),
            render(&[Ok("k:"), Err("x"), Ok(":"), Err("y:z")])
        );
    }

    #[test]
    fn long_keys_are_hashed_not_truncated() {
        let a = format!("k:{}a", "x".repeat(300));
        let b = format!("k:{}b", "x".repeat(300));
        let (sa, sb) = (shorten(a.clone(), 256), shorten(b, 256));
        assert_eq!(sa.len(), 256);
        assert_ne!(sa, sb);
        assert!(sa.starts_with("k:xxx"));
        assert_eq!(shorten(a, 256), sa, "hashing is deterministic");
    }

    #[test]
    fn hashing_respects_char_boundaries() {
        let key = "é".repeat(200);
        let short = shorten(key, 200);
        assert!(short.len() <= 200);
    }
}
