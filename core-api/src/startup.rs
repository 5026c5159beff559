//! Startup: [`Application::build`] wires the parts from [`Settings`] (model, store,
//! partners, event log, snapshots) and binds the listener; [`Application::run_until`] serves
//! until a signal. Tests build it on port 0 and read the real port from [`Application::addr`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::analyses::durable::{Claim, Runs};
use crate::auth::Auth;
use crate::config::{ApiKeyConfig, Secret, Settings};
use crate::events::EventLog;
use crate::idempotency::Idempotency;
use crate::limits::OpenPerCaller;
use crate::partners::{self, Partners};
use crate::snapshots::Analyses;
use crate::state::AppState;
use crate::store::{ElasticSettings, ElasticStore, SqliteStore, Store};

/// Open connections at most; past it a new connection is answered 503 and closed. Sized for
/// an instance of SSE followers (each holds one); lowered at start to fit the file limit (see
/// `integrations::front::serve`); a deployment may want it configurable.
pub const MAX_CONNECTIONS: usize = 50_000;

/// A built service, listening, not yet serving.
pub struct Application {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    /// The development key generated when none was configured (printed at start).
    pub dev_key: Option<String>,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Loads the model, opens the store, starts integrations (with the bundled simulator as the
    /// partners unless `PARTNERS_CONFIG` names a partner file) and binds the listener.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        let dev_key = ensure_a_key(&mut settings);
        let auth = Auth::new(
            &settings.api_keys,
            settings.rate_per_key,
            settings.events_token_key.as_ref(),
        )
        .map_err(anyhow::Error::msg)?;
        let scorer = classifier::Scorer::load(&settings.model_path).with_context(|| {
            format!(
                "loading the classifier model (MODEL_PATH={})",
                settings.model_path.display()
            )
        })?;
        let store = open_store(&settings).await?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        require_shared_keys(&settings)?;
        let cpf_hash_key = settings.cpf_hash_key.clone().unwrap_or_else(|| {
            tracing::warn!("No CPF_HASH_KEY set: CPF hashes in the store change with every start.");
            Secret::new(Auth::generate_key())
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(settings.host, settings.port))
            .await
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", listener.local_addr().expect("bound")));
        let (partners, worker) = connect_partners(&settings, &public_url, &shutdown_rx).await?;
        let (events, analyses, idempotency, runs) = open_event_log(&settings, &shutdown_rx).await?;
        let event_streams = OpenPerCaller::new(settings.max_streams_per_tenant);
        let stream_opens = {
            let rate = std::num::NonZeroU32::new(settings.stream_opens_per_sec)
                .unwrap_or(std::num::NonZeroU32::MIN);
            // Bursts of ten seconds' worth: dashboards reconnecting together after a deploy.
            let burst = rate.saturating_mul(std::num::NonZeroU32::new(10).expect("10"));
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        };
        let webhooks = Arc::new(open_webhooks(&settings).await?);
        let state = Arc::new(AppState {
            settings,
            auth,
            events,
            analyses,
            idempotency,
            runs,
            active_runs: Arc::default(),
            partners,
            scorer: Arc::new(scorer),
            store,
            webhooks,
            cpf_hash_key,
            max_transactions: 200_000,
            shutdown: shutdown_rx,
            // Each stream holds a task and a body and takes its share of a core: a few per
            // key keep one caller from crowding out the rest.
            batch_streams: OpenPerCaller::new(
                crate::http::routes::classify_stream::STREAMS_PER_KEY,
            ),
            event_streams,
            stream_opens,
        });
        watch_for_orphans(state.clone());
        crate::analyses::erase::watch_retention(state.clone());
        tokio::spawn(
            state
                .webhooks
                .clone()
                .run_worker(state.store.clone(), state.shutdown_signal_owned()),
        );
        Ok(Application {
            listener,
            state,
            shutdown: shutdown_tx,
            dev_key,
            worker,
        })
    }

    /// The bound address (the port is the real one when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// A sender that stops the service when it sends `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Serves until `signal` resolves; then streams end, the worker gives its jobs back, and
    /// the call returns.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            let _ = shutdown.send(true);
        });
        let limits = integrations::front::FrontLimits {
            max_connections: MAX_CONNECTIONS,
            header_read: Duration::from_secs(self.state.settings.header_read_timeout_secs),
            drain: Duration::from_secs(30),
        };
        crate::server::serve(
            self.listener,
            crate::http::router(self.state.clone()),
            limits,
            self.state.shutdown.clone(),
        )
        .await;
        if let Some(worker) = self.worker {
            let _ = worker.await;
        }
        // The runs hand their analyses on (or fail them, without Redis) as they see the
        // signal: wait for them, a while, so no lease is left to run out instead.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self
            .state
            .active_runs
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// With no API keys configured: a development key, and loopback only, so nobody else can
/// use it. Returns the key to print.
fn ensure_a_key(settings: &mut Settings) -> Option<String> {
    if !settings.api_keys.is_empty() {
        return None;
    }
    let key = Auth::generate_key();
    settings.api_keys.push(ApiKeyConfig {
        tenant: "dev".into(),
        key: key.clone(),
        scopes: None,
    });
    settings.host = std::net::IpAddr::from([127, 0, 0, 1]);
    Some(key)
}

