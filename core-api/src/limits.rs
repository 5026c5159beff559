//! Caps on what one caller may hold open at once (a long stream holds a task, a body and a
//! client's share of the CPU). Rate limits say how often a caller may start something; these
//! say how much of it may run at the same time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many of something each caller has open, with a cap per caller.
pub struct OpenPerCaller {
    open: Mutex<HashMap<String, usize>>,
    max: usize,
}

/// One open slot of a caller; dropping it gives the slot back.
pub struct Slot {
    owner: Arc<OpenPerCaller>,
    caller: String,
}

impl OpenPerCaller {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(OpenPerCaller {
            open: Mutex::default(),
            max,
        })
    }

    /// The cap per caller.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `caller`, or `None` when it already has the cap open.
    pub fn open(self: &Arc<Self>, caller: &str) -> Option<Slot> {
        let mut open = self.open.lock().expect("open slots lock");
        let n = open.entry(caller.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            caller: caller.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("open slots lock");
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            // No entry is kept for a caller with nothing open: the map stays as small as
            // what is open now.
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_cap_of_slots_and_each_dropped_one_back() {
        let caps = OpenPerCaller::new(2);
        let a1 = caps.open("a").unwrap();
        let _a2 = caps.open("a").unwrap();
        assert!(caps.open("a").is_none(), "the cap is per caller");
        let _b = caps.open("b").unwrap();
        drop(a1);
        assert!(caps.open("a").is_some());
        assert_eq!(caps.open.lock().unwrap().len(), 2);
    }
}
