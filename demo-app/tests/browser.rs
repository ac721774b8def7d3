//! The page at `/`, used as a visitor would, in headless Chromium driven
//! through WebDriver (chromedriver), against the `demo-app` binary with its
//! own `redis-server`:
//!
//! 1. open the page: every control has a label;
//! 2. time 10 accesses, the list evicted first: a miss, then hits, the
//!    local tier named; a bar per access in the chart, coloured by tier,
//!    and the medians under it; the live counters show the calls;
//! 3. add a user, from the keyboard: the user count goes up, and the next
//!    access is a miss whose list has the new user;
//! 4. stop Redis: the panel says so, the eviction button says it is
//!    parked, and the page still answers, each access a miss that says the
//!    cache could not be used;
//! 5. at a phone's width, nothing is wider than the screen;
//! 6. the browser's console has no error (the favicon is served).
//!
//! It saves screenshots in the target directory (`target/demo-screenshot.png`,
//! `…-redis-down.png`, `…-phone.png`; `…-failure.png` when it fails), where
//! CI keeps its output. It never skips: without Chromium and chromedriver
//! it fails, and says what to install.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_tests::RedisServer;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use common::process::{DemoProcess, free_port};

/// Few enough users that an access takes milliseconds, whatever the machine.
const USERS: u64 = 2000;
/// How long the page may take to show what the test waits for.
const PATIENCE: Duration = Duration::from_secs(30);
const WINDOW: (u32, u32) = (1280, 1500);

#[tokio::test]
async fn a_visitor_times_the_cache_adds_a_user_and_stops_redis() {
    let mut redis = RedisServer::start();
    let app = DemoProcess::start("browser", &redis.url(), USERS);
    let driver = ChromeDriver::start();
    let browser = driver.session().await;
    let visit = std::panic::AssertUnwindSafe(visit(&browser, &app, &mut redis))
        .catch_unwind()
        .await;
    if visit.is_err() {
        save_screenshot(&browser, "demo-screenshot-failure.png").await;
        eprintln!("demo-app's log:\n{}", app.log());
    }
    // Closing the session quits Chromium.
    let _ = browser.close().await;
    if let Err(panic) = visit {
        std::panic::resume_unwind(panic);
    }
}

async fn visit(browser: &Client, app: &DemoProcess, redis: &mut RedisServer) {
    // 1. The page, and a label for every control.
    browser.goto(&app.url("/")).await.expect("open the page");
    assert!(title(browser).await.contains("Redis"));
    assert_eq!(text(browser, "#count").await, USERS.to_string());
    let unlabelled = script(
        browser,
        "return [...document.querySelectorAll('button, input')]
            .filter(e => !(e.labels && e.labels.length) && !e.textContent.trim()
                         && !e.getAttribute('aria-label'))
            .map(e => e.id)",
    )
    .await;
    assert_eq!(unlabelled, json!([]), "controls without a label");
    wait_for(browser, "#redis-state[data-state='up']").await;
    wait_for(browser, "#local-tier[data-listening='true']").await;

    // 2. Ten accesses, the list evicted first.
    click(browser, "#time").await;
    wait_for(browser, "body[data-runs='1']").await;
    let tiers = attributes(browser, "#accesses tbody tr", "data-tier").await;
    assert_eq!(tiers.len(), 10, "{tiers:?}");
    assert_eq!(tiers[0], "miss", "evicted first: {tiers:?}");
    assert!(
        tiers[1..]
            .iter()
            .all(|tier| tier == "redis" || tier == "local"),
        "then hits: {tiers:?}"
    );
    assert!(
        tiers.iter().any(|tier| tier == "local"),
        "the local tier serves the list: {tiers:?}"
    );
    let named = texts(browser, "#accesses tbody tr td:nth-child(3)").await;
    let expected: Vec<&str> = tiers
        .iter()
        .map(|tier| match tier.as_str() {
            "miss" => "miss",
            "redis" => "Redis hit",
            _ => "local hit",
        })
        .collect();
    assert_eq!(named, expected, "each access names its tier");
    assert_eq!(
        attributes(browser, "#chart rect.bar", "data-tier").await,
        tiers,
        "a bar per access, coloured by its tier"
    );
    let local = text(browser, "#summary li[data-tier='local']").await;
    assert!(
        local.contains("median") && local.contains("faster than the miss"),
        "{local}"
    );
    assert!(text(browser, "#note").await.contains("local hit"));
    // The panel counts the calls (it refreshes every second).
    wait_for(
        browser,
        "#functions tr[data-function='demo_app::repo::list_users']",
    )
    .await;
    let row = wait_until("the panel counts the ten accesses", || async {
        let row = text(
            browser,
            "#functions tr[data-function='demo_app::repo::list_users']",
        )
        .await;
        let cells: Vec<u64> = row
            .split_whitespace()
            .filter_map(|cell| cell.parse().ok())
            .collect();
        // local hits, Redis hits, misses, errors: every access counted.
        (cells.len() == 4 && cells[..3].iter().sum::<u64>() >= 10).then_some(row)
    })
    .await;
    assert!(row.contains('%'), "a hit ratio: {row}");
    save_screenshot(browser, "demo-screenshot.png").await;

    // 3. A user added from the keyboard: a write, which evicts the list.
    script(browser, "document.getElementById('add').focus()").await;
    browser
        .active_element()
        .await
        .expect("the focused button")
        .send_keys("\u{E007}") // Enter
        .await
        .expect("press Enter");
    wait_for(browser, "body[data-adds='1']").await;
    assert_eq!(text(browser, "#count").await, (USERS + 1).to_string());
    click(browser, "#evict-first").await; // unticked: the write alone evicts
    let accesses = find(browser, "#accesses-n").await;
    accesses.clear().await.expect("clear the field");
    accesses.send_keys("3").await.expect("type 3");
    click(browser, "#time").await;
    wait_for(browser, "body[data-runs='2']").await;
    let tiers = attributes(browser, "#accesses tbody tr", "data-tier").await;
    assert_eq!(tiers.len(), 3, "{tiers:?}");
    assert_eq!(tiers[0], "miss", "the write evicted the list: {tiers:?}");
    assert_eq!(
        text(browser, "#count").await,
        (USERS + 1).to_string(),
        "the list the access read has the new user"
    );

    // 4. Redis stops. The page says so, and keeps answering.
    redis.kill();
    wait_for(browser, "#redis-state[data-state='down']").await;
    wait_for(browser, "#local-tier[data-listening='false']").await;
    assert!(text(browser, "#live-state").await.contains("Redis is down"));
    click(browser, "#evict").await;
    wait_for(browser, "body[data-evictions='1']").await;
    assert!(
        text(browser, "#note")
            .await
            .contains("could not be reached"),
        "the eviction is parked, and the page says so"
    );
    click(browser, "#time").await;
    wait_for(browser, "body[data-runs='3']").await;
    assert_eq!(
        attributes(browser, "#accesses tbody tr", "data-status").await,
        ["200", "200", "200"]
    );
    assert_eq!(
        attributes(browser, "#accesses tbody tr", "data-outcome").await,
        ["error", "error", "error"],
        "the cache could not be used"
    );
    assert_eq!(
        attributes(browser, "#chart rect.bar", "data-tier").await,
        ["miss", "miss", "miss"]
    );
    let note = text(browser, "#note").await;
    assert!(note.contains("could not be used"), "{note}");
    save_screenshot(browser, "demo-screenshot-redis-down.png").await;

    // 5. A phone's width.
    browser
        .set_window_size(390, 844)
        .await
        .expect("a phone's width");
    let fits = script(
        browser,
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
    )
    .await;
    assert_eq!(fits, json!(true), "the page is wider than a phone");
    save_screenshot(browser, "demo-screenshot-phone.png").await;

    // 6. The icon is there, and the console has no error.
    let icon = script(
        browser,
        "return fetch('/favicon.ico').then(r => r.status + ' ' + r.headers.get('content-type'))",
    )
    .await;
    assert_eq!(icon, json!("200 image/svg+xml"));
    let log = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("the browser's log");
    let errors: Vec<&Value> = log
        .as_array()
        .expect("a list of log entries")
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "the console has errors: {errors:#?}");
}

