//! The event log on Redis Streams: `{prefix}:ev:{id}` holds the events with explicit ids
//! `N-0`, and `{prefix}:ev:{id}:meta` the count and whether the analysis has ended, both
//! written by one Lua script so ids have no gaps and nothing follows the final event.
//!
//! The clients of one analysis on one instance share one reader ([`Tail`]): a single blocked
//! `XREAD` per followed analysis, however many clients follow it. It turns each event it reads
//! into a frame once and pushes that frame to every client, as the memory log does on append
//! ([`Fanout`]). A reader starts at the log's end when it is needed: what a client lacks from
//! before that, the client's own request reads from the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;

use super::entry::{AppendError, Event, CLIENT_BUFFER, MAX_EVENTS};
use super::fanout::Fanout;
use super::frame;
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
/// keeps the frames it read (at most the log's bound) and pushes each to every client.
/// Without it, each client would hold its own Redis connection in its own `XREAD`.
struct Tail {
    state: Mutex<TailState>,
}

struct TailState {
    /// The frames of the events read, in order, from event `start + 1`, for clients that join
    /// later.
    start: u64,
    frames: Vec<Bytes>,
    /// Clients following live: each frame read is pushed to them.
    live: Fanout,
    /// The final event was read: nothing more will come.
    finished: bool,
    /// The reader stopped for want of clients: a client that finds it so needs a new one.
    closed: bool,
    /// Why the reader stopped, if Redis failed it.
    failed: Option<String>,
    /// When a client was last there; the reader stops once nobody has been for a while.
    wanted: Instant,
}

/// A reader nobody has asked for during this long stops (a client between two waits is
/// writing to its socket, which takes far less).
const TAIL_IDLE: Duration = Duration::from_secs(30);
/// How long one `XREAD` blocks before the reader looks whether it is still wanted.
const TAIL_BLOCK: Duration = Duration::from_secs(5);
/// Events one `XREAD` takes at most: half a client's buffer, so that one read never by
/// itself cuts off a client that keeps up.
const TAIL_COUNT: usize = CLIENT_BUFFER / 2;

