//! The handler tests of `scenarios/mod.rs` on MySQL or MariaDB: the server of
//! `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/demo_test`), a
//! database per test. If the server does not answer, every test fails and
//! says what to start: they never skip.

mod common;
#[macro_use]
mod scenarios;

backend_tests!(crate::common::Backend::MySql);