/// Instances sharing a Redis answer for each other's analyses, so they must share the keys
/// of what they check for each other: the `events_url` tokens, the keyed CPF hashes (in the
/// store, and in the fingerprints of idempotent starts) and the key that seals personal data
/// on Redis (durable runs, which any instance may take over; partner data). Generated per start, as without
/// Redis, each instance would refuse the others' tokens, answer a retried start on another
/// instance with a 422 and never open the others' cached answers.
fn require_shared_keys(settings: &Settings) -> anyhow::Result<()> {
    if settings.redis_url.is_none() {
        return Ok(());
    }
    if settings.events_token_key.is_none() {
        anyhow::bail!("EVENTS_TOKEN_KEY: needed with REDIS_URL, the same on every instance");
    }
    if settings.cpf_hash_key.is_none() {
        anyhow::bail!("CPF_HASH_KEY: needed with REDIS_URL, the same on every instance");
    }
    if settings.queue_key.is_none() {
        anyhow::bail!(
            "QUEUE_KEY: needed with REDIS_URL, to seal the personal data kept there (durable \
             runs; queued requests and cached answers): a random secret of at least 32 \
             characters, the same on every instance"
        );
    }
    if settings.run_lease_ms < 300 {
        anyhow::bail!("RUN_LEASE_MS: at least 300 (renewed every third of it)");
    }
    Ok(())
}

/// The webhook endpoints and deliveries: on Redis (shared, secrets sealed with `QUEUE_KEY`)
/// when it is set, else in a SQLite file in the data folder.
async fn open_webhooks(settings: &Settings) -> anyhow::Result<crate::webhooks::Webhooks> {
    let store = match (&settings.redis_url, &settings.queue_key) {
        (Some(url), Some(key)) => {
            let conn =
                redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
            let seal = integrations::queue::JobSeal::with_label(
                key,
                b"credit-analysis webhook endpoint secrets v1",
            )
            .map_err(|why| anyhow::anyhow!("QUEUE_KEY: {why}"))?;
            crate::webhooks::WebhookStore::redis(conn, &settings.key_prefix, seal)
        }
        _ => crate::webhooks::WebhookStore::sqlite(&settings.data_dir)?,
    };
    Ok(crate::webhooks::Webhooks::new(
        store,
        crate::webhooks::Allowed::new(&settings.webhook_allowed_hosts),
        Duration::from_millis(settings.webhook_retry_base_ms),
        settings.webhook_max_attempts,
    ))
}

/// The transaction store: Elasticsearch when a URL is set, else SQLite in the data folder.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = match &settings.elasticsearch_url {
        Some(url) => Store::Elastic(
            ElasticStore::connect(&ElasticSettings {
                username: settings.elasticsearch_user.clone(),
                password: settings.elasticsearch_password.clone(),
                api_key: settings.elasticsearch_api_key.clone(),
                index: settings.elasticsearch_index.clone(),
                audit_index: settings.elasticsearch_audit_index.clone(),
                ..ElasticSettings::new(url)
            })
            .await?,
        ),
        None => Store::Sqlite(SqliteStore::open(&settings.data_dir)?),
    };
    Ok(store)
}

