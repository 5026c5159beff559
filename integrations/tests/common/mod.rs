//! Helpers shared by the integration tests that use Redis (`queue`, `semaphore`, `service`):
//! where Redis is, a key prefix of a test's own that is cleaned up after it, and a free
//! loopback port. Each test binary compiles its own copy through `mod common;`.

use std::ops::Deref;
use std::time::Duration;

use redis::Commands;

/// The Redis the tests use: `REDIS_URL`, or the local one at 127.0.0.1:6379.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix of one test's own, `test-{kind}-{unique}`: tests run at once on one Redis
/// without seeing each other's keys. When dropped it deletes every key under it, so a test
/// leaves nothing behind in the shared Redis, failed or not.
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn new(kind: &str) -> Self {
        KeyPrefix(format!(
            "test-{kind}-{}",
            integrations::semaphore::new_holder()
        ))
    }
}

impl Deref for KeyPrefix {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        // Best effort, and blocking: it runs at the end of a test, maybe while panicking, and
        // a test that could not reach Redis has nothing to clean up.
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = match conn.scan_match(format!("{}:*", self.0)) {
            Ok(keys) => keys.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = conn.del(keys);
        }
    }
}

/// A connection to the test Redis.
#[allow(dead_code)] // not every test binary looks into Redis
pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A free loopback port (bound then released; the caller binds it right after).
#[allow(dead_code)] // only `service` starts servers on ports of their own
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Checks that the HTTP server at `addr` (`host:port`) closes, each within 10 s, a connection
/// that sends nothing, one that sends the start of an HTTP/2 preface and stalls, one that
/// sends half a request head and then nothing (slowloris), and one left idle after a whole
/// request was answered: the server's header and idle timeouts must be shorter.
#[allow(dead_code)] // not every test binary starts a server of its own
pub async fn trickling_and_idle_connections_are_closed(addr: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn until_closed(c: &mut tokio::net::TcpStream, case: &str) -> String {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the server left the {case} connection open");
        String::from_utf8_lossy(&got).into_owned()
    }
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(until_closed(&mut silent, "silent").await, "");
    let mut preface = tokio::net::TcpStream::connect(addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let answer = until_closed(&mut preface, "HTTP/2 preface").await;
    assert!(!answer.contains("200 OK"), "{answer}");
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut slow, "half-head").await;
    assert!(!answer.contains("200 OK"), "{answer}");
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle, "idle").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

/// Runs `property` on `cases` values of `strategy` (proptest), without writing regression
/// files; the first failing case, shrunk, fails the test. For properties whose every case is
/// a real request, so their count is fixed rather than taken from `PROPTEST_CASES`.
#[allow(dead_code)] // only the over-HTTP properties use it
pub fn check<S: proptest::strategy::Strategy>(
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    });
    if let Err(e) = runner.run(&strategy, property) {
        panic!("{e}");
    }
}

/// The response if it is a success; `None` after checking that a 4xx is a problem document
/// with its status; a failure for anything else.
#[allow(dead_code)] // only the over-HTTP properties use it
pub async fn success_or_problem(
    r: reqwest::Response,
) -> Result<Option<reqwest::Response>, proptest::test_runner::TestCaseError> {
    let status = r.status();
    proptest::prop_assert!(
        status.is_success() || status.is_client_error(),
        "answered {status}"
    );
    if status.is_success() {
        return Ok(Some(r));
    }
    let kind = r.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    proptest::prop_assert_eq!(kind, "application/problem+json", "for {}", status);
    let problem: serde_json::Value = r
        .json()
        .await
        .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
    proptest::prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status.as_u16())));
    Ok(None)
}

/// Any JSON value, a few levels deep, for properties that send arbitrary bodies.
#[allow(dead_code)] // only the over-HTTP properties use it
pub fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "\\PC{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
