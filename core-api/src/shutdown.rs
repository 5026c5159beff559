//! What asks the service to stop: Ctrl-C in a terminal, SIGTERM from `docker stop` or an
//! orchestrator. `main` hands [`requested`] to [`crate::Application::run_until`], which then
//! ends the streams, lets requests finish and gives queued partner jobs back.

use tokio::sync::watch;

/// Resolves once `stop` (the service's shutdown signal) turns true: how every task and
/// stream waits for it. The future owns its receiver and borrows no watch value across an
/// await, so it can be selected on in spawned tasks.
pub fn stopped(stop: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Resolves on Ctrl-C, or on SIGTERM where the platform has it.
pub async fn requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Without a SIGTERM handler, Ctrl-C alone still stops the service.
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
