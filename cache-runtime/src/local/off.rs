//! The local tier without the `local` feature: a type with no values, so
//! that no tier can exist and every path that would use one is dead code.
//! `local = true` is refused at compile time, and `local_tier` on the
//! builder by `build()`, each naming the feature.

use std::time::{Duration, Instant};

use super::LocalOps;
use crate::change::Change;
use crate::status::LocalTierStatus;

/// No local tier can be made without the `local` feature.
pub(crate) enum LocalTier {}

/// What the tier would note before a read from Redis; never made.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {}

impl LocalTier {
    pub(crate) fn for_all_functions(&self) -> bool {
        match *self {}
    }

    pub(crate) fn get<T>(&self, _: &str, _: &LocalOps<T>, _: Instant) -> Option<T> {
        match *self {}
    }

    pub(crate) fn mark(&self, _: &str) -> Mark {
        match *self {}
    }

    pub(crate) fn insert<T>(
        &self,
        _: &str,
        _: &T,
        _: &LocalOps<T>,
        _: Duration,
        _: usize,
        _: Mark,
    ) {
        match *self {}
    }

    pub(crate) fn status(&self) -> LocalTierStatus {
        match *self {}
    }

    pub(crate) fn forget(&self, _: &Change) {
        match *self {}
    }
}
