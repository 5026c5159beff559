//! End-to-end tests of the page at `/` in a real headless Chromium (Debian's `chromium` and
//! `chromedriver`), driven over WebDriver with fantoccini. The service is the real one on
//! port 0; the partners are its bundled bureau simulator (the real bureaus cannot be reached
//! here). Each test saves a screenshot of its end state in `target/browser-screenshots/`.
//! Each test's chromedriver, Chromium and Chromium's helpers end with the test, passed or
//! failed, and a test that leaves any of them running fails.
//!
//! Without chromedriver on the machine these tests say so and pass, unless `REQUIRE_BROWSER`
//! is set (the README's test command installs Chromium and sets it, so CI cannot skip them).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A headless Chromium behind its own chromedriver; both end with the test, passed or failed.
///
/// Dropping it closes the WebDriver session (chromedriver then quits Chromium), kills
/// chromedriver's process group (for a driver or browser that did not answer), and checks
/// that no process of this browser is left: a test that passes but leaves one fails.
struct Browser {
    client: Client,
    session: String,
    port: u16,
    driver: ProcessGroup,
    /// HOME of chromedriver and everything it starts, and the parent of Chromium's profile.
    /// Its path is in the command line of each of these processes, crash handlers included
    /// (they leave chromedriver's group), which is how the check after the test finds them.
    home: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        close_session(self.port, &self.session);
        self.driver.kill();
        let left = processes_left(self.driver.id(), &self.marker(), Duration::from_secs(10));
        if left.is_empty() {
            return;
        }
        let report = format!("browser processes outlived the test: {left:#?}");
        // A second panic while the test's own unwinds would abort the whole run.
        if std::thread::panicking() {
            eprintln!("{report}");
        } else {
            panic!("{report}");
        }
    }
}

/// `DELETE /session/{id}` to chromedriver, which quits Chromium. Blocking, as it runs in
/// `drop`, where the test's runtime may be gone; errors are ignored, the group kill follows.
fn close_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        // chromedriver answers once Chromium has quit.
        let _ = stream.read_to_end(&mut Vec::new());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver and a Chromium session, or `None` (with a note) where there is none.
async fn browser() -> Option<Browser> {
    let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let home = tempfile::Builder::new()
        .prefix("browser-test-")
        .tempdir()
        .unwrap();
    let mut command = Command::new(&driver_bin);
    command
        .arg(format!("--port={port}"))
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let driver = match ProcessGroup::spawn(command) {
        Ok(group) => group,
        Err(e) => {
            assert!(
                std::env::var_os("REQUIRE_BROWSER").is_none(),
                "REQUIRE_BROWSER is set but `{driver_bin}` cannot start: {e}"
            );
            eprintln!("SKIPPED: no chromedriver ({e}); `bash test.sh` installs it");
            return None;
        }
    };
    let mut options = serde_json::Map::new();
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = home.path().join("profile");
    options.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1200,1500",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(options.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                let session = client
                    .session_id()
                    .await
                    .unwrap()
                    .expect("a new session has an id");
                return Some(Browser {
                    client,
                    session,
                    port,
                    driver,
                    home,
                });
            }
            // chromedriver takes a moment to listen.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

