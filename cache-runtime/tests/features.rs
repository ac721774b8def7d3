//! What a build gets when a cargo feature is off: a compile error, or a
//! `ConfigError`, that names the feature; never a silent downgrade. Run with
//! `cargo test -p cache-runtime --no-default-features --test features`
//! (`scripts/test` does): with every feature on, there is nothing to check.

#[cfg(not(feature = "local"))]
#[test]
fn local_true_without_the_local_feature_is_a_compile_error() {
    trybuild::TestCases::new().compile_fail("tests/ui-features/local_without_the_feature.rs");
}

#[cfg(not(feature = "binary"))]
#[test]
fn binary_format_without_the_binary_feature_is_refused() {
    trybuild::TestCases::new().compile_fail("tests/ui-features/binary_without_the_feature.rs");
    let built = cache_runtime::Cache::builder()
        .format(cache_runtime::Format::Binary)
        .build();
    assert!(
        matches!(
            built,
            Err(cache_runtime::ConfigError::FeatureDisabled {
                feature: "binary",
                ..
            })
        ),
        "{built:?}"
    );
}

#[cfg(not(all(feature = "tls", feature = "cluster")))]
#[test]
fn tls_and_cluster_urls_without_their_features_are_refused_by_build() {
    use cache_runtime::{Cache, ConfigError};

    let feature_off = |result: Result<Cache, ConfigError>| match result {
        Err(error @ ConfigError::FeatureDisabled { feature, .. }) => {
            assert!(
                error.to_string().contains(&format!("`{feature}` feature")),
                "{error}"
            );
            Some(feature)
        }
        _ => None,
    };
    if !cfg!(feature = "tls") {
        let tls = Cache::builder().url("rediss://127.0.0.1:6380").build();
        assert_eq!(feature_off(tls), Some("tls"));
    }
    if !cfg!(feature = "cluster") {
        let cluster = Cache::builder()
            .cluster_urls(["redis://127.0.0.1:7000"])
            .build();
        assert_eq!(feature_off(cluster), Some("cluster"));
    }
}
