//! Helpers shared by the integration tests that use Redis (`queue`, `semaphore`, `service`):
//! where Redis is, a key prefix of a test's own, and a free loopback port. Each test binary
//! compiles its own copy through `mod common;`.

/// The Redis the tests use: `REDIS_URL`, or the local one at 127.0.0.1:6379.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix of one test's own, `test-{kind}-{unique}`: tests run at once on one Redis
/// without seeing each other's keys.
pub fn key_prefix(kind: &str) -> String {
    format!("test-{kind}-{}", integrations::semaphore::new_holder())
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
