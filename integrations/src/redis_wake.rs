//! What the Redis semaphore and the Redis queue share: the Lua prelude that reads Redis server
//! time, and waiting on a wake-up list without polling.

use std::time::Duration;

use redis::AsyncCommands;

/// Lua that sets `now` to the Redis server's time in milliseconds, so every process agrees on
/// lease expiry whatever its own clock says.
pub(crate) const NOW_MS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Blocks on `key` (BLPOP) until something is pushed or `timeout` passes. BLPOP holds its
/// connection, so it gets one of its own rather than stalling the shared multiplexed one. If
/// Redis cannot be reached it sleeps a little instead of spinning; callers look again anyway.
pub(crate) async fn wait_on(client: &redis::Client, key: String, timeout: Duration) {
    let wait = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let _: Option<(String, String)> = conn.blpop(key, timeout.as_secs_f64().max(0.01)).await?;
        Ok::<_, redis::RedisError>(())
    };
    match tokio::time::timeout(timeout + Duration::from_millis(500), wait).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => tokio::time::sleep(timeout.min(Duration::from_millis(200))).await,
    }
}
