//! `rediss://` with rustls, and ACL users with passwords, against a real
//! `redis-server` with a TLS port and a certificate the test generates. A
//! wrong password or a missing CA is reported clearly and fails open; the
//! local tier listens over TLS too.

use std::time::Duration;

use cache_runtime::{Cache, LocalTierSettings, Outcome, redis_cached, track_outcome};
use cache_tests::{Calls, RedisServer, TestCertificates, caches, eventually};
use redis::Commands;

#[redis_cached(key = "secure:{id}", ttl = 60, cache = cache)]
async fn secure(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

/// The connection error the cache reports, once it has one (within 5 s).
async fn reported_connect_error(cache: &Cache) -> String {
    let reported = eventually(Duration::from_secs(5), || {
        let error = cache.last_connect_error();
        async move { error.is_some() }
    })
    .await;
    assert!(reported.is_some());
    cache.last_connect_error().unwrap()
}

fn tls_server(certificates: &TestCertificates) -> (RedisServer, u16) {
    let tls_port = RedisServer::unused_port();
    let server = RedisServer::start_with(certificates.server_args(tls_port));
    (server, tls_port)
}

#[tokio::test]
async fn rediss_with_the_servers_ca_caches() {
    let certificates = TestCertificates::generate();
    let (_server, tls_port) = tls_server(&certificates);
    let cache = Cache::builder()
        .url(format!("rediss://127.0.0.1:{tls_port}"))
        .tls_root_ca_pem(certificates.ca_pem())
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let calls = Calls::default();
    assert!(caches(&calls, || secure(&cache, &calls, 1)).await);
    assert!(cache.is_connected());
}

#[tokio::test]
async fn rediss_without_the_ca_fails_open_and_says_why() {
    let certificates = TestCertificates::generate();
    let (_server, tls_port) = tls_server(&certificates);
    // The system's roots do not include the test's CA.
    let cache = Cache::builder()
        .url(format!("rediss://127.0.0.1:{tls_port}"))
        .deadline(Duration::from_millis(200))
        .build()
        .unwrap();
    let calls = Calls::default();
    for id in 0..3 {
        assert_eq!(secure(&cache, &calls, id).await, id);
    }
    assert_eq!(calls.get(), 3, "every call ran uncached");
    let error = reported_connect_error(&cache).await.to_lowercase();
    assert!(error.contains("certificate"), "unclear TLS error: {error}");
}

#[redis_cached(key = "near:{id}", ttl = 60, local = true, cache = cache)]
async fn near(cache: &Cache, id: u32) -> u32 {
    id
}

/// The local tier listens over TLS too, with the same root CA: another
/// client's change reaches its copy.
#[tokio::test]
async fn rediss_with_a_local_tier_hears_every_change() {
    let certificates = TestCertificates::generate();
    let (server, tls_port) = tls_server(&certificates);
    let cache = Cache::builder()
        .url(format!("rediss://127.0.0.1:{tls_port}"))
        .tls_root_ca_pem(certificates.ca_pem())
        .deadline(Duration::from_secs(1))
        .local_tier(LocalTierSettings::new())
        .build()
        .unwrap();
    let served = eventually(Duration::from_secs(5), || async {
        track_outcome(near(&cache, 1)).await.1 == Some(Outcome::Local)
    })
    .await;
    assert!(served.is_some(), "never served locally over TLS");

    let _: () = server
        .client()
        .set("near:1", r#"{"v":1,"data":41}"#)
        .unwrap();
    let seen = eventually(Duration::from_secs(1), || async {
        near(&cache, 1).await == 41
    })
    .await;
    assert!(seen.is_some(), "the change never reached the local copy");
}

fn acl_server() -> RedisServer {
    let server = RedisServer::start();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">s3cret-pw", "~*", "&*", "+@all"][..])
        .query(&mut server.client())
        .unwrap();
    server
}

#[tokio::test]
async fn an_acl_user_with_its_password_caches() {
    let server = acl_server();
    let cache = Cache::builder()
        .url(format!("redis://app:s3cret-pw@127.0.0.1:{}", server.port()))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let calls = Calls::default();
    assert!(caches(&calls, || secure(&cache, &calls, 1)).await);
    let whoami = server.client_list();
    assert!(
        whoami.contains("user=app"),
        "connected as the ACL user: {whoami}"
    );
}

#[tokio::test]
async fn a_wrong_password_fails_open_says_why_and_never_shows_the_password() {
    let server = acl_server();
    let cache = Cache::builder()
        .url(format!("redis://app:wrong-pw@127.0.0.1:{}", server.port()))
        .deadline(Duration::from_millis(200))
        .build()
        .unwrap();
    let calls = Calls::default();
    for id in 0..3 {
        assert_eq!(secure(&cache, &calls, id).await, id);
    }
    assert_eq!(calls.get(), 3);
    let error = reported_connect_error(&cache).await;
    assert!(
        error.contains("WRONGPASS") || error.to_lowercase().contains("auth"),
        "unclear authentication error: {error}"
    );
    for shown in [error, format!("{cache:?}")] {
        assert!(!shown.contains("wrong-pw"), "the password leaked: {shown}");
    }
}
