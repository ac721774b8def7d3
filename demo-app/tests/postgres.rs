//! The handler tests of `scenarios/mod.rs` on PostgreSQL: the database of
//! `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/demo_test`),
//! a schema per test. If the server does not answer, every test fails and
//! says what to start: they never skip.

mod common;
#[macro_use]
mod scenarios;

backend_tests!(crate::common::Backend::Postgres);
