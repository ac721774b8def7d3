//! The local tier: an in-process copy of hot entries, kept coherent with
//! Redis by listening to it for changes. What it guarantees, and how long a
//! copy can outlive a change when something fails, is documented on
//! [`LocalTierSettings`](crate::LocalTierSettings).
//!
//! The tier itself is in `tier.rs` with the `local` feature, its listener in
//! `listener.rs`, and it is a type with no values without the feature
//! (`off.rs`), so that the paths that would use a tier compile to nothing.
//! What generated code needs is here, either way.

use std::any::Any;
use std::sync::Arc;

#[cfg(feature = "local")]
mod listener;
#[cfg(not(feature = "local"))]
mod off;
#[cfg(feature = "local")]
mod tier;

#[cfg(not(feature = "local"))]
pub(crate) use off::{LocalTier, Mark};
#[cfg(feature = "local")]
pub(crate) use tier::{LocalTier, Mark};

/// How to put a decoded value in the local tier and take it out, for one
/// stored type. Built by generated code only where the type is `Clone`.
// Without the `local` feature, no tier reads them.
#[cfg_attr(not(feature = "local"), allow(dead_code))]
pub struct LocalOps<T> {
    pub(crate) to_any: fn(&T) -> Arc<dyn Any + Send + Sync>,
    pub(crate) from_any: fn(&(dyn Any + Send + Sync)) -> Option<T>,
}

impl<T> Clone for LocalOps<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for LocalOps<T> {}

/// Autoref specialization: `(&Probe::<T>::new()).local_ops()` is
/// `Some(LocalOps)` when `T: Clone + Send + Sync + 'static`, `None` otherwise.
pub struct Probe<T>(std::marker::PhantomData<T>);

impl<T> Probe<T> {
    /// A probe for `T`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Probe(std::marker::PhantomData)
    }
}

/// The probe's answer for `Clone` types.
pub trait ViaClone<T> {
    /// How to keep `T` in the local tier.
    fn local_ops(&self) -> Option<LocalOps<T>>;
}

impl<T: Clone + Send + Sync + 'static> ViaClone<T> for Probe<T> {
    fn local_ops(&self) -> Option<LocalOps<T>> {
        Some(LocalOps {
            to_any: |value| Arc::new(value.clone()),
            from_any: |any| any.downcast_ref::<T>().cloned(),
        })
    }
}

/// The probe's answer for every other type.
pub trait NotLocal<T> {
    /// `None`: `T` cannot be kept in the local tier.
    fn local_ops(&self) -> Option<LocalOps<T>>;
}

impl<T> NotLocal<T> for &Probe<T> {
    fn local_ops(&self) -> Option<LocalOps<T>> {
        None
    }
}