/// chromedriver on a free port, with a fresh Chromium profile; both gone
/// on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

const INSTALL: &str = "Install Chromium and its WebDriver: `apt-get install -y chromium chromium-driver` \
     (scripts/test and .ci/run do), or set CHROMIUM and CHROMEDRIVER to their paths.";

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("\n\ncannot run `{binary}`: {error}\nThis test never skips. {INSTALL}\n")
            });
        let profile =
            std::env::temp_dir().join(format!("demo-app-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let driver = ChromeDriver {
            child,
            port,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        driver
    }

    /// A browser session: headless Chromium, its console recorded.
    async fn session(&self) -> Client {
        let chromium = chromium();
        // Without the background-networking flags, Chromium reaches for
        // Google's services, which a closed network refuses.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            &format!("--user-data-dir={}", self.profile.display()),
        ];
        let capabilities: Capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }))
        .expect("capabilities");
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}/", self.port))
            .await
            .unwrap_or_else(|error| panic!("\n\nChromium did not start: {error}\n{INSTALL}\n"))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Chromium's binary: `CHROMIUM`, else `chromium` or `chromium-browser` on
/// the `PATH`.
fn chromium() -> String {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .map(|found| found.display().to_string())
        .unwrap_or_else(|| {
            panic!("\n\nno Chromium on the PATH. This test never skips. {INSTALL}\n")
        })
}

/// chromedriver's command for the browser's console (`goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type": "browser"}"#.to_owned()),
        )
    }
}

/// Where CI keeps its output: the target directory.
fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(PathBuf::from).unwrap_or(tmp)
}

async fn save_screenshot(browser: &Client, name: &str) {
    let Ok(png) = browser.screenshot().await else {
        eprintln!("no screenshot {name}: the browser did not take it");
        return;
    };
    let path = target_dir().join(name);
    match std::fs::write(&path, png) {
        Ok(()) => println!("screenshot: {}", path.display()),
        Err(error) => eprintln!("cannot save {}: {error}", path.display()),
    }
}

async fn find(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no `{css}`: {error}"))
}

async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("`{css}` did not appear within {PATIENCE:?}: {error}"))
}

/// Polls `check` until it gives a value, for at most [`PATIENCE`].
async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(browser: &Client, css: &str) {
    find(browser, css)
        .await
        .click()
        .await
        .unwrap_or_else(|error| panic!("cannot click `{css}`: {error}"));
}

async fn text(browser: &Client, css: &str) -> String {
    find(browser, css).await.text().await.expect("its text")
}

async fn texts(browser: &Client, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in browser.find_all(Locator::Css(css)).await.expect("find") {
        texts.push(element.text().await.expect("its text"));
    }
    texts
}

async fn attributes(browser: &Client, css: &str, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    for element in browser.find_all(Locator::Css(css)).await.expect("find") {
        values.push(element.attr(name).await.expect("attr").unwrap_or_default());
    }
    values
}

async fn title(browser: &Client) -> String {
    browser.title().await.expect("the title")
}

async fn script(browser: &Client, source: &str) -> Value {
    browser
        .execute(source, Vec::new())
        .await
        .unwrap_or_else(|error| panic!("`{source}` failed: {error}"))
}
