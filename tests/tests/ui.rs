//! Compile-time behaviour of `#[redis_cached]`: every supported shape
//! compiles (`ui/pass`), and every misuse fails with one error pointing at
//! the offending token (`ui/fail`, one rule per file). Paths are relative to
//! this crate's root, where `cargo test` runs.
//!
//! Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p cache-tests --test ui`, and review them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
