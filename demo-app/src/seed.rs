//! Filling the table: `demo-app seed --users N`, and the first start of an
//! empty database.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use crate::model::{NewUser, RepoError};
use crate::repo::Repo;

/// Rows per `INSERT`: 2 000 bound parameters, far below every backend's limit
/// (SQLite's is 32 766, PostgreSQL's and MySQL's 65 535), and large enough
/// that per-statement costs no longer matter.
pub const BATCH_ROWS: usize = 1000;

/// Adds `count` users, numbered after the largest id so far: `user{n}` with
/// the email `user{n}@example.com`. Returns how many the table has now.
///
/// Then evicts what it changed, like any other write: the cached list and
/// count of a running server would otherwise stay stale until their TTL.
pub async fn seed(repo: &Repo, count: u64, progress: &mut Progress) -> Result<i64, RepoError> {
    let first = repo.db().max_id().await? + 1;
    let last = first.saturating_add(i64::try_from(count).unwrap_or(i64::MAX));
    let users: Vec<NewUser> = (first..last)
        .map(|n| NewUser {
            username: format!("user{n}"),
            email: format!("user{n}@example.com"),
        })
        .collect();
    repo.db()
        .insert_users(&users, BATCH_ROWS, &mut |rows| progress.advance(rows))
        .await?;
    progress.finish();
    repo.users_inserted().await;
    Ok(repo.db().count_users().await?)
}

/// A progress bar on stderr, drawn only when stderr is a terminal, so that
/// logs and CI output get no carriage-return noise.
pub struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    draw: bool,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            draw: std::io::stderr().is_terminal(),
        }
    }

    /// A progress that draws nothing, for tests.
    pub fn hidden(total: u64) -> Progress {
        Progress {
            draw: false,
            ..Progress::new(total)
        }
    }

    pub fn advance(&mut self, rows: usize) {
        self.done += rows as u64;
        if self.draw {
            let _ = write!(std::io::stderr(), "\r{}", self.line());
        }
    }

    pub fn finish(&mut self) {
        if self.draw {
            let _ = writeln!(std::io::stderr(), "\r{}", self.line());
        }
    }

    /// `  seeding [##########..........]  50000/100000  50%  1.2 s`
    fn line(&self) -> String {
        const WIDTH: u64 = 30;
        let filled = (self.done * WIDTH)
            .checked_div(self.total)
            .unwrap_or(WIDTH)
            .min(WIDTH);
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        format!(
            "  seeding [{}{}] {:>7}/{} {percent:>3}%  {:.1} s",
            "#".repeat(filled as usize),
            ".".repeat((WIDTH - filled) as usize),
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_rows() {
        let mut progress = Progress::hidden(200);
        assert!(progress.line().contains("[..............................]"));
        progress.advance(100);
        let line = progress.line();
        assert!(line.contains("[###############...............]"), "{line}");
        assert!(line.contains("100/200  50%"), "{line}");
        progress.advance(100);
        assert!(progress.line().contains("100%"));
        assert!(
            Progress::hidden(0).line().contains("100%"),
            "an empty seed is done"
        );
    }
}
