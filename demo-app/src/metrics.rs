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

fn series_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
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
}