/// How partner requests reach integrations: a separate service at `INTEGRATIONS_URL`, or a
/// gateway in this process (on the partner file, or the bundled simulator), with its retry
/// worker.
async fn connect_partners(
    settings: &Settings,
    public_url: &str,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<(Partners, Option<tokio::task::JoinHandle<()>>)> {
    let (partners, worker) = match &settings.integrations_url {
        Some(url) => {
            let secret = settings.integrations_secret.as_ref().context(
                "INTEGRATIONS_SECRET: needed with INTEGRATIONS_URL (this instance's secret as \
                 one of the integrations service's callers)",
            )?;
            let remote = partners::Remote::connect(url, public_url, secret).await?;
            (Partners::Remote(remote), None)
        }
        None => {
            let mut config = match &settings.partners_config {
                Some(path) => integrations::Config::load(path)?,
                None => {
                    let (addr, _) = integrations::simulator::serve(
                        "127.0.0.1:0".parse().expect("address"),
                        settings.simulator.clone(),
                        // Nobody changes the embedded simulator while it runs: no admin.
                        None,
                        crate::shutdown::stopped(shutdown_rx),
                    )
                    .await
                    .context("starting the bundled bureau simulator")?;
                    tracing::info!(addr = %addr, "Bundled bureau simulator listening.");
                    integrations::Config::embedded(&format!("http://{addr}"))
                }
            };
            if settings.redis_url.is_some() {
                // Permits, the retry queue and cached answers are shared with every instance:
                // queued requests belong to their analysis, not to this process. Whichever
                // instance's worker runs a job, the outcome reaches the run waiting for it
                // (in this process, or on Redis for another's collector).
                config.redis_url = settings.redis_url.clone();
                config.key_prefix = settings.key_prefix.clone();
                config.queue_key = settings.queue_key.clone();
            }
            let gateway = integrations::gateway::Gateway::build(config).await?;
            let worker = tokio::spawn(gateway.clone().run_worker(shutdown_rx.clone()));
            (Partners::InProcess(gateway), Some(worker))
        }
    };
    Ok((partners, worker))
}

/// The event log, the snapshots, the idempotency keys and the durable runs: on Redis when
/// `REDIS_URL` is set (runs only then), else in memory, with the task that drops finished
/// in-memory logs after their retention.
async fn open_event_log(
    settings: &Settings,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<(EventLog, Analyses, Idempotency, Option<Arc<Runs>>)> {
    let retention = Duration::from_secs(3600);
    let (events, analyses, idempotency, runs) = match &settings.redis_url {
        Some(url) => {
            let events = EventLog::redis(url, &settings.key_prefix, retention)
                .await
                .context("connecting the event log to Redis")?;
            let conn =
                redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
            let runs = Runs::new(
                conn.clone(),
                &settings.key_prefix,
                settings.queue_key.as_ref().context("QUEUE_KEY")?,
                Duration::from_millis(settings.run_lease_ms),
            )
            .map_err(|why| anyhow::anyhow!("QUEUE_KEY: {why}"))?;
            (
                events,
                Analyses::with_redis(conn.clone(), &settings.key_prefix),
                Idempotency::redis(conn, &settings.key_prefix),
                Some(Arc::new(runs)),
            )
        }
        None => (
            EventLog::memory(retention),
            Analyses::default(),
            Idempotency::memory(),
            None,
        ),
    };
    {
        // Finished analyses' logs, and this instance's copies of their snapshots, are dropped
        // after the retention.
        let events = events.clone();
        let snapshots = analyses.clone();
        let stop = crate::shutdown::stopped(shutdown_rx);
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {
                        events.expire();
                        snapshots.expire(retention);
                    }
                    _ = &mut stop => break,
                }
            }
        });
    }
    Ok((events, analyses, idempotency, runs))
}

/// Takes over, a few times a second, the runs whose owner stopped renewing their lease (a
/// quarter of the lease time apart, at most half a second), until the service stops.
fn watch_for_orphans(state: Arc<AppState>) {
    let Some(runs) = state.runs.clone() else {
        return;
    };
    let every = (runs.lease_time() / 4).min(Duration::from_millis(500));
    tokio::spawn(async move {
        let stop = state.shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => break,
            }
            // A handful at a time: an instance that has just died may leave many, and the
            // other instances share them out.
            match runs.claim(8).await {
                Ok(claimed) => {
                    for c in claimed {
                        let state = state.clone();
                        tokio::spawn(async move {
                            match c {
                                // Claimed as the service began stopping: straight back.
                                Claim::Resume(c) if *state.shutdown.borrow() => {
                                    c.lease.release().await
                                }
                                Claim::Resume(c) => crate::analyses::resume(state, *c).await,
                                Claim::Unreadable { id, lease } => {
                                    let why = "its record does not open";
                                    crate::analyses::fail_unresumable(&state, &id, lease, why).await
                                }
                            }
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Could not look for analyses to take over."),
            }
        }
    });
}
