//! The event log of each analysis: every step appends an event; the SSE endpoint replays the
//! log from the client's last event id and then waits for more.
//!
//! Two implementations behind one type. In memory (the embedded shape): bounded per analysis,
//! kept for a set time after the analysis ends. On Redis Streams (when `REDIS_URL` is set): the
//! stream `{prefix}:ev:{id}` with explicit ids `N-0`, so event ids are the same small integers
//! on every instance and any instance can serve any analysis's stream; a finished analysis's
//! stream expires after the retention.
//!
//! Readers pull: they ask for the events after the last one they sent and wait (without
//! polling) when there are none, so a slow reader never makes the log buffer anything. On
//! Redis, the clients of one analysis on one instance share one reader ([`Tail`]): a single
//! blocked `XREAD` per followed analysis, however many clients follow it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, watch, Notify};

/// Events kept per analysis at most.
pub const MAX_EVENTS: usize = 10_000;

/// One event of an analysis. Cloning is cheap: every SSE client of an analysis gets the same
/// event, so its JSON is serialised once, when it is appended.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Increasing within the analysis, from 1.
    pub id: u64,
    /// `analysis.accepted`, `partner.started`, ...
    pub kind: Arc<str>,
    /// The event's data as JSON text.
    pub data: Arc<str>,
}

fn is_terminal(kind: &str) -> bool {
    kind == "analysis.completed" || kind == "analysis.failed"
}

impl Event {
    /// Whether the analysis ends with this event.
    pub fn is_terminal(&self) -> bool {
        is_terminal(&self.kind)
    }
}

/// An event as an SSE frame: `id`, `event` and one `data` line (the JSON has no newlines).
pub fn frame(e: &Event) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.id, e.kind, e.data
    ))
}

/// The frame that cuts off a client that stopped reading.
fn cut_frame() -> Bytes {
    Bytes::from_static(
        b"event: stream.error\ndata: {\"reason\":\"the client fell behind; reconnect with Last-Event-ID\"}\n\n",
    )
}

/// Frames a live client may have unread before it is cut off.
pub const CLIENT_BUFFER: usize = 64;

/// Why an append failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the analysis logged its {MAX_EVENTS} events allowed")]
    Full,
    #[error("the analysis already ended")]
    Finished,
    #[error("event log: {0}")]
    Backend(String),
}

struct Log {
    events: Vec<Event>,
    /// Each event as an SSE frame, built once and shared by every client.
    frames: Vec<Bytes>,
    /// Clients following the log live (memory shape): each append is pushed to them.
    subscribers: Vec<mpsc::Sender<Bytes>>,
    appended: Arc<Notify>,
    finished_at: Option<Instant>,
}

/// The in-memory log.
#[derive(Clone)]
pub struct MemoryLog {
    logs: Arc<Mutex<HashMap<String, Log>>>,
    retention: Duration,
}

/// The Redis Streams log.
#[derive(Clone)]
pub struct RedisLog {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    retention: Duration,
    append: Script,
    /// The analyses followed on this instance, each with its one reader.
    tails: Arc<Mutex<HashMap<String, Arc<Tail>>>>,
}

/// The one reader of an analysis's stream on this instance: a task blocked in `XREAD` that
/// keeps what it read (at most the log's bound) and wakes every waiting client. Without it,
/// each client would hold its own Redis connection in its own `XREAD`.
struct Tail {
    state: Mutex<TailState>,
    /// The last id read; its receivers are the clients waiting now.
    latest: watch::Sender<u64>,
}

struct TailState {
    /// Events read, in order, all after `start`.
    start: u64,
    events: Vec<Event>,
    /// Why the reader stopped, if Redis failed it.
    failed: Option<String>,
    /// When a client last asked; the reader stops once nobody has asked for a while.
    wanted: Instant,
}

