//! `GET /metrics`: the runtime's per-function counters in Prometheus' text
//! exposition format.
//!
//! `cache_runtime::metrics::snapshot()` lists every `#[redis_cached]`
//! function that has run at least once, with its hits, misses, errors and a
//! latency histogram. Nothing here depends on a Prometheus client library:
//! the format is a few lines of text per function.

use std::fmt::Write;
use std::time::Duration;

use cache_runtime::metrics::{FunctionMetrics, LATENCY_BUCKETS};

/// The media type of Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `functions` (from `cache_runtime::metrics::snapshot()`) and
/// whether the cache is connected now.
pub fn render(functions: &[FunctionMetrics], redis_connected: bool) -> String {
    let rows: Vec<Row> = functions.iter().map(Row::from).collect();
    render_rows(&rows, redis_connected)
}

/// What this endpoint exports of one function's counters.
struct Row<'a> {
    function: &'a str,
    hits: u64,
    misses: u64,
    errors: u64,
    /// Calls per latency bucket, not cumulative; the last one is `+Inf`.
    buckets: &'a [u64],
    sum: Duration,
}

impl<'a> From<&'a FunctionMetrics> for Row<'a> {
    fn from(m: &'a FunctionMetrics) -> Row<'a> {
        Row {
            function: m.function,
            hits: m.hits,
            misses: m.misses,
            errors: m.errors,
            buckets: &m.latency.buckets,
            sum: m.latency.sum,
        }
    }
}

/// A counter's name, its help text, and how to read it from a row.
type Counter = (&'static str, &'static str, fn(&Row<'_>) -> u64);

fn render_rows(rows: &[Row<'_>], redis_connected: bool) -> String {
    let mut out = String::new();
    let counters: [Counter; 3] = [
        (
            "cache_hits_total",
            "Calls answered from Redis without running the function.",
            |r| r.hits,
        ),
        (
            "cache_misses_total",
            "Calls that found no usable entry and ran the function.",
            |r| r.misses,
        ),
        (
            "cache_errors_total",
            "Failed Redis operations (unreachable, too slow, server error); the call ran the function.",
            |r| r.errors,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for row in rows {
            let _ = writeln!(
                out,
                "{name}{{function=\"{}\"}} {}",
                label(row.function),
                value(row)
            );
        }
    }

    let name = "cache_call_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Duration of cached calls, the function's body included on a miss."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for row in rows {
        let function = label(row.function);
        // The runtime counts calls per bucket; Prometheus wants each bucket
        // to count every call up to its bound, so the counts accumulate.
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(row.buckets) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{function=\"{function}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count: u64 = row.buckets.iter().sum();
        let _ = writeln!(
            out,
            "{name}_bucket{{function=\"{function}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{function=\"{function}\"}} {}",
            row.sum.as_secs_f64()
        );
        let _ = writeln!(out, "{name}_count{{function=\"{function}\"}} {count}");
    }

    let _ = writeln!(
        out,
        "# HELP cache_redis_connected Whether the cache is connected to Redis (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE cache_redis_connected gauge");
    let _ = writeln!(out, "cache_redis_connected {}", u8::from(redis_connected));
    out
}

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let mut buckets = [0; 15];
        buckets[0] = 2; // <= 50 µs
        buckets[6] = 1; // <= 5 ms
        buckets[14] = 1; // > 1 s
        let row = Row {
            function: "demo_app::repo::get_user",
            hits: 3,
            misses: 1,
            errors: 0,
            buckets: &buckets,
            sum: Duration::from_millis(1500),
        };
        let text = render_rows(&[row], true);
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no line `{needle}` in:\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let f = r#"function="demo_app::repo::get_user""#;
        assert_eq!(line(&format!("cache_hits_total{{{f}}}")), "3");
        assert_eq!(line(&format!("cache_misses_total{{{f}}}")), "1");
        assert_eq!(line(&format!("cache_errors_total{{{f}}}")), "0");
        let bucket = |le: &str| {
            line(&format!(
                "cache_call_duration_seconds_bucket{{{f},le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.00005"), "2");
        assert_eq!(bucket("0.0025"), "2");
        assert_eq!(bucket("0.005"), "3");
        assert_eq!(bucket("1"), "3");
        assert_eq!(bucket("+Inf"), "4");
        assert_eq!(
            line(&format!("cache_call_duration_seconds_count{{{f}}}")),
            "4"
        );
        assert_eq!(
            line(&format!("cache_call_duration_seconds_sum{{{f}}}")),
            "1.5"
        );
        assert_eq!(line("cache_redis_connected"), "1");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
