//! Background retries: one loop, on the I/O runtime, that repeats a round of
//! work with a capped exponential backoff until the round says it is done.
//! Parked evictions and owed invalidation messages both go through it.

use std::future::Future;
use std::time::Duration;

/// The first wait before a round, and the wait after a round that made
/// progress.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two rounds while Redis keeps failing.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How one round went.
pub(crate) enum Round {
    /// Nothing is left to do: the loop ends.
    Done,
    /// Some work went through and more is waiting: go again soon.
    Progress,
    /// Redis failed: back off.
    Failed,
}

/// Spawns the loop on the I/O runtime: wait, run a round, and back off from
/// [`FIRST_BACKOFF`] to [`MAX_BACKOFF`] while rounds fail, until one is
/// [`Round::Done`]. `Err` (with the reason) if the I/O runtime cannot run.
pub(crate) fn spawn_until_done<F, Fut>(mut round: F) -> Result<(), &'static str>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Round> + Send,
{
    let io = crate::io::io_runtime()?;
    io.spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::time::sleep(backoff).await;
            backoff = match round().await {
                Round::Done => return,
                Round::Progress => FIRST_BACKOFF,
                Round::Failed => next_backoff(backoff),
            };
        }
    });
    Ok(())
}

fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = FIRST_BACKOFF;
        let mut seen = vec![];
        for _ in 0..6 {
            backoff = next_backoff(backoff);
            seen.push(backoff.as_millis());
        }
        assert_eq!(seen, [100, 200, 400, 800, 1000, 1000]);
    }
}