/// KEYS stream, meta; ARGV kind, data, max, terminal (0/1), retention_s, owner ('' for none).
/// Returns the new id, -1 when finished, -2 when full, -3 when `owner` is not the run's
/// owner any more (a durable run taken over by another instance: see `analyses::durable`).
const APPEND: &str = r"
if redis.call('HGET', KEYS[2], 'finished') == '1' then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[2], 'owner') ~= ARGV[6] then return -3 end
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

    pub(super) async fn erase(&self, analysis: &str) -> Result<(), AppendError> {
        let mut conn = self.conn.clone();
        redis::AsyncCommands::del::<_, ()>(
            &mut conn,
            &[self.stream_key(analysis), self.meta_key(analysis)],
        )
        .await
        .map_err(backend)
    }

    pub(super) async fn append(
        &self,
        analysis: &str,
        owner: Option<&str>,
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
            .arg(owner.unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match n {
            -1 => Err(AppendError::Finished),
            -2 => Err(AppendError::Full),
            -3 => Err(AppendError::NotOwner),
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

    /// See [`super::EventLog::follow`]. A finished analysis's stream holds every event: the
    /// client gets what it lacks and the channel closes. Otherwise the client joins this
    /// instance's reader of the analysis (started at the log's end if there is none), with
    /// what came before the reader started read from the stream itself. An `after` past the
    /// log's end is taken as its end: no client has events not yet written.
    pub(super) async fn follow(
        &self,
        analysis: &str,
        after: u64,
    ) -> Result<Option<mpsc::Receiver<Bytes>>, AppendError> {
        let mut conn = self.conn.clone();
        let (n, finished): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(self.meta_key(analysis))
            .arg("n")
            .arg("finished")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let Some(n) = n else {
            return Ok(None);
        };
        let after = after.min(n);
        if finished.as_deref() == Some("1") {
            let past = self.range(analysis, after, None).await?;
            let replay = past.iter().map(Event::frame).collect();
            return Ok(Some(Fanout::default().subscribe(replay, after, false)));
        }
        // A reader can stop for want of clients just as this one comes: then it takes a new
        // one (`tail` replaces a stopped reader).
        loop {
            let tail = self.tail(analysis, n);
            let start = {
                let st = tail.state.lock().expect("tail lock");
                (!st.closed).then_some(st.start)
            };
            let Some(start) = start else {
                tokio::task::yield_now().await;
                continue;
            };
            // Events between the client's last one and the reader's start; the reader has the
            // rest, including whatever it read while this was being fetched.
            let gap = if after < start {
                self.range(analysis, after, Some(start)).await?
            } else {
                Vec::new()
            };
            let mut st = tail.state.lock().expect("tail lock");
            if st.closed {
                continue;
            }
            st.wanted = Instant::now();
            if st.failed.is_some() {
                let mut ended = Fanout::default();
                let rx = ended.subscribe(vec![Bytes::from_static(frame::UNAVAILABLE)], 0, false);
                return Ok(Some(rx));
            }
            let skip = after.saturating_sub(st.start) as usize;
            let replay: Vec<Bytes> = gap
                .iter()
                .map(Event::frame)
                .chain(st.frames.iter().skip(skip).cloned())
                .collect();
            let live = !st.finished;
            return Ok(Some(st.live.subscribe(replay, after, live)));
        }
    }

    /// The events after `after`, up to `upto` (or the end), at most the log's bound.
    async fn range(
        &self,
        analysis: &str,
        after: u64,
        upto: Option<u64>,
    ) -> Result<Vec<Event>, AppendError> {
        let mut conn = self.conn.clone();
        let end = upto.map_or_else(|| "+".to_string(), |u| format!("{u}-0"));
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_count(
                self.stream_key(analysis),
                format!("({after}-0"),
                end,
                MAX_EVENTS,
            )
            .await
            .map_err(backend)?;
        Ok(reply.ids.iter().filter_map(parse_entry).collect())
    }

    /// This instance's reader of `analysis`, started after event `start` if there is none.
    fn tail(&self, analysis: &str, start: u64) -> Arc<Tail> {
        let mut tails = self.tails.lock().expect("tails lock");
        if let Some(t) = tails.get(analysis) {
            // A reader that stopped while idle is replaced, not joined: nobody would feed it.
            if !t.state.lock().expect("tail lock").closed {
                return t.clone();
            }
        }
        let tail = Arc::new(Tail {
            state: Mutex::new(TailState {
                start,
                frames: Vec::new(),
                live: Fanout::default(),
                finished: false,
                closed: false,
                failed: None,
                wanted: Instant::now(),
            }),
        });
        tails.insert(analysis.to_string(), tail.clone());
        tokio::spawn(read_tail(
            self.clone(),
            analysis.to_string(),
            start,
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

/// The reader task of one analysis: `XREAD BLOCK` from `last` until the final event, a Redis
/// failure (its clients get it as a last frame and end their streams), or no client for
/// [`TAIL_IDLE`]. It then leaves the registry, so the next client starts a fresh one. It
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
            .count(TAIL_COUNT)
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
                let room = MAX_EVENTS.saturating_sub(st.frames.len());
                for e in events.into_iter().take(room) {
                    let bytes = e.frame();
                    st.live.push(e.id, &bytes);
                    st.frames.push(bytes);
                }
            }
            if ended {
                st.finished = true;
                // Every stream ends after the final event.
                st.live.close(None);
            }
            if st.live.prune() > 0 {
                st.wanted = Instant::now();
            }
            let idle = st.wanted.elapsed() > TAIL_IDLE;
            // Decided under the lock a joining client takes, so none joins a stopped reader.
            st.closed = idle;
            drop(st);
            if ended || idle {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(analysis = %analysis, error = %e, "Event reader failed; its clients end their streams.");
        let mut st = tail.state.lock().expect("tail lock");
        st.failed = Some(e);
        st.live.close(Some(frame::UNAVAILABLE));
        drop(st);
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
