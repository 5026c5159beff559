//! The live clients of one analysis's log, fed the way both logs feed them: each event's frame
//! is built once and the same bytes are pushed into every client's channel. No task and no
//! serialisation per client; a client that does not keep up is cut off (with a last frame
//! saying so) rather than buffered for.

use axum::body::Bytes;
use tokio::sync::mpsc;

use super::entry::CLIENT_BUFFER;
use super::frame;

#[derive(Default)]
pub(super) struct Fanout {
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    tx: mpsc::Sender<Bytes>,
    /// The client has every event up to this id: pushed events at or below it are not sent.
    /// On Redis a client can join a reader that has not yet read all the client has.
    has: u64,
}

impl Fanout {
    /// A client's channel holding `replay`, then fed each pushed frame above `has` if `live`;
    /// a channel that is not live closes after the replay.
    pub fn subscribe(&mut self, replay: Vec<Bytes>, has: u64, live: bool) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(replay.len() + CLIENT_BUFFER);
        for f in replay {
            tx.try_send(f)
                .expect("the channel was sized for the replay");
        }
        if live {
            self.subscribers.push(Subscriber { tx, has });
        }
        rx
    }

    /// Pushes event `id`'s frame to every client that lacks it; one whose buffer is full is
    /// cut off, in the slot kept for that, and one that hung up is dropped.
    pub fn push(&mut self, id: u64, bytes: &Bytes) {
        self.subscribers.retain_mut(|s| {
            if id <= s.has {
                return !s.tx.is_closed();
            }
            if s.tx.capacity() <= 1 {
                let _ = s.tx.try_send(Bytes::from_static(frame::FELL_BEHIND));
                return false;
            }
            s.has = id;
            s.tx.try_send(bytes.clone()).is_ok()
        });
    }

    /// Ends every client's stream after what it already has, with `last` as its final frame
    /// when one is given.
    pub fn close(&mut self, last: Option<&'static [u8]>) {
        for s in self.subscribers.drain(..) {
            if let Some(f) = last {
                let _ = s.tx.try_send(Bytes::from_static(f));
            }
        }
    }

    /// Forgets clients that hung up; returns how many are left.
    pub fn prune(&mut self) -> usize {
        self.subscribers.retain(|s| !s.tx.is_closed());
        self.subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(id: u64) -> Bytes {
        frame::event(id, "partner.started", "{}")
    }

    #[test]
    fn a_client_is_not_pushed_the_events_it_already_has() {
        let mut fanout = Fanout::default();
        // Joined with events 1-5, while the pusher had only reached event 3.
        let mut rx = fanout.subscribe(vec![], 5, true);
        for id in 4..=7 {
            fanout.push(id, &frame_of(id));
        }
        fanout.close(None);
        let mut got = Vec::new();
        while let Ok(f) = rx.try_recv() {
            got.push(f);
        }
        assert_eq!(got, [frame_of(6), frame_of(7)]);
    }
}
