//! The handler tests of `scenarios/mod.rs` on SQLite: a new file in the temp
//! directory for each test. They need nothing but `redis-server`.

mod common;
#[macro_use]
mod scenarios;

backend_tests!(crate::common::Backend::Sqlite);
