//! The event log of each analysis: every step appends an event; the SSE endpoint replays the
//! log from the client's last event id and then follows it.
//!
//! Two implementations behind one type. In memory ([`memory`], the embedded shape): bounded
//! per analysis, kept for a set time after the analysis ends. On Redis Streams ([`redis`], when
//! `REDIS_URL` is set): the stream `{prefix}:ev:{id}` with explicit ids `N-0`, so event ids are
//! the same small integers on every instance and any instance can serve any analysis's
//! stream; a finished analysis's stream expires after the retention.
//!
//! A client follows a log through [`EventLog::follow`]: a channel of ready-made SSE frames
//! ([`frame`]) that ends after the final event, fed by one fan-out whichever backend holds
//! the log. Nothing is buffered for a slow client beyond its channel.

mod entry;
mod fanout;
pub mod frame;
pub mod memory;
pub mod redis;

use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::mpsc;

use crate::domain::event::AnalysisEvent;
pub use entry::{AppendError, Event, CLIENT_BUFFER, MAX_EVENTS};
pub use memory::MemoryLog;
pub use redis::RedisLog;

/// The event log the settings chose.
#[derive(Clone)]
pub enum EventLog {
    Memory(MemoryLog),
    Redis(Box<RedisLog>),
}

impl EventLog {
    /// `retention`: how long a finished analysis's events stay readable.
    pub fn memory(retention: Duration) -> Self {
        EventLog::Memory(MemoryLog::new(retention))
    }

    pub async fn redis(
        url: &str,
        prefix: &str,
        retention: Duration,
    ) -> Result<Self, ::redis::RedisError> {
        Ok(EventLog::Redis(Box::new(
            RedisLog::connect(url, prefix, retention).await?,
        )))
    }

    /// Starts an empty log for a new analysis.
    pub async fn create(&self, analysis: &str) -> Result<(), AppendError> {
        match self {
            EventLog::Memory(m) => {
                m.create(analysis);
                Ok(())
            }
            EventLog::Redis(r) => r.create(analysis).await,
        }
    }

    /// Records an analysis event; returns its id.
    pub async fn record(&self, analysis: &str, event: &AnalysisEvent) -> Result<u64, AppendError> {
        self.record_as(analysis, None, event).await
    }

    /// Records an event for the run holding `owner`, the lease token of a durable run (on
    /// Redis): refused with [`AppendError::NotOwner`] once another instance has taken the run
    /// over, so a run that lost its lease never writes into the log its successor writes.
    pub async fn record_as(
        &self,
        analysis: &str,
        owner: Option<&str>,
        event: &AnalysisEvent,
    ) -> Result<u64, AppendError> {
        self.append_as(
            analysis,
            owner,
            event.name(),
            serde_json::Value::Object(event.data()),
        )
        .await
    }

    /// Appends an event of any name (the typed way is [`EventLog::record`]); returns its id.
    #[cfg(test)]
    pub(crate) async fn append(
        &self,
        analysis: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<u64, AppendError> {
        self.append_as(analysis, None, kind, data).await
    }

    async fn append_as(
        &self,
        analysis: &str,
        owner: Option<&str>,
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
            EventLog::Redis(r) => r.append(analysis, owner, kind, data).await,
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
            EventLog::Memory(m) => Ok(m.read_after(analysis, after, max)),
            EventLog::Redis(r) => r.read_after(analysis, after, max).await,
        }
    }

    /// A client's frames: the events after `after`, then each event as it is appended, until
    /// the final one (the channel then closes) or the client falls behind (it gets a last
    /// frame saying so). `None` for an analysis this log does not know. Both logs push the
    /// same shared frames to every client ([`fanout`]): no task or serialisation per client.
    /// An `after` past the log's end is taken as its end.
    pub async fn follow(
        &self,
        analysis: &str,
        after: u64,
    ) -> Result<Option<mpsc::Receiver<Bytes>>, AppendError> {
        match self {
            EventLog::Memory(m) => Ok(m.subscribe(analysis, after)),
            EventLog::Redis(r) => r.follow(analysis, after).await,
        }
    }

