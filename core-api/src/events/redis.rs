//! The event log on Redis Streams: `{prefix}:ev:{id}` holds the events with explicit ids
//! `N-0`, and `{prefix}:ev:{id}:meta` the count and whether the analysis has ended, both
//! written by one Lua script so ids have no gaps and nothing follows the final event.
//!
//! Readers pull: they ask for the events after the last one they sent and wait (without
//! polling) when there are none, so a slow reader never makes the log buffer anything. The
//! clients of one analysis on one instance share one reader ([`Tail`]): a single blocked
//! `XREAD` per followed analysis, however many clients follow it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, watch};

use super::{frame, AppendError, Event, CLIENT_BUFFER, MAX_EVENTS, SLOW_CLIENT};
use crate::domain::event::is_final;

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
/// How long a follower waits for news before it looks whether the analysis has ended.
const FOLLOW_WAIT: Duration = Duration::from_secs(15);

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

fn backend(e: redis::RedisError) -> AppendError {
    AppendError::Backend(e.to_string())
}

impl RedisLog {
    pub(super) async fn connect(
        url: &str,
        prefix: &str,
        retention: Duration,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Ok(RedisLog {
            client,
            conn,
            prefix: prefix.to_string(),
            retention,
            append: Script::new(APPEND),
            tails: Arc::default(),
        })
    }

    pub(super) async fn create(&self, analysis: &str) -> Result<(), AppendError> {
        let mut conn = self.conn.clone();
        let meta = self.meta_key(analysis);
        redis::pipe()
            .hset(&meta, "n", 0)
            .expire(&meta, RUNNING_TTL_SECS as i64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
    }

    pub(super) async fn append(
        &self,
        analysis: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<u64, AppendError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .append
            .key(self.stream_key(analysis))
            .key(self.meta_key(analysis))
            .arg(kind)
            .arg(data.to_string())
            .arg(MAX_EVENTS)
            .arg(if is_final(kind) { "1" } else { "0" })
            .arg(self.retention.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match n {
            -1 => Err(AppendError::Finished),
            -2 => Err(AppendError::Full),
            n => {
                if n == 1 {
                    // The stream exists from its first event: give it the running TTL.
                    let _: Result<(), _> = conn
                        .expire(self.stream_key(analysis), RUNNING_TTL_SECS as i64)
                        .await;
                }
                Ok(n as u64)
            }
        }
    }

    pub(super) async fn read_after(
        &self,
        analysis: &str,
        after: u64,
        max: usize,
    ) -> Result<Option<Vec<Event>>, AppendError> {
        let mut conn = self.conn.clone();
        let exists: bool = conn
            .exists(self.meta_key(analysis))
            .await
            .map_err(backend)?;
        if !exists {
            return Ok(None);
        }
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_count(self.stream_key(analysis), format!("({after}-0"), "+", max)
            .await
            .map_err(backend)?;
        Ok(Some(reply.ids.iter().filter_map(parse_entry).collect()))
    }

    pub(super) async fn wait_after(
        &self,
        analysis: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<Vec<Event>, AppendError> {
        let tail = self.tail(analysis, after);
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

    /// Whether the analysis's final event is in the log (set with it, atomically).
    async fn is_finished(&self, analysis: &str) -> Result<bool, AppendError> {
        let mut conn = self.conn.clone();
        let finished: Option<String> = conn
            .hget(self.meta_key(analysis), "finished")
            .await
            .map_err(backend)?;
        Ok(finished.as_deref() == Some("1"))
    }

    /// See [`super::EventLog::follow`]: on Redis a task per client pulls from the shared
    /// reader as fast as the client takes frames.
    pub(super) async fn follow(
        &self,
        analysis: &str,
        after: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<mpsc::Receiver<Bytes>>, AppendError> {
        let Some(past) = self.read_after(analysis, after, 256).await? else {
            return Ok(None);
        };
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        tokio::spawn(feed(
            self.clone(),
            analysis.to_string(),
            past,
            after,
            tx,
            stop,
        ));
        Ok(Some(rx))
    }

    /// Whether a client that saw event `last` of a finished analysis has its final event: the
    /// event it saw is the final one, or lies beyond the log's end.
    async fn has_everything(&self, analysis: &str, last: u64) -> bool {
        match self.read_after(analysis, last.saturating_sub(1), 1).await {
            Ok(Some(events)) => match events.first() {
                None => true,
                Some(e) => e.id == last && e.is_terminal(),
            },
            _ => false,
        }
    }

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

/// Sends the client what it missed, then what comes, as SSE frames, until the analysis ends,
/// the client leaves (the channel closes), it stops reading for [`SLOW_CLIENT`], or `stop`
/// turns true. Events are pulled from the log only as fast as the client takes them, so
/// nothing is buffered for a slow client beyond its channel.
async fn feed(
    log: RedisLog,
    id: String,
    mut pending: Vec<Event>,
    mut last_sent: u64,
    tx: mpsc::Sender<Bytes>,
    mut stop: watch::Receiver<bool>,
) {
    let finished = log.is_finished(&id).await.unwrap_or(false);
    if finished && pending.is_empty() && log.has_everything(&id, last_sent).await {
        // Reconnected to a finished analysis and already had everything.
        return;
    }
    // Empty waits in a row while the log says the analysis has ended (see below).
    let mut ended_empty = 0;
    loop {
        for e in pending.drain(..) {
            if e.id <= last_sent {
                continue;
            }
            match tx.send_timeout(e.frame(), SLOW_CLIENT).await {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    let _ = tx.try_send(Bytes::from_static(frame::STOPPED_READING));
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
            }
            last_sent = e.id;
            if e.is_terminal() {
                return;
            }
        }
        tokio::select! {
            more = log.wait_after(&id, last_sent, FOLLOW_WAIT) => match more {
                Ok(events) => pending = events,
                Err(e) => {
                    tracing::warn!(analysis = %id, error = %e, "Event log unavailable; ending the stream.");
                    let _ = tx.try_send(Bytes::from_static(frame::UNAVAILABLE));
                    return;
                }
            },
            // The client left, or the service is stopping (the response sends the goodbye).
            _ = tx.closed() => return,
            _ = stop.wait_for(|s| *s) => return,
        }
        // Nothing came although the log says the analysis has ended: read the log itself
        // once more (the shared reader may lag); only if still nothing does the stream end.
        if pending.is_empty() && log.is_finished(&id).await.unwrap_or(false) {
            pending = log
                .read_after(&id, last_sent, 256)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            if pending.is_empty() {
                ended_empty += 1;
                if ended_empty >= 2 {
                    return;
                }
            }
        } else {
            ended_empty = 0;
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
