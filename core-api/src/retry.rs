//! Retrying an operation that can fail for a while (Redis restarting, say): with a growing
//! wait between attempts, until it succeeds, fails in a way waiting cannot fix, or a
//! deadline passes.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Runs `op` until it succeeds, fails with an error `transient` rejects, or `deadline`
/// passes, waiting longer after each failure (100 ms, doubling, at most 5 s). Each retried
/// failure is logged with `what` (no personal data: the callers name a step, not a person).
pub async fn until<T, E, F, Fut>(
    what: &str,
    deadline: Instant,
    transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if transient(&e) && Instant::now() + wait < deadline => {
                tracing::warn!(step = what, error = %e, retry_in_ms = wait.as_millis() as u64, "Step failed; retrying.");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq)]
    enum Failure {
        Down,
        Refused,
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    fn transient(e: &Failure) -> bool {
        *e == Failure::Down
    }

    #[tokio::test]
    async fn a_step_is_retried_while_it_fails_for_a_while_and_only_then() {
        let in_a_minute = Instant::now() + Duration::from_secs(60);
        // Fails twice, then succeeds.
        let calls = Cell::new(0);
        let done = until("test", in_a_minute, transient, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(Failure::Down)
                } else {
                    Ok(7)
                }
            }
        })
        .await;
        assert_eq!((done, calls.get()), (Ok(7), 3));
        // A failure waiting cannot fix is not retried.
        calls.set(0);
        let refused: Result<u8, _> = until("test", in_a_minute, transient, || {
            calls.set(calls.get() + 1);
            async { Err(Failure::Refused) }
        })
        .await;
        assert_eq!((refused, calls.get()), (Err(Failure::Refused), 1));
        // Nor is anything after the deadline.
        calls.set(0);
        let soon = Instant::now() + Duration::from_millis(250);
        let gave_up: Result<u8, _> = until("test", soon, transient, || {
            calls.set(calls.get() + 1);
            async { Err(Failure::Down) }
        })
        .await;
        assert_eq!(gave_up, Err(Failure::Down));
        assert!((2..=3).contains(&calls.get()), "{} calls", calls.get());
        assert!(Instant::now() < soon + Duration::from_millis(100));
    }
}