    /// [`EventLog::follow`] for an analysis known to have ended, whose final event may never
    /// come (its append failed for longer than the run retried it): if the stream has not
    /// ended `within` from now, it ends with [`frame::FINAL_LOST`]. One small task per such
    /// client, which ends with its stream.
    pub async fn follow_ended(
        &self,
        analysis: &str,
        after: u64,
        within: Duration,
    ) -> Result<Option<mpsc::Receiver<Bytes>>, AppendError> {
        let Some(mut rx) = self.follow(analysis, after).await? else {
            return Ok(None);
        };
        let (tx, out) = mpsc::channel(CLIENT_BUFFER);
        let deadline = tokio::time::Instant::now() + within;
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = rx.recv() => next,
                    () = tx.closed() => return,
                    () = tokio::time::sleep_until(deadline) => {
                        let _ = tx.try_send(Bytes::from_static(frame::FINAL_LOST));
                        return;
                    }
                };
                let Some(f) = next else { return };
                // A client that takes nothing until the deadline gets nothing more.
                if !matches!(
                    tokio::time::timeout_at(deadline, tx.send(f)).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
            }
        });
        Ok(Some(out))
    }

    /// Removes an analysis's log (an erasure); its live followers' streams end.
    pub async fn erase(&self, analysis: &str) -> Result<(), AppendError> {
        match self {
            EventLog::Memory(m) => {
                m.erase(analysis);
                Ok(())
            }
            EventLog::Redis(r) => r.erase(analysis).await,
        }
    }

    /// Drops in-memory logs of analyses finished longer ago than the retention (Redis expires
    /// its own).
    pub fn expire(&self) -> usize {
        match self {
            EventLog::Memory(m) => m.expire(),
            EventLog::Redis(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn ids_increase_from_one_and_nothing_follows_the_final_event(log: EventLog) {
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
        assert_eq!(
            log.append("a", "analysis.completed", serde_json::json!({}))
                .await,
            Ok(3)
        );
        assert!(log.read_after("a", 2, 9).await.unwrap().unwrap()[0].is_terminal());
        assert_eq!(
            log.append("a", "late", serde_json::json!({})).await,
            Err(AppendError::Finished)
        );
        assert!(log.read_after("nope", 0, 10).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn in_memory_ids_increase_from_one_and_nothing_follows_the_final_event() {
        ids_increase_from_one_and_nothing_follows_the_final_event(EventLog::memory(
            Duration::from_secs(60),
        ))
        .await;
    }

    #[tokio::test]
    async fn on_redis_ids_increase_from_one_and_nothing_follows_the_final_event() {
        let (log, _keys) = redis_log().await;
        ids_increase_from_one_and_nothing_follows_the_final_event(log).await;
    }

    /// A Redis log under a key prefix of its own (`REDIS_URL`, or the local server), with the
    /// URL and prefix for looking at Redis itself; the prefix's keys go when it is dropped.
    async fn redis_log() -> (EventLog, TestKeys) {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-ev-{}", uuid::Uuid::new_v4().simple());
        let log = EventLog::redis(&url, &prefix, Duration::from_secs(60))
            .await
            .expect("a Redis server");
        (log, TestKeys { url, prefix })
    }

    /// A test's Redis prefix; dropping it deletes the prefix's keys (a log that never ended
    /// would otherwise stay for its 24 hours).
    struct TestKeys {
        url: String,
        prefix: String,
    }

    impl Drop for TestKeys {
        fn drop(&mut self) {
            use ::redis::Commands;
            let Ok(mut c) =
                ::redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
            else {
                return;
            };
            let keys: Vec<String> = c
                .scan_match::<_, String>(format!("{}:*", self.prefix))
                .map(|keys| keys.filter_map(Result::ok).collect())
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: ::redis::RedisResult<()> = c.del(keys);
            }
        }
    }

    /// Waits (5 s at most) until no reader of this prefix is connected to Redis.
    async fn readers_end(url: &str, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while readers(url, prefix).await > 0 {
            assert!(
                Instant::now() < deadline,
                "the reader outlived its analysis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connections named as this prefix's readers, from Redis's own CLIENT LIST.
    async fn readers(url: &str, prefix: &str) -> usize {
        let mut c = ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let list: String = ::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut c)
            .await
            .unwrap();
        let name = format!("name={prefix}:tail ");
        list.lines().filter(|l| l.contains(&name)).count()
    }

    /// The id of an event frame, or 0 for a frame without one.
    fn frame_id(f: &Bytes) -> u64 {
        let text = String::from_utf8_lossy(f);
        text.strip_prefix("id: ")
            .and_then(|rest| rest.split('\n').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or(0)
    }

    async fn next_id(rx: &mut mpsc::Receiver<Bytes>) -> Option<u64> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a frame or the end within 10 s")
            .map(|f| frame_id(&f))
    }

    #[tokio::test]
    async fn on_redis_the_followers_of_an_analysis_share_one_reader_that_ends_with_it() {
        let (log, keys) = redis_log().await;
        log.create("a").await.unwrap();
        log.append("a", "analysis.accepted", serde_json::json!({}))
            .await
            .unwrap();
        let mut followers = Vec::new();
        for _ in 0..20 {
            followers.push(log.follow("a", 1).await.unwrap().unwrap());
        }
        // The reader names itself once connected: wait for it, then count.
        let deadline = Instant::now() + Duration::from_secs(5);
        while readers(&keys.url, &keys.prefix).await == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            readers(&keys.url, &keys.prefix).await,
            1,
            "one XREAD for 20 clients"
        );
        log.append("a", "partner.started", serde_json::json!({}))
            .await
            .unwrap();
        for rx in &mut followers {
            assert_eq!(next_id(rx).await, Some(2));
        }
        log.append("a", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        for rx in &mut followers {
            assert_eq!(next_id(rx).await, Some(3));
            assert_eq!(next_id(rx).await, None);
        }
        // The reader stops after the final event.
        readers_end(&keys.url, &keys.prefix).await;
    }

    /// Every id a channel gives until it closes (10 s at most between two).
    async fn ids_until_the_end(rx: &mut mpsc::Receiver<Bytes>) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Some(id) = next_id(rx).await {
            ids.push(id);
        }
        ids
    }

    async fn a_follower_far_behind_is_caught_up_without_being_cut_off(log: EventLog) {
        log.create("a").await.unwrap();
        let behind = 3 * CLIENT_BUFFER as u64;
        for _ in 0..behind {
            log.append("a", "classification.progress", serde_json::json!({}))
                .await
                .unwrap();
        }
        // The first follower of the analysis, with everything still to read.
        let mut rx = log.follow("a", 0).await.unwrap().unwrap();
        let mut ids = Vec::new();
        for _ in 0..behind {
            ids.push(next_id(&mut rx).await.unwrap());
        }
        assert_eq!(ids, (1..=behind).collect::<Vec<_>>());
        log.append("a", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(ids_until_the_end(&mut rx).await, [behind + 1]);
    }

    #[tokio::test]
    async fn in_memory_a_follower_far_behind_is_caught_up_without_being_cut_off() {
        a_follower_far_behind_is_caught_up_without_being_cut_off(EventLog::memory(
            Duration::from_secs(60),
        ))
        .await;
    }

    #[tokio::test]
    async fn on_redis_a_follower_far_behind_is_caught_up_without_being_cut_off() {
        let (log, keys) = redis_log().await;
        a_follower_far_behind_is_caught_up_without_being_cut_off(log).await;
        readers_end(&keys.url, &keys.prefix).await;
    }

    async fn an_id_past_the_end_is_taken_as_the_end(log: EventLog) {
        log.create("a").await.unwrap();
        for _ in 0..2 {
            log.append("a", "partner.started", serde_json::json!({}))
                .await
                .unwrap();
        }
        // The first follower claims events that do not exist yet; it must neither get
        // duplicates nor keep the others from the events that come.
        let mut ahead = log.follow("a", 1000).await.unwrap().unwrap();
        let mut from_start = log.follow("a", 0).await.unwrap().unwrap();
        log.append("a", "partner.completed", serde_json::json!({}))
            .await
            .unwrap();
        log.append("a", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(ids_until_the_end(&mut ahead).await, [3, 4]);
        assert_eq!(ids_until_the_end(&mut from_start).await, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn in_memory_an_id_past_the_end_is_taken_as_the_end() {
        an_id_past_the_end_is_taken_as_the_end(EventLog::memory(Duration::from_secs(60))).await;
    }

    #[tokio::test]
    async fn on_redis_an_id_past_the_end_is_taken_as_the_end() {
        let (log, keys) = redis_log().await;
        an_id_past_the_end_is_taken_as_the_end(log).await;
        readers_end(&keys.url, &keys.prefix).await;
    }

    #[tokio::test]
    async fn a_follower_of_an_ended_analysis_gets_its_final_event_or_is_told_it_was_lost() {
        let log = EventLog::memory(Duration::from_secs(60));
        for a in ["lost", "late"] {
            log.create(a).await.unwrap();
            for _ in 0..3 {
                log.append(a, "partner.started", serde_json::json!({}))
                    .await
                    .unwrap();
            }
        }
        let within = Duration::from_millis(300);
        let mut lost = log.follow_ended("lost", 1, within).await.unwrap().unwrap();
        let mut late = log.follow_ended("late", 1, within).await.unwrap().unwrap();
        log.append("late", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(ids_until_the_end(&mut late).await, [2, 3, 4]);
        let mut frames = Vec::new();
        while let Some(f) = lost.recv().await {
            frames.push(f);
        }
        assert_eq!(frames.iter().map(frame_id).collect::<Vec<_>>(), [2, 3, 0]);
        assert_eq!(&frames[2][..], frame::FINAL_LOST);
        assert!(log.follow_ended("nope", 0, within).await.unwrap().is_none());
    }

    async fn followers_get_the_replay_then_each_event_and_their_streams_end_with_the_analysis(
        log: EventLog,
    ) {
        log.create("a").await.unwrap();
        log.append("a", "analysis.accepted", serde_json::json!({}))
            .await
            .unwrap();
        log.append("a", "partner.started", serde_json::json!({}))
            .await
            .unwrap();
        assert!(log.follow("nope", 0).await.unwrap().is_none());
        // The first follower starts from event 2; the next, from the beginning, gets what
        // came before the first one joined as well.
        let mut later = log.follow("a", 2).await.unwrap().unwrap();
        let mut early = log.follow("a", 0).await.unwrap().unwrap();
        let mut sleeper = log.follow("a", 2).await.unwrap().unwrap();
        assert_eq!(next_id(&mut early).await, Some(1));
        assert_eq!(next_id(&mut early).await, Some(2));
        // The sleeper never reads: after its buffer fills it gets the cut-off frame and ends.
        for id in 3..3 + CLIENT_BUFFER as u64 + 5 {
            log.append("a", "classification.progress", serde_json::json!({}))
                .await
                .unwrap();
            assert_eq!(next_id(&mut early).await, Some(id));
            assert_eq!(next_id(&mut later).await, Some(id));
        }
        let mut got = Vec::new();
        while let Some(f) = sleeper.recv().await {
            got.push(String::from_utf8_lossy(&f).into_owned());
        }
        assert_eq!(got.len(), CLIENT_BUFFER);
        assert!(got.last().unwrap().starts_with("event: stream.error"));
        let last = log
            .append("a", "analysis.completed", serde_json::json!({}))
            .await
            .unwrap();
        for rx in [&mut early, &mut later] {
            assert_eq!(next_id(rx).await, Some(last));
            assert_eq!(next_id(rx).await, None, "the final event ends the stream");
        }
        // After the end, a follower gets what it lacks and a stream that ends.
        let mut late = log.follow("a", last - 2).await.unwrap().unwrap();
        assert_eq!(next_id(&mut late).await, Some(last - 1));
        assert_eq!(next_id(&mut late).await, Some(last));
        assert_eq!(next_id(&mut late).await, None);
        let mut had_all = log.follow("a", last).await.unwrap().unwrap();
        assert_eq!(next_id(&mut had_all).await, None);
    }

    #[tokio::test]
    async fn in_memory_followers_get_the_replay_then_each_event_until_the_end() {
        followers_get_the_replay_then_each_event_and_their_streams_end_with_the_analysis(
            EventLog::memory(Duration::from_secs(60)),
        )
        .await;
    }

    #[tokio::test]
    async fn on_redis_followers_are_fed_like_in_memory_from_one_shared_reader() {
        let (log, keys) = redis_log().await;
        followers_get_the_replay_then_each_event_and_their_streams_end_with_the_analysis(log).await;
        // One reader fed all of them, and it ended with the analysis.
        readers_end(&keys.url, &keys.prefix).await;
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
