//! `GET /metrics`: what the cache records through the `metrics` facade, in
//! Prometheus' text format, rendered by `metrics-exporter-prometheus`.
//!
//! The library records into whichever recorder the application installs;
//! this app installs the Prometheus exporter's, in `main` before the first
//! cached call (a cached function takes its handles on its first call, and
//! handles taken with no recorder installed stay no-ops). The exporter runs
//! no HTTP listener of its own: the actix handler renders its text.

use std::sync::OnceLock;

use cache_runtime::metrics::LATENCY_BUCKETS;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

/// The media type of Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs the Prometheus recorder, once per process, and returns its
/// handle.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            // Buckets make the call durations a Prometheus histogram (a
            // summary otherwise), which aggregates across instances.
            .set_buckets_for_metric(
                Matcher::Full("cache_call_duration_seconds".to_owned()),
                &LATENCY_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .install_recorder()
            .expect("no other recorder is installed in this process");
        ::metrics::describe_gauge!(
            "cache_redis_connected",
            "Whether the cache is connected to Redis (1) or not (0)."
        );
        handle
    })
}

/// The text of `/metrics`: the cache's metrics, and whether the cache is
/// connected now.
pub fn render(redis_connected: bool) -> String {
    ::metrics::gauge!("cache_redis_connected").set(f64::from(u8::from(redis_connected)));
    install().render()
}

/// The value of the series `name` whose labels include every one of
/// `labels`, as [`render`] would show it now; `None` if it has none yet.
pub fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series_value(&install().render(), name, labels)
}

/// One cached function's counters, as the recorder holds them now: what
/// `GET /stats` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FunctionCounters {
    /// The function's path, as in its metrics: `demo_app::repo::list_users`.
    pub function: String,
    /// Its calls: how many durations `cache_call_duration_seconds` holds,
    /// one per call, whatever its outcome.
    pub calls: u64,
    /// `cache_hits_total`, by tier.
    pub hits: Hits,
    /// `cache_misses_total`: the calls that ran the query (or waited for
    /// another call's run of it).
    pub misses: u64,
    /// `cache_errors_total`: the Redis operations that failed.
    pub errors: u64,
}

/// A function's hits, by the tier that answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Hits {
    /// From this process's local tier.
    pub local: u64,
    /// From Redis.
    pub redis: u64,
    /// Stale values from Redis, while a refresh ran (`stale = …`; none of
    /// the demo's functions has it).
    pub stale: u64,
}

impl FunctionCounters {
    /// Every hit, whatever its tier.
    pub fn all_hits(&self) -> u64 {
        self.hits.local + self.hits.redis + self.hits.stale
    }
}

/// The counters of every cached function that has been called, by name.
pub fn per_function() -> Vec<FunctionCounters> {
    functions(&install().render())
}

fn functions(text: &str) -> Vec<FunctionCounters> {
    let mut by_name = std::collections::BTreeMap::<String, FunctionCounters>::new();
    for series in text.lines().filter_map(Series::parse) {
        let Some(function) = series.label("function") else {
            continue;
        };
        let count = series.value as u64;
        let entry = by_name
            .entry(function.to_owned())
            .or_insert_with(|| FunctionCounters {
                function: function.to_owned(),
                ..FunctionCounters::default()
            });
        match (series.name, series.label("tier")) {
            ("cache_call_duration_seconds_count", _) => entry.calls = count,
            ("cache_hits_total", Some("local")) => entry.hits.local = count,
            ("cache_hits_total", Some("redis")) => entry.hits.redis = count,
            ("cache_hits_total", Some("stale")) => entry.hits.stale = count,
            ("cache_misses_total", _) => entry.misses = count,
            ("cache_errors_total", _) => entry.errors = count,
            _ => {}
        }
    }
    // Functions that only evict or store (`…_invalidate`) have no calls to
    // show.
    by_name
        .into_values()
        .filter(|function| function.calls > 0)
        .collect()
}

fn series_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(Series::parse)
        .find(|series| {
            series.name == name
                && labels
                    .iter()
                    .all(|(key, value)| series.label(key) == Some(*value))
        })
        .map(|series| series.value)
}

/// One sample line of Prometheus' text format:
/// `name{label="value",…} 42`, or `name 42`.
struct Series<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Series<'a> {
    /// `None` for a comment, a blank line, or a line that is not a sample.
    fn parse(line: &'a str) -> Option<Series<'a>> {
        if line.starts_with('#') {
            return None;
        }
        let (head, value) = line.rsplit_once(' ')?;
        let value = value.parse().ok()?;
        let Some((name, labels)) = head.split_once('{') else {
            return Some(Series {
                name: head,
                labels: Vec::new(),
                value,
            });
        };
        Some(Series {
            name,
            labels: parse_labels(labels.strip_suffix('}')?)?,
            value,
        })
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// `a="x",b="y \"quoted\""`: the labels, their values unescaped.
fn parse_labels(mut text: &str) -> Option<Vec<(&str, String)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        text = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_found_by_its_name_and_labels() {
        let text = "\
# TYPE cache_hits_total counter
cache_hits_total{function=\"a::f\",tier=\"redis\"} 3
cache_hits_total{function=\"a::f\",tier=\"local\"} 5
cache_hits_total_other{function=\"a::f\",tier=\"local\"} 7
cache_redis_connected 1
";
        let hits = |tier| {
            series_value(
                text,
                "cache_hits_total",
                &[("function", "a::f"), ("tier", tier)],
            )
        };
        assert_eq!(hits("redis"), Some(3.0));
        assert_eq!(hits("local"), Some(5.0));
        assert_eq!(hits("stale"), None);
        assert_eq!(series_value(text, "cache_redis_connected", &[]), Some(1.0));
    }

    #[test]
    fn labels_are_read_whatever_their_order_and_escapes() {
        let series = Series::parse(r#"m{b="say \"hi\"",a="x\\y"} 2"#).unwrap();
        assert_eq!(series.name, "m");
        assert_eq!(series.label("a"), Some("x\\y"));
        assert_eq!(series.label("b"), Some(r#"say "hi""#));
        assert_eq!(series.value, 2.0);
        assert!(Series::parse("# HELP m a metric").is_none());
        assert!(Series::parse("").is_none());
    }

    #[test]
    fn each_function_gets_its_calls_hits_misses_and_errors() {
        let text = "\
cache_hits_total{function=\"r::list\",tier=\"local\"} 8
cache_hits_total{function=\"r::list\",tier=\"redis\"} 1
cache_hits_total{function=\"r::list\",tier=\"stale\"} 0
cache_misses_total{function=\"r::list\"} 2
cache_errors_total{function=\"r::list\"} 1
cache_call_duration_seconds_bucket{function=\"r::list\",le=\"0.001\"} 8
cache_call_duration_seconds_count{function=\"r::list\"} 12
cache_evictions_total{function=\"r::list_invalidate\"} 3
cache_redis_connected 1
";
        let list = FunctionCounters {
            function: "r::list".into(),
            calls: 12,
            hits: Hits {
                local: 8,
                redis: 1,
                stale: 0,
            },
            misses: 2,
            errors: 1,
        };
        assert_eq!(list.all_hits(), 9);
        assert_eq!(functions(text), [list], "no calls, no row");
    }
}
