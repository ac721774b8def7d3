//! The service's data: a user, what a client sends to create or replace one,
//! and why a call fails.
//!
//! It imports no other module of the crate: the SQL (`db`), the cache (`repo`)
//! and the handlers (`routes`) all build on it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A row of the `users` table. It is what the handlers send as JSON, and
/// what the cache stores, as JSON too: the cached type must implement
/// `Serialize` and `Deserialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
}

/// What a client sends to create a user or replace one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    pub email: String,
}

/// The longest username or email, in characters: the `VARCHAR(255)` of the
/// PostgreSQL and MySQL schemas, checked here so that SQLite agrees and no
/// backend answers a too-long value with a database error.
pub const MAX_FIELD_CHARS: usize = 255;

impl NewUser {
    /// Checks what the schema cannot check the same way on every backend.
    pub fn validate(&self) -> Result<(), RepoError> {
        let invalid = |message: &str| Err(RepoError::Invalid(message.to_owned()));
        if self.username.trim().is_empty() {
            return invalid("`username` must not be empty");
        }
        if self.username.chars().count() > MAX_FIELD_CHARS {
            return invalid("`username` is longer than 255 characters");
        }
        if self.email.chars().count() > MAX_FIELD_CHARS {
            return invalid("`email` is longer than 255 characters");
        }
        // Whitespace is refused because MariaDB's unique index ignores
        // trailing spaces: `a@x.org ` would clash with `a@x.org` there only.
        let shape_ok = matches!(self.email.split_once('@'),
            Some((local, domain)) if !local.is_empty() && !domain.is_empty());
        if !shape_ok || self.email.chars().any(char::is_whitespace) {
            return invalid("`email` must look like name@domain, without spaces");
        }
        Ok(())
    }
}

/// Why a repository call failed.
#[derive(Debug)]
pub enum RepoError {
    /// No user has this id.
    NotFound,
    /// Another user already has this email (the `UNIQUE` constraint).
    DuplicateEmail,
    /// The input breaks a rule of [`NewUser::validate`].
    Invalid(String),
    /// The database failed: it is down, or something unexpected happened.
    Database(sqlx::Error),
}

impl From<sqlx::Error> for RepoError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            // `email` is the table's only unique column besides the id, which
            // the database assigns.
            sqlx::Error::Database(db_error) if db_error.is_unique_violation() => {
                RepoError::DuplicateEmail
            }
            _ => RepoError::Database(error),
        }
    }
}

impl fmt::Display for RepoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoError::NotFound => f.write_str("no such user"),
            RepoError::DuplicateEmail => f.write_str("a user with this email already exists"),
            RepoError::Invalid(message) => f.write_str(message),
            RepoError::Database(error) => write!(f, "database error: {error}"),
        }
    }
}

impl std::error::Error for RepoError {}