/// A reader nobody has asked for during this long stops (a client between two waits is
/// writing to its socket, which takes far less).
const TAIL_IDLE: Duration = Duration::from_secs(30);
/// How long one `XREAD` blocks before the reader looks whether it is still wanted.
const TAIL_BLOCK: Duration = Duration::from_secs(5);

impl Tail {
    /// The events after `after`, or `None` when the reader started later than that (the
    /// caller reads the gap from the stream itself).
    fn after(&self, after: u64) -> Result<Option<Vec<Event>>, AppendError> {
        let mut st = self.state.lock().expect("tail lock");
        st.wanted = Instant::now();
        if let Some(e) = &st.failed {
            return Err(AppendError::Backend(e.clone()));
        }
        if after < st.start {
            return Ok(None);
        }
        let skip = (after - st.start) as usize;
        Ok(Some(
            st.events.iter().skip(skip).take(256).cloned().collect(),
        ))
    }
}

/// The event log the settings chose.
#[derive(Clone)]
pub enum EventLog {
    Memory(MemoryLog),
    Redis(Box<RedisLog>),
}

/// KEYS stream, meta; ARGV kind, data, max, terminal (0/1), retention_s.
/// Returns the new id, -1 when finished, -2 when full.
const APPEND: &str = r"
if redis.call('HGET', KEYS[2], 'finished') == '1' then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local terminal = ARGV[4] == '1'
if n + (terminal and 0 or 1) >= tonumber(ARGV[3]) then return -2 end
n = n + 1
redis.call('HSET', KEYS[2], 'n', n)
redis.call('XADD', KEYS[1], n .. '-0', 'kind', ARGV[1], 'data', ARGV[2])
if terminal then
  redis.call('HSET', KEYS[2], 'finished', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return n
";

/// A running analysis's log lives at most this long, in case its run died with its process.
const RUNNING_TTL_SECS: u64 = 24 * 3600;

impl EventLog {
    /// `retention`: how long a finished analysis's events stay readable.
    pub fn memory(retention: Duration) -> Self {
        EventLog::Memory(MemoryLog {
            logs: Arc::default(),
            retention,
        })
    }

    pub async fn redis(
        url: &str,
        prefix: &str,
        retention: Duration,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Ok(EventLog::Redis(Box::new(RedisLog {
            client,
            conn,
            prefix: prefix.to_string(),
            retention,
            append: Script::new(APPEND),
            tails: Arc::default(),
        })))
    }

    /// Starts an empty log for a new analysis.
    pub async fn create(&self, analysis: &str) -> Result<(), AppendError> {
        match self {
            EventLog::Memory(m) => {
                m.logs.lock().expect("event log lock").insert(
                    analysis.to_string(),
                    Log {
                        events: Vec::new(),
                        frames: Vec::new(),
                        subscribers: Vec::new(),
                        appended: Arc::new(Notify::new()),
                        finished_at: None,
                    },
                );
                Ok(())
            }
            EventLog::Redis(r) => {
                let mut conn = r.conn.clone();
                let meta = r.meta_key(analysis);
                redis::pipe()
                    .hset(&meta, "n", 0)
                    .expire(&meta, RUNNING_TTL_SECS as i64)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| AppendError::Backend(e.to_string()))
            }
        }
    }

    /// Appends an event; returns its id.
    pub async fn append(
        &self,
        analysis: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<u64, AppendError> {
        // Every event says when it happened (milliseconds since the Unix epoch), so clients
        // can show it and measure how late it reached them.
        let mut data = data;
        if let Some(obj) = data.as_object_mut() {
            obj.insert("at".into(), chrono::Utc::now().timestamp_millis().into());
        }
        match self {
            EventLog::Memory(m) => m.append(analysis, kind, data),
            EventLog::Redis(r) => {
                let mut conn = r.conn.clone();
                let n: i64 = r
                    .append
                    .key(r.stream_key(analysis))
                    .key(r.meta_key(analysis))
                    .arg(kind)
                    .arg(data.to_string())
                    .arg(MAX_EVENTS)
                    .arg(if is_terminal(kind) { "1" } else { "0" })
                    .arg(r.retention.as_secs().max(1))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| AppendError::Backend(e.to_string()))?;
                match n {
                    -1 => Err(AppendError::Finished),
                    -2 => Err(AppendError::Full),
                    n => {
                        if n == 1 {
                            // The stream exists from its first event: give it the running TTL.
                            let _: Result<(), _> = conn
                                .expire(r.stream_key(analysis), RUNNING_TTL_SECS as i64)
                                .await;
                        }
                        Ok(n as u64)
                    }
                }
            }
        }
    }

    /// Up to `max` events after `after`; `None` for an analysis this log does not know.
    pub async fn read_after(
        &self,
        analysis: &str,
        after: u64,
        max: usize,
    ) -> Result<Option<Vec<Event>>, AppendError> {
        match self {
            EventLog::Memory(m) => {
                let logs = m.logs.lock().expect("event log lock");
                Ok(logs.get(analysis).map(|l| {
                    l.events
                        .iter()
                        .filter(|e| e.id > after)
                        .take(max)
                        .cloned()
                        .collect()
                }))
            }
            EventLog::Redis(r) => {
                let mut conn = r.conn.clone();
                let exists: bool = conn
                    .exists(r.meta_key(analysis))
                    .await
                    .map_err(|e| AppendError::Backend(e.to_string()))?;
                if !exists {
                    return Ok(None);
                }
                let reply: redis::streams::StreamRangeReply = conn
                    .xrange_count(r.stream_key(analysis), format!("({after}-0"), "+", max)
                    .await
                    .map_err(|e| AppendError::Backend(e.to_string()))?;
                Ok(Some(reply.ids.iter().filter_map(parse_entry).collect()))
            }
        }
    }

    /// Waits up to `timeout` for events after `after`; empty when none came.
    pub async fn wait_after(
        &self,
        analysis: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<Vec<Event>, AppendError> {
        match self {
            EventLog::Memory(m) => {
                let notify = {
                    let logs = m.logs.lock().expect("event log lock");
                    match logs.get(analysis) {
                        Some(l) => l.appended.clone(),
                        None => return Ok(Vec::new()),
                    }
                };
                let notified = notify.notified();
                tokio::pin!(notified);
                // Registered before looking, so an append in between is not missed.
                notified.as_mut().enable();
                if let Some(events) = self.read_after(analysis, after, 256).await? {
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                let _ = tokio::time::timeout(timeout, notified).await;
                Ok(self
                    .read_after(analysis, after, 256)
                    .await?
                    .unwrap_or_default())
            }
            EventLog::Redis(r) => {
                let tail = r.tail(analysis, after);
                let mut woken = tail.latest.subscribe();
                match tail.after(after)? {
                    Some(events) if !events.is_empty() => return Ok(events),
                    Some(_) => {}
                    // Appended before this instance's reader started: read them directly.
                    None => {
                        return Ok(self
                            .read_after(analysis, after, 256)
                            .await?
                            .unwrap_or_default())
                    }
                }
                let _ = tokio::time::timeout(timeout, woken.changed()).await;
                Ok(tail.after(after)?.unwrap_or_default())
            }
        }
    }

    /// Drops in-memory logs of analyses finished longer ago than the retention (Redis expires
    /// its own).
    pub fn expire(&self) -> usize {
        match self {
            EventLog::Memory(m) => {
                let mut logs = m.logs.lock().expect("event log lock");
                let before = logs.len();
                let retention = m.retention;
                logs.retain(|_, l| l.finished_at.is_none_or(|at| at.elapsed() < retention));
                before - logs.len()
            }
            EventLog::Redis(_) => 0,
        }
    }
}

/// The reader task of one analysis: `XREAD BLOCK` from `last` until the final event, a Redis
/// failure (the waiting clients get it as an error and end their streams), or nobody asking
/// for [`TAIL_IDLE`]. It then leaves the registry, so the next client starts a fresh one. It
/// does not watch the shutdown signal itself: its clients do, and once they are gone it stops.
async fn read_tail(log: RedisLog, analysis: String, mut last: u64, tail: Arc<Tail>) {
    let result: Result<(), String> = async {
        let mut conn = log
            .client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(TAIL_BLOCK + Duration::from_secs(5))),
            )
            .await
            .map_err(|e| e.to_string())?;
        // Named, so an operator's CLIENT LIST says what the connection is.
        let _: Result<(), _> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{}:tail", log.prefix.replace(' ', "_")))
            .query_async(&mut conn)
            .await;
        let opts = redis::streams::StreamReadOptions::default()
            .count(256)
            .block(TAIL_BLOCK.as_millis() as usize);
        loop {
            let reply: Option<redis::streams::StreamReadReply> = conn
                .xread_options(&[log.stream_key(&analysis)], &[format!("{last}-0")], &opts)
                .await
                .map_err(|e| e.to_string())?;
            let events: Vec<Event> = reply
                .iter()
                .flat_map(|r| {
                    r.keys
                        .iter()
                        .flat_map(|k| k.ids.iter().filter_map(parse_entry))
                })
                .collect();
            let mut st = tail.state.lock().expect("tail lock");
            let ended = events.iter().any(Event::is_terminal);
            if let Some(e) = events.last() {
                last = e.id;
                // Bounded like the log itself, which never holds more.
                let room = MAX_EVENTS.saturating_sub(st.events.len());
                st.events.extend(events.into_iter().take(room));
            }
            let idle = st.wanted.elapsed() > TAIL_IDLE && tail.latest.receiver_count() == 0;
            drop(st);
            // Clients are woken only when there is something for them: a wake with nothing
            // would send every waiting client to ask again for nothing.
            if *tail.latest.borrow() != last {
                tail.latest.send_replace(last);
            }
            if ended || idle {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(analysis = %analysis, error = %e, "Event reader failed; its clients end their streams.");
        tail.state.lock().expect("tail lock").failed = Some(e);
        tail.latest.send_modify(|_| {});
    }
    let mut tails = log.tails.lock().expect("tails lock");
    if tails.get(&analysis).is_some_and(|t| Arc::ptr_eq(t, &tail)) {
        tails.remove(&analysis);
    }
}

fn parse_entry(entry: &redis::streams::StreamId) -> Option<Event> {
    let id = entry.id.split('-').next()?.parse().ok()?;
    let kind: String = entry.get("kind")?;
    let data: String = entry.get("data")?;
    Some(Event {
        id,
        kind: kind.into(),
        data: data.into(),
    })
}

impl MemoryLog {
    /// The frames after `after`, then every frame appended later, through one channel: the
    /// replay and the registration happen under the log's lock, so nothing falls between
    /// them. `None` for an unknown analysis. The channel closes after the final event.
    pub fn subscribe(&self, analysis: &str, after: u64) -> Option<mpsc::Receiver<Bytes>> {
        let mut logs = self.logs.lock().expect("event log lock");
        let log = logs.get_mut(analysis)?;
        let past: Vec<Bytes> = log.frames.iter().skip(after as usize).cloned().collect();
        let (tx, rx) = mpsc::channel(past.len() + CLIENT_BUFFER);
        for f in past {
            tx.try_send(f)
                .expect("the channel was sized for the replay");
        }
        if log.finished_at.is_none() {
            log.subscribers.push(tx);
        }
        Some(rx)
    }

    fn append(
        &self,
        analysis: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<u64, AppendError> {
        let mut logs = self.logs.lock().expect("event log lock");
        let log = logs.get_mut(analysis).ok_or(AppendError::Finished)?;
        if log.finished_at.is_some() {
            return Err(AppendError::Finished);
        }
        // The last slot is kept for the terminal event, so an analysis can always end.
        let terminal = is_terminal(kind);
        if log.events.len() + usize::from(!terminal) >= MAX_EVENTS {
            return Err(AppendError::Full);
        }
        let id = log.events.len() as u64 + 1;
        let event = Event {
            id,
            kind: kind.into(),
            data: data.to_string().into(),
        };
        let bytes = frame(&event);
        log.events.push(event);
        log.frames.push(bytes.clone());
        // Push to live clients; one that has a full buffer is cut off (with a last frame
        // saying so, in the slot kept for it) rather than buffered for.
        log.subscribers.retain(|tx| {
            if tx.capacity() <= 1 {
                let _ = tx.try_send(cut_frame());
                return false;
            }
            tx.try_send(bytes.clone()).is_ok()
        });
        if terminal {
            log.finished_at = Some(Instant::now());
            // Dropping the senders ends every stream after the final event.
            log.subscribers.clear();
        }
        log.appended.notify_waiters();
        Ok(id)
    }
}

impl RedisLog {
    /// This instance's reader of `analysis`, started (from `after`) if there is none.
    fn tail(&self, analysis: &str, after: u64) -> Arc<Tail> {
        let mut tails = self.tails.lock().expect("tails lock");
        if let Some(t) = tails.get(analysis) {
            return t.clone();
        }
        let tail = Arc::new(Tail {
            state: Mutex::new(TailState {
                start: after,
                events: Vec::new(),
                failed: None,
                wanted: Instant::now(),
            }),
            latest: watch::Sender::new(after),
        });
        tails.insert(analysis.to_string(), tail.clone());
        tokio::spawn(read_tail(
            self.clone(),
            analysis.to_string(),
            after,
            tail.clone(),
        ));
        tail
    }

    fn stream_key(&self, analysis: &str) -> String {
        format!("{}:ev:{analysis}", self.prefix)
    }

    fn meta_key(&self, analysis: &str) -> String {
        format!("{}:ev:{analysis}:meta", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ids_increase_and_readers_get_the_past_then_wait_for_the_future(log: EventLog) {
        log.create("a").await.unwrap();
        assert_eq!(
            log.append("a", "analysis.accepted", serde_json::json!({"x": 1}))
                .await,
            Ok(1)
        );
        assert_eq!(
            log.append("a", "partner.started", serde_json::json!({}))
                .await,
            Ok(2)
        );
        let past = log.read_after("a", 1, 100).await.unwrap().unwrap();
        assert_eq!(past.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
        let waiter = {
            let log = log.clone();
            tokio::spawn(async move {
                log.wait_after("a", 2, Duration::from_secs(10))
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.append("a", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        let next = waiter.await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].id, next[0].is_terminal()), (3, true));
        assert_eq!(
            log.append("a", "late", serde_json::json!({})).await,
            Err(AppendError::Finished)
        );
        assert!(log.read_after("nope", 0, 10).await.unwrap().is_none());
        assert!(log
            .wait_after("a", 3, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn in_memory_ids_increase_and_readers_wait_without_polling() {
        ids_increase_and_readers_get_the_past_then_wait_for_the_future(EventLog::memory(
            Duration::from_secs(60),
        ))
        .await;
    }

    #[tokio::test]
    async fn on_redis_streams_ids_increase_and_readers_wait_without_polling() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-ev-{}", uuid::Uuid::new_v4().simple());
        let log = EventLog::redis(&url, &prefix, Duration::from_secs(60))
            .await
            .expect("a Redis server");
        ids_increase_and_readers_get_the_past_then_wait_for_the_future(log).await;
    }

    /// Connections named as this prefix's readers, from Redis's own CLIENT LIST.
    async fn readers(url: &str, prefix: &str) -> usize {
        let mut c = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut c)
            .await
            .unwrap();
        let name = format!("name={prefix}:tail ");
        list.lines().filter(|l| l.contains(&name)).count()
    }

    #[tokio::test]
    async fn on_redis_the_followers_of_an_analysis_share_one_reader_that_ends_with_it() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-tail-{}", uuid::Uuid::new_v4().simple());
        let log = EventLog::redis(&url, &prefix, Duration::from_secs(60))
            .await
            .expect("a Redis server");
        log.create("a").await.unwrap();
        log.append("a", "analysis.accepted", serde_json::json!({}))
            .await
            .unwrap();
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let log = log.clone();
                tokio::spawn(async move {
                    log.wait_after("a", 1, Duration::from_secs(10))
                        .await
                        .unwrap()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(readers(&url, &prefix).await, 1, "one XREAD for 20 clients");
        log.append("a", "partner.started", serde_json::json!({}))
            .await
            .unwrap();
        for w in waiters {
            let got = w.await.unwrap();
            assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
        }
        // A follower that was behind reads what it missed, then what comes.
        let late = log
            .wait_after("a", 0, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(late.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        log.append("a", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        let last = log
            .wait_after("a", 2, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(last.iter().map(|e| e.id).collect::<Vec<_>>(), [3]);
        // The reader stops after the final event.
        let deadline = Instant::now() + Duration::from_secs(5);
        while readers(&url, &prefix).await > 0 {
            assert!(
                Instant::now() < deadline,
                "the reader outlived its analysis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn live_subscribers_get_the_replay_then_pushed_frames_and_a_slow_one_is_cut_off() {
        let log = EventLog::memory(Duration::from_secs(60));
        let EventLog::Memory(m) = &log else {
            unreachable!()
        };
        log.create("a").await.unwrap();
        log.append("a", "analysis.accepted", serde_json::json!({}))
            .await
            .unwrap();
        log.append("a", "partner.started", serde_json::json!({}))
            .await
            .unwrap();
        let mut reader = m.subscribe("a", 1).unwrap();
        let mut sleeper = m.subscribe("a", 2).unwrap();
        let first = reader.recv().await.unwrap();
        assert!(
            String::from_utf8_lossy(&first).starts_with("id: 2\nevent: partner.started\ndata: {")
        );
        // The sleeper never reads: after its buffer fills it gets the cut-off frame and ends.
        for _ in 0..CLIENT_BUFFER + 5 {
            log.append("a", "classification.progress", serde_json::json!({}))
                .await
                .unwrap();
            let f = reader.recv().await.unwrap();
            assert!(String::from_utf8_lossy(&f).contains("classification.progress"));
        }
        let mut got = Vec::new();
        while let Some(f) = sleeper.recv().await {
            got.push(String::from_utf8_lossy(&f).into_owned());
        }
        assert_eq!(got.len(), CLIENT_BUFFER);
        assert!(got.last().unwrap().starts_with("event: stream.error"));
        // The final event closes the reader's stream.
        log.append("a", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&reader.recv().await.unwrap()).contains("analysis.completed")
        );
        assert!(reader.recv().await.is_none());
        // A client arriving after the end gets the replay and an ending stream.
        let mut late = m.subscribe("a", 70).unwrap();
        let mut n = 0;
        while late.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 2 + CLIENT_BUFFER + 5 + 1 - 70);
    }

    #[tokio::test]
    async fn a_log_is_bounded_but_can_always_end() {
        let log = EventLog::memory(Duration::from_secs(60));
        log.create("a").await.unwrap();
        for _ in 0..MAX_EVENTS - 1 {
            log.append("a", "classification.progress", serde_json::json!({}))
                .await
                .unwrap();
        }
        assert_eq!(
            log.append("a", "classification.progress", serde_json::json!({}))
                .await,
            Err(AppendError::Full)
        );
        assert!(log
            .append("a", "analysis.failed", serde_json::json!({}))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn finished_logs_expire_after_the_retention() {
        let log = EventLog::memory(Duration::ZERO);
        log.create("done").await.unwrap();
        log.create("running").await.unwrap();
        log.append("done", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(log.expire(), 1);
        assert!(log.read_after("done", 0, 1).await.unwrap().is_none());
        assert!(log.read_after("running", 0, 1).await.unwrap().is_some());
    }
}
