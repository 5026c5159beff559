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
    subscribers: Vec<mpsc::Sender<Bytes>>,
}

impl Fanout {
    /// A client's channel holding `replay`, then fed each pushed frame if `live`; a channel
    /// that is not live closes after the replay.
    pub fn subscribe(&mut self, replay: Vec<Bytes>, live: bool) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(replay.len() + CLIENT_BUFFER);
        for f in replay {
            tx.try_send(f)
                .expect("the channel was sized for the replay");
        }
        if live {
            self.subscribers.push(tx);
        }
        rx
    }

    /// Pushes a frame to every client; one whose buffer is full is cut off, in the slot kept
    /// for that, and one that hung up is dropped.
    pub fn push(&mut self, bytes: &Bytes) {
        self.subscribers.retain(|tx| {
            if tx.capacity() <= 1 {
                let _ = tx.try_send(Bytes::from_static(frame::FELL_BEHIND));
                return false;
            }
            tx.try_send(bytes.clone()).is_ok()
        });
    }

    /// Ends every client's stream after what it already has, with `last` as its final frame
    /// when one is given.
    pub fn close(&mut self, last: Option<&'static [u8]>) {
        for tx in self.subscribers.drain(..) {
            if let Some(f) = last {
                let _ = tx.try_send(Bytes::from_static(f));
            }
        }
    }

    /// Forgets clients that hung up; returns how many are left.
    pub fn prune(&mut self) -> usize {
        self.subscribers.retain(|tx| !tx.is_closed());
        self.subscribers.len()
    }
}