impl Browser {
    /// What the command line of each of this browser's processes contains.
    fn marker(&self) -> String {
        self.home.path().to_string_lossy().into_owned()
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `condition` (a JavaScript expression) is true in the page.
    async fn until(&self, condition: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.js(&format!("return Boolean({condition});")).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                self.screenshot("timed-out").await;
                panic!(
                    "the page never showed `{condition}`; it shows: {}",
                    self.js("return document.querySelector('main').innerText;")
                        .await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let input = self.client.find(Locator::Css(css)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Fills in the form and presses the button, as a person would.
    async fn run_analysis(&self, key: &str, cpf: &str) {
        self.type_into("#api-key", key).await;
        self.type_into("#cpf", cpf).await;
        self.client
            .find(Locator::Css("#run"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Saves the page as `target/browser-screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The ids of the events the page lists, in order.
    async fn event_ids(&self) -> Vec<u64> {
        serde_json::from_value(
            self.js("return [...document.querySelectorAll('#events li')].map(li => Number(li.dataset.eventId));")
                .await,
        )
        .unwrap()
    }

    /// The analysis the page follows, as the service reports it.
    async fn analysis(&self, app: &TestApp) -> Value {
        let id = self
            .js("return JSON.parse(sessionStorage.getItem('credit-analysis.current')).id;")
            .await;
        app.get_json(ACME, &format!("/v1/analyses/{}", id.as_str().unwrap()))
            .await
    }
}

/// Checks what both analysis tests see at the end: every event once, in order, and the
/// figures, the chart and the table agreeing with the service's own record.
async fn assert_complete_and_consistent(b: &Browser, app: &TestApp) {
    let snapshot = b.analysis(app).await;
    assert_eq!(snapshot["status"], "completed", "{snapshot}");
    let summary = &snapshot["summary"];
    let id = snapshot["id"].as_str().unwrap();

    // Every event of the analysis once, in order: the page's list against the service's log.
    let ids = b.event_ids().await;
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "each event once, none missing, in order");
    assert_eq!(
        b.js("return document.getElementById('events').dataset.repeats;")
            .await,
        json!("0"),
        "the stream resumed after the last event: the page had nothing to drop"
    );
    let server_events = app_event_count(app, id).await;
    assert_eq!(
        ids.len(),
        server_events,
        "the page shows every event the service logged"
    );

    // The stored count and the bar.
    let transactions = summary["transactions"].as_u64().unwrap();
    let stored = b
        .js("return document.getElementById('stored').value.replaceAll(',', '');")
        .await;
    assert_eq!(stored, json!(transactions.to_string()));
    assert_eq!(
        b.js("const p = document.getElementById('progress'); return [p.value, p.max];")
            .await,
        json!([transactions, transactions])
    );

    // One bar per category with spending, largest first.
    let mut spend: Vec<(String, f64)> = summary["spend_by_category"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    spend.sort_by(|a, b| b.1.total_cmp(&a.1));
    let bars = b
        .js("return [...document.querySelectorAll('#chart rect.bar')].map(r => [r.dataset.label, Number(r.getAttribute('width'))]);")
        .await;
    let bars: Vec<(String, f64)> = serde_json::from_value(bars).unwrap();
    assert!(!bars.is_empty(), "the chart has bars");
    assert_eq!(
        bars.iter().map(|b| &b.0).collect::<Vec<_>>(),
        spend.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    assert!(bars.windows(2).all(|w| w[0].1 >= w[1].1));

    // The table: the first page of the query API, each movement once.
    b.until(
        "document.querySelectorAll('#transactions tbody tr').length > 0",
        Duration::from_secs(10),
    )
    .await;
    let rows: Vec<String> = serde_json::from_value(
        b.js("return [...document.querySelectorAll('#transactions tbody tr')].map(r => r.dataset.movementId);")
            .await,
    )
    .unwrap();
    assert_eq!(rows.len() as u64, transactions.min(100));
    let unique: std::collections::HashSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "no row twice");
}

/// How many events the service logged for an analysis (read with an API key, from the start).
async fn app_event_count(app: &TestApp, id: &str) -> usize {
    let body = app
        .get(ACME, &format!("/v1/analyses/{id}/events"))
        .await
        .text()
        .await
        .unwrap();
    body.lines().filter(|l| l.starts_with("id: ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_runs_an_analysis_and_sees_it_complete_with_the_chart_drawn() {
    let Some(b) = browser().await else { return };
    let app = spawn_app().await;
    b.client.goto(&format!("{}/", app.url)).await.unwrap();
    assert_eq!(b.client.title().await.unwrap(), "Credit analysis");
    b.run_analysis(ACME, "529.982.247-25").await;

    b.until(
        "!document.getElementById('live').hidden",
        Duration::from_secs(10),
    )
    .await;
    b.until(
        "document.getElementById('connection').dataset.state === 'done'",
        Duration::from_secs(60),
    )
    .await;
    assert_complete_and_consistent(&b, &app).await;
    for kind in ["consumer", "rating", "movements"] {
        assert_eq!(
            b.js(&format!(
                "return document.querySelector('.chip[data-kind={kind}]').dataset.state;"
            ))
            .await,
            json!("done"),
            "{kind}"
        );
    }

    // The label filter and the text search go to the query API.
    let label = b
        .js("return document.querySelector('#label-filter option:nth-child(2)').value;")
        .await;
    let label = label.as_str().unwrap().to_string();
    b.js(&format!(
        "document.getElementById('label-filter').value = '{label}';"
    ))
    .await;
    b.client
        .find(Locator::Css("#filter button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until(
        "document.getElementById('table-status').textContent.startsWith('Showing')",
        Duration::from_secs(10),
    )
    .await;
    let labels: Vec<String> = serde_json::from_value(
        b.js("return [...document.querySelectorAll('#transactions tbody tr td:nth-child(4)')].map(td => td.textContent);")
            .await,
    )
    .unwrap();
    assert!(!labels.is_empty());
    let first = labels[0].clone();
    assert!(
        labels.iter().all(|l| *l == first),
        "only one label: {labels:?}"
    );

    b.screenshot("analysis-complete").await;
}

/// A TCP proxy between the browser and the service that can cut every connection it carries.
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    refuse_until: Arc<Mutex<Instant>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let refuse_until = Arc::new(Mutex::new(Instant::now()));
        let (l, r) = (links.clone(), refuse_until.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if Instant::now() < *r.lock().unwrap() {
                    drop(inbound); // the network is down: the browser sees a failed connection
                    continue;
                }
                l.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Proxy {
            addr,
            links,
            refuse_until,
        }
    }

    /// Drops every open connection and refuses new ones for `down`.
    fn cut(&self, down: Duration) {
        *self.refuse_until.lock().unwrap() = Instant::now() + down;
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_shows_reconnecting_and_the_page_resumes_without_duplicates() {
    let Some(b) = browser().await else { return };
    // Slow partners and several movement pages (about 2,000 movements, four pages of 500),
    // so the analysis is still running when the connection is cut.
    let app = spawn_app_with(|s| {
        s.simulator.latency_ms = 1000;
        s.simulator.latency_jitter_ms = 0;
        s.simulator.movements_per_day = Some(2000.0 / 91.0);
    })
    .await;
    let upstream: SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    b.client
        .goto(&format!("http://{}/", proxy.addr))
        .await
        .unwrap();
    b.run_analysis(ACME, "529.982.247-25").await;

    // Cut once the first partners have answered, while movement pages are still coming.
    b.until(
        "document.querySelector('#events code') && [...document.querySelectorAll('#events code')].some(c => c.textContent === 'partner.completed')",
        Duration::from_secs(30),
    )
    .await;
    let before_cut = b.event_ids().await.len();
    proxy.cut(Duration::from_millis(1500));
    b.until(
        "document.getElementById('connection').dataset.state === 'reconnecting'",
        Duration::from_secs(10),
    )
    .await;
    b.screenshot("reconnecting").await;

    b.until(
        "document.getElementById('connection').dataset.state === 'done'",
        Duration::from_secs(60),
    )
    .await;
    let drops = b
        .js("return Number(document.getElementById('connection').dataset.drops);")
        .await;
    assert!(drops.as_u64().unwrap() >= 1, "the page saw the drop");
    assert!(
        b.event_ids().await.len() > before_cut,
        "events arrived after the cut"
    );
    assert_complete_and_consistent(&b, &app).await;
    b.screenshot("resumed-after-cut").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cpf_shows_the_server_s_error_next_to_the_field() {
    let Some(b) = browser().await else { return };
    let app = spawn_app().await;
    let bad = "123.456.789-00";
    let problem: Value = app
        .start(ACME, json!({ "cpf": bad }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(problem["field"], "cpf");

    b.client.goto(&format!("{}/", app.url)).await.unwrap();
    b.run_analysis(ACME, bad).await;
    b.until(
        "!document.getElementById('cpf-error').hidden",
        Duration::from_secs(10),
    )
    .await;
    let shown = b
        .js("return document.getElementById('cpf-error').textContent;")
        .await;
    assert_eq!(shown, problem["detail"]);
    assert_eq!(
        b.js("return document.getElementById('cpf').getAttribute('aria-invalid');")
            .await,
        json!("true")
    );
    // The message is tied to the field for screen readers, and nothing started.
    assert_eq!(
        b.js("return document.getElementById('cpf').getAttribute('aria-describedby');")
            .await,
        json!("cpf-error")
    );
    assert_eq!(
        b.js("return document.getElementById('live').hidden;").await,
        json!(true)
    );
    b.screenshot("bad-cpf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_partner_shows_its_reason_and_a_countdown_to_the_next_attempt() {
    let Some(b) = browser().await else { return };
    // Every bureau answers 429 with Retry-After: 30, so each partner call is queued.
    let app = spawn_app_with(|s| {
        s.simulator.rate_limit_rate = 1.0;
        s.simulator.retry_after_s = 30;
    })
    .await;
    b.client.goto(&format!("{}/", app.url)).await.unwrap();
    b.run_analysis(ACME, "529.982.247-25").await;
    let chip = "document.querySelector('.chip[data-kind=consumer]')";
    b.until(
        &format!("{chip}.dataset.state === 'queued'"),
        Duration::from_secs(20),
    )
    .await;
    let seconds = || async {
        let text = b
            .js(&format!(
                "return {chip}.querySelector('.state').textContent;"
            ))
            .await;
        let text = text.as_str().unwrap().to_string();
        assert!(text.starts_with("queued: "), "{text}");
        let n: u64 = text
            .rsplit("next attempt in ")
            .next()
            .and_then(|t| t.trim_end_matches(" s").parse().ok())
            .unwrap_or_else(|| panic!("a countdown in `{text}`"));
        n
    };
    let first = seconds().await;
    assert!((1..=30).contains(&first), "{first}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = seconds().await;
    assert!(
        later < first,
        "the countdown moves: {first} s, then {later} s"
    );
    b.screenshot("partner-queued").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_test_that_fails_leaves_no_browser_process_behind() {
    let Some(b) = browser().await else { return };
    let app = spawn_app().await;
    b.client.goto(&format!("{}/", app.url)).await.unwrap();
    let (group, marker) = (b.driver.id(), b.marker());
    let running = processes(group, &marker);
    assert!(
        running.iter().any(|p| p.contains("--headless")),
        "the check sees this browser's Chromium: {running:#?}"
    );
    let test = tokio::spawn(async move {
        let _browser = b;
        panic!("a browser test fails (on purpose: what it leaves is checked next)");
    });
    assert!(test.await.unwrap_err().is_panic());
    let left = processes_left(group, &marker, Duration::from_secs(10));
    assert!(left.is_empty(), "left running: {left:#?}");
}
