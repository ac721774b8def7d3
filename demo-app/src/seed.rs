//! Filling the table: `demo-app seed --users N`, and the first start of an
//! empty database.

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::{NewUser, RepoError};
use crate::repo::Repo;

/// Rows per `INSERT`: 2 000 bound parameters, far below every backend's limit
/// (SQLite's is 32 766, PostgreSQL's and MySQL's 65 535), and large enough
/// that per-statement costs no longer matter.
pub const BATCH_ROWS: usize = 1000;

/// Adds `count` users, numbered after the largest id so far: `user{n}` with
/// the email `user{n}@example.com`. Returns how many the table has now.
/// `progress` moves on by each batch's rows, and is finished at the commit.
///
/// Then evicts what it changed, like any other write: the cached list and
/// count of a running server would otherwise stay stale until their TTL.
pub async fn seed(repo: &Repo, count: u64, progress: &ProgressBar) -> Result<i64, RepoError> {
    let first = repo.db().max_id().await? + 1;
    let last = first.saturating_add(i64::try_from(count).unwrap_or(i64::MAX));
    let users: Vec<NewUser> = (first..last)
        .map(|n| NewUser {
            username: format!("user{n}"),
            email: format!("user{n}@example.com"),
        })
        .collect();
    repo.db()
        .insert_users(&users, BATCH_ROWS, &mut |rows| progress.inc(rows as u64))
        .await?;
    progress.finish();
    repo.users_inserted().await;
    Ok(repo.db().count_users().await?)
}

/// The bar for seeding `total` users, on stderr:
/// `  seeding [###############>..............]  50,000/100,000  50%  1s (ETA 1s)`.
///
/// indicatif draws it only when stderr is a terminal, so that logs and CI
/// output get no carriage-return noise; [`ProgressBar::hidden`] draws nothing
/// anywhere, for tests.
pub fn progress_bar(total: u64) -> ProgressBar {
    ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "  seeding [{bar:30}] {human_pos:>7}/{human_len} {percent:>3}%  {elapsed} (ETA {eta})",
        )
        .expect("a valid template")
        .progress_chars("#>."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_counts_the_rows() {
        let bar = progress_bar(200);
        assert_eq!(bar.length(), Some(200));
        bar.inc(100);
        assert_eq!(bar.position(), 100);
        bar.inc(100);
        bar.finish();
        assert!(bar.is_finished());
        assert_eq!(bar.position(), 200);
    }
}
