//! How a cached call is observed: its outcome (for [`track_outcome`]), its
//! span, and its latency, recorded when its future completes.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::{CallSite, SiteKind};

/// How one cached call ended, as recorded on its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A value from the local tier.
    Local,
    /// A fresh value from Redis.
    Hit,
    /// A stale value from Redis (`stale = …`); a background refresh runs.
    Stale,
    /// No usable entry; another caller ran the body and this one got its value.
    Coalesced,
    /// No usable entry; this caller ran the body.
    Miss,
    /// Redis could not be used; the body ran uncached.
    Error,
    /// The last good value (`fail_safe = …`): the body failed, or passed its
    /// `soft_timeout` (it then runs on, and stores its result), or a recent
    /// failure throttles it (`fail_safe_throttle`).
    FailSafe,
    /// Inside [`bypass`](crate::bypass): the body ran, and nothing was read
    /// or stored.
    Bypassed,
}

impl Outcome {
    /// The outcome's name, as the call's span records it (its `outcome`
    /// field): `"local"`, `"hit"`, `"stale"`, `"coalesced"`, `"miss"`,
    /// `"error"`, `"fail_safe"` or `"bypassed"`. For a response header or a
    /// log line that says how an answer was found.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Local => "local",
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Coalesced => "coalesced",
            Outcome::Miss => "miss",
            Outcome::Error => "error",
            Outcome::FailSafe => "fail_safe",
            Outcome::Bypassed => "bypassed",
        }
    }
}

tokio::task_local! {
    static OUTCOME: Cell<Option<Outcome>>;
}

/// Runs `future` and reports how the last cached call that finished inside it
/// ended: for a web handler's `X-Cache: HIT` header, or a test.
///
/// ```no_run
/// # use cache_runtime::{redis_cached, track_outcome, Outcome};
/// # #[redis_cached(key = "answer")] async fn answer() -> u32 { 42 }
/// # async fn handler() {
/// let (value, outcome) = track_outcome(answer()).await;
/// let header = if outcome == Some(Outcome::Hit) { "HIT" } else { "MISS" };
/// # }
/// ```
///
/// `None` if no cached call finished inside `future`.
pub async fn track_outcome<F: Future>(future: F) -> (F::Output, Option<Outcome>) {
    OUTCOME
        .scope(Cell::new(None), async {
            let output = future.await;
            (output, OUTCOME.with(Cell::get))
        })
        .await
}

pin_project_lite::pin_project! {
    /// A cached call's future: the call, polled inside its span, then its
    /// outcome and latency recorded. A type of its own rather than an
    /// `async` wrapper, which would hold the call's future twice.
    ///
    /// Generic over the call's future, so compiled once per annotated
    /// function: it enters the span itself rather than wrap the call in
    /// `tracing`'s `Instrumented` (a dozen more functions per annotated
    /// function), and records the end in a function that is not generic.
    /// A call that is cancelled is dropped outside its span.
    ///
    /// The call's key, epoch, span and start time are taken when this is
    /// built: the generated code awaits it at once.
    pub struct Observe<F> {
        #[pin]
        call: F,
        span: tracing::Span,
        site: &'static CallSite,
        started: Instant,
        finished: bool,
    }
}

impl<F> Observe<F> {
    pub(crate) fn new(call: F, observed: Observed) -> Self {
        Observe {
            call,
            span: observed.span,
            site: observed.site,
            started: observed.started,
            finished: false,
        }
    }
}

impl<R, F: Future<Output = (R, Outcome)>> Future for Observe<F> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = self.project();
        assert!(!*this.finished, "a cached call polled after it finished");
        let polled = {
            let _entered = this.span.enter();
            this.call.poll(cx)
        };
        let Poll::Ready((result, outcome)) = polled else {
            return Poll::Pending;
        };
        *this.finished = true;
        finished(this.site, *this.started, this.span, outcome);
        Poll::Ready(result)
    }
}

/// Records how a call ended: its latency, its outcome (for
/// [`track_outcome`]) and both on its span.
fn finished(site: &CallSite, started: Instant, span: &tracing::Span, outcome: Outcome) {
    let elapsed = started.elapsed();
    site.record_latency(elapsed);
    let _ = OUTCOME.try_with(|tracked| tracked.set(Some(outcome)));
    span.record("outcome", outcome.as_str());
    span.record("elapsed_us", crate::units::micros(elapsed));
}

/// A call's site, span and start, taken before its future is built.
pub(crate) struct Observed {
    site: &'static CallSite,
    span: tracing::Span,
    pub(crate) started: Instant,
}

impl Observed {
    pub(crate) fn start(site: &'static CallSite) -> Observed {
        site.register(SiteKind::Cached);
        let span = tracing::debug_span!(
            "redis_cached",
            function = site.name(),
            outcome = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        Observed {
            site,
            span,
            started: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_own_name() {
        let names = [
            Outcome::Local,
            Outcome::Hit,
            Outcome::Stale,
            Outcome::Coalesced,
            Outcome::Miss,
            Outcome::Error,
            Outcome::FailSafe,
            Outcome::Bypassed,
        ]
        .map(Outcome::as_str);
        assert_eq!(
            names,
            [
                "local",
                "hit",
                "stale",
                "coalesced",
                "miss",
                "error",
                "fail_safe",
                "bypassed"
            ]
        );
    }
}
