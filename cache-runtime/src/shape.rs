//! The shapes of cached results: which results of a function are stored,
//! in what form, and which count as success for `#[cache_evict]`. Chosen by
//! the macro from the declared return type.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which results of a function are stored, and in what form.
///
/// The macro picks the shape from the declared return type: [`OkValues`] for
/// `Result`, [`SomeValues`] (or [`OptionValues`] with `cache_none = true`)
/// for `Option`, [`AnyValue`] for everything else.
///
/// The impls are `#[diagnostic::do_not_recommend]`, so that a value that is
/// not `Serialize + DeserializeOwned` is reported with the message below, once,
/// rather than as one `Serialize` and one `Deserialize` error per use.
#[diagnostic::on_unimplemented(
    message = "the return type `{R}` cannot be cached",
    label = "the cached value must implement `serde::Serialize` and `serde::de::DeserializeOwned`"
)]
pub trait Shape<R> {
    /// What is stored in Redis.
    type Stored: Serialize + DeserializeOwned;
    /// The part of `result` to store, or `None` to store nothing.
    fn storable(result: &R) -> Option<&Self::Stored>;
    /// Rebuilds a result from a stored value.
    fn from_stored(stored: Self::Stored) -> R;
    /// Whether `result` is a failure, which `fail_safe` answers with the last
    /// good value: an `Err`. A `None` is a value, not a failure.
    fn failed(_result: &R) -> bool {
        false
    }
}

/// `Result<T, E>`: stores `Ok(T)` as `T`; an `Err` is never stored.
pub struct OkValues;
/// `Option<T>`: stores `Some(T)` as `T`; `None` is never stored.
pub struct SomeValues;
/// `Option<T>` with `cache_none = true`: stores `Some` and `None` alike.
pub struct OptionValues;
/// Any other `T`: always stored.
pub struct AnyValue;

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned, E> Shape<Result<T, E>> for OkValues {
    type Stored = T;
    fn storable(result: &Result<T, E>) -> Option<&T> {
        result.as_ref().ok()
    }
    fn from_stored(stored: T) -> Result<T, E> {
        Ok(stored)
    }
    fn failed(result: &Result<T, E>) -> bool {
        result.is_err()
    }
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for SomeValues {
    type Stored = T;
    fn storable(result: &Option<T>) -> Option<&T> {
        result.as_ref()
    }
    fn from_stored(stored: T) -> Option<T> {
        Some(stored)
    }
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for OptionValues {
    type Stored = Option<T>;
    fn storable(result: &Option<T>) -> Option<&Option<T>> {
        Some(result)
    }
    fn from_stored(stored: Option<T>) -> Option<T> {
        stored
    }
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<T> for AnyValue {
    type Stored = T;
    fn storable(result: &T) -> Option<&T> {
        Some(result)
    }
    fn from_stored(stored: T) -> T {
        stored
    }
}

/// Whether a result counts as success, for `#[cache_evict]`: `Ok` for a
/// `Result`, anything else always.
pub trait Succeeded<R> {
    /// Whether `result` is a success.
    fn succeeded(result: &R) -> bool;
}

impl<T, E> Succeeded<Result<T, E>> for OkValues {
    fn succeeded(result: &Result<T, E>) -> bool {
        result.is_ok()
    }
}

impl<R> Succeeded<R> for AnyValue {
    fn succeeded(_: &R) -> bool {
        true
    }
}

/// What decides, from the value itself, whether a result is stored and for
/// how long: `cache_if` and `ttl_from` on the attribute. Built by generated
/// code.
pub struct StoreRules<T> {
    cache_if: Option<fn(&T) -> bool>,
    ttl_from: Option<fn(&T) -> std::time::Duration>,
}

impl<T> Clone for StoreRules<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for StoreRules<T> {}

impl<T> StoreRules<T> {
    /// No rule: every storable value is stored, for the function's TTL.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        StoreRules {
            cache_if: None,
            ttl_from: None,
        }
    }

    /// Stores a value only when `predicate` returns true for it.
    pub const fn cache_if(mut self, predicate: fn(&T) -> bool) -> Self {
        self.cache_if = Some(predicate);
        self
    }

    /// Takes a value's TTL from `ttl`, bounded by the function's.
    pub const fn ttl_from(mut self, ttl: fn(&T) -> std::time::Duration) -> Self {
        self.ttl_from = Some(ttl);
        self
    }

    /// Whether `value` may be stored.
    pub(crate) fn admits(&self, value: &T) -> bool {
        self.cache_if.is_none_or(|predicate| predicate(value))
    }

    /// `value`'s TTL: `ttl`, or what `ttl_from` gives if that is shorter.
    pub(crate) fn ttl(&self, value: &T, ttl: std::time::Duration) -> std::time::Duration {
        self.ttl_from
            .map_or(ttl, |ttl_from| ttl.min(ttl_from(value)))
    }
}
