//! A partner called through breaker, limiter and semaphore, against the bundled simulator
//! over real HTTP (the real bureaus cannot be reached here; the simulator follows their
//! contract). Each test starts its own simulator on a free port.

use std::net::SocketAddr;
use std::time::Duration;

use integrations::config::{BreakerConfig, PartnerConfig, RetryConfig};
use integrations::partner::{Attempt, BreakerState, DeferReason, Partner, RequestParams};
use integrations::semaphore::{LocalSemaphore, PermitStore, Semaphore};
use integrations::simulator::{self, SimulatorSettings, SimulatorStats};
use integrations::{Cpf, Kind};

/// The admin token the tests' simulators are started with.
const SIM_ADMIN: &str = "sim-admin-token-0123";

struct Sim {
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Sim {
    async fn start(settings: SimulatorSettings) -> Sim {
        let (addr, _handle) = simulator::serve(
            "127.0.0.1:0".parse().unwrap(),
            settings,
            Some(SIM_ADMIN),
            std::future::pending(),
        )
        .await
        .unwrap();
        Sim {
            addr,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn set(&self, patch: serde_json::Value) {
        let r = self
            .http
            .put(format!("{}/admin/settings", self.url()))
            .bearer_auth(SIM_ADMIN)
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn stats(&self) -> SimulatorStats {
        self.http
            .get(format!("{}/stats", self.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn partner(sim: &Sim, kind: Kind, breaker: BreakerConfig, timeout_ms: u64) -> Partner {
    let config = PartnerConfig {
        name: "sim".into(),
        kind,
        base_url: sim.url(),
        token_env: None,
        max_concurrency: 4,
        rate_per_sec: 1000,
        timeout_ms,
        breaker,
        retry: RetryConfig::default(),
        cache_ttl_secs: None,
        token: None,
    };
    Partner::new(
        config,
        reqwest::Client::new(),
        Semaphore::Local(LocalSemaphore::new()),
        Duration::from_secs(10),
    )
}

fn cpf() -> Cpf {
    integrations::simulator::data::person_with_record(123_456_789)
}

fn quiet() -> SimulatorSettings {
    SimulatorSettings {
        latency_ms: 1,
        latency_jitter_ms: 0,
        ..SimulatorSettings::default()
    }
}

#[tokio::test]
async fn the_simulators_admin_routes_need_its_admin_token_and_are_off_without_one() {
    let sim = Sim::start(SimulatorSettings {
        token: Some("bureau-token".into()),
        ..SimulatorSettings::default()
    })
    .await;
    let http = reqwest::Client::new();
    let admin = [
        ("PUT", "/admin/settings"),
        ("GET", "/admin/settings"),
        ("POST", "/stats/reset"),
    ];
    let send = |method: &str, path: &str, token: Option<&str>, base: String| {
        let mut req = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .json(&serde_json::json!({"error_rate": 1.0}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    for (method, path) in admin {
        for token in [None, Some("guess"), Some("bureau-token")] {
            let r = send(method, path, token, sim.url()).await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
            let body = r.text().await.unwrap();
            assert!(!body.contains("bureau-token"), "{body}");
        }
    }
    // Nothing changed; with the admin token, the settings are read and changed.
    let r = send("GET", "/admin/settings", Some(SIM_ADMIN), sim.url())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<SimulatorSettings>().await.unwrap().error_rate, 0.0);
    sim.set(serde_json::json!({"error_rate": 0.5})).await;

    // Started without an admin token (as `cargo run` embeds it), the routes are off.
    let (off, _handle) = simulator::serve(
        "127.0.0.1:0".parse().unwrap(),
        SimulatorSettings::default(),
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    for (method, path) in admin {
        let r = send(method, path, Some(SIM_ADMIN), format!("http://{off}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
    }
}

#[tokio::test]
async fn each_kind_answers_data_by_the_contract() {
    let sim = Sim::start(quiet()).await;
    for kind in Kind::ALL {
        let p = partner(&sim, kind, BreakerConfig::default(), 2000);
        let params = RequestParams {
            limit: Some(50),
            ..Default::default()
        };
        match p.attempt(&cpf(), &params).await {
            Attempt::Done(data) => {
                let json = serde_json::to_value(&data).unwrap();
                assert_eq!(json["cpf"], cpf().digits());
                if kind == Kind::Movements {
                    assert_eq!(json["movimentacaoFinanceira"].as_array().unwrap().len(), 50);
                    assert!(json["proximoCursor"].is_string());
                }
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_partner_rejects_fast_probes_one_at_a_time_and_closes_on_recovery(
) {
    let sim = Sim::start(quiet()).await;
    let p = partner(
        &sim,
        Kind::Consumer,
        BreakerConfig {
            failure_threshold: 3,
            open_ms: 400,
        },
        2000,
    );
    sim.set(serde_json::json!({"error_rate": 1.0})).await;
    for _ in 0..3 {
        assert!(matches!(
            p.attempt(&cpf(), &RequestParams::default()).await,
            Attempt::Failed { .. }
        ));
    }
    assert_eq!(p.breaker().state(), BreakerState::Open);

    // Open: calls are turned away without reaching the partner.
    let before = sim.stats().await.requests;
    for _ in 0..20 {
        match p.attempt(&cpf(), &RequestParams::default()).await {
            Attempt::Defer {
                reason: DeferReason::CircuitOpen,
                retry_in,
            } => assert!(retry_in <= Duration::from_millis(400)),
            other => panic!("expected a fast rejection, got {other:?}"),
        }
    }
    assert_eq!(
        sim.stats().await.requests,
        before,
        "an open circuit sends nothing"
    );

    // Half-open with a slow partner: of 10 concurrent callers, exactly one probes.
    sim.set(serde_json::json!({"error_rate": 0.0, "latency_ms": 300}))
        .await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let before = sim.stats().await.requests;
    let mut calls = Vec::new();
    for _ in 0..10 {
        let p = p.clone();
        calls.push(tokio::spawn(async move {
            p.attempt(&cpf(), &RequestParams::default()).await
        }));
    }
    let mut done = 0;
    for c in calls {
        match c.await.unwrap() {
            Attempt::Done(_) => done += 1,
            Attempt::Defer {
                reason: DeferReason::CircuitOpen,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(done, 1, "one probe went through");
    assert_eq!(
        sim.stats().await.requests - before,
        1,
        "the partner saw one request"
    );
    assert_eq!(
        p.breaker().state(),
        BreakerState::Closed,
        "the probe's success closed the circuit"
    );
    assert!(matches!(
        p.attempt(&cpf(), &RequestParams::default()).await,
        Attempt::Done(_)
    ));
}

#[tokio::test]
async fn a_429_defers_for_its_retry_after_without_tripping_the_breaker() {
    let sim = Sim::start(quiet()).await;
    let p = partner(
        &sim,
        Kind::Rating,
        BreakerConfig {
            failure_threshold: 1,
            open_ms: 60_000,
        },
        2000,
    );
    sim.set(serde_json::json!({"rate_limit_rate": 1.0, "retry_after_s": 2}))
        .await;
    match p.attempt(&cpf(), &RequestParams::default()).await {
        Attempt::Defer {
            reason: DeferReason::PartnerBusy,
            retry_in,
        } => assert_eq!(retry_in, Duration::from_secs(2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.breaker().state(), BreakerState::Closed);
    // Within the Retry-After window nothing is sent.
    sim.set(serde_json::json!({"rate_limit_rate": 0.0})).await;
    let before = sim.stats().await.requests;
    match p.attempt(&cpf(), &RequestParams::default()).await {
        Attempt::Defer {
            reason: DeferReason::PartnerBusy,
            retry_in,
        } => assert!(retry_in <= Duration::from_secs(2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.stats().await.requests, before);
}

#[tokio::test]
async fn a_404_is_final_and_healthy() {
    let sim = Sim::start(SimulatorSettings {
        missing_rate: 1.0,
        ..quiet()
    })
    .await;
    let p = partner(
        &sim,
        Kind::Consumer,
        BreakerConfig {
            failure_threshold: 1,
            open_ms: 60_000,
        },
        2000,
    );
    assert_eq!(
        p.attempt(&cpf(), &RequestParams::default()).await,
        Attempt::NotFound
    );
    assert_eq!(p.breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_partner_that_hangs_times_out_and_counts_as_a_failure() {
    let sim = Sim::start(SimulatorSettings {
        timeout_rate: 1.0,
        hang_ms: 5_000,
        ..quiet()
    })
    .await;
    let p = partner(
        &sim,
        Kind::Consumer,
        BreakerConfig {
            failure_threshold: 1,
            open_ms: 60_000,
        },
        200,
    );
    match p.attempt(&cpf(), &RequestParams::default()).await {
        Attempt::Failed { error } => assert!(error.contains("in time"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.breaker().state(), BreakerState::Open);
}

#[tokio::test]
async fn wrong_credentials_are_refused_finally_and_the_token_is_sent_as_bearer() {
    let sim = Sim::start(SimulatorSettings {
        token: Some("right".into()),
        ..quiet()
    })
    .await;
    let mut p = partner(
        &sim,
        Kind::Consumer,
        BreakerConfig {
            failure_threshold: 1,
            open_ms: 60_000,
        },
        2000,
    );
    assert_eq!(
        p.attempt(&cpf(), &RequestParams::default()).await,
        Attempt::Refused { status: 401 }
    );
    assert_eq!(
        p.breaker().state(),
        BreakerState::Closed,
        "our mistake is not the partner's failure"
    );
    let mut config = p.config().clone();
    config.token = Some(integrations::Secret::new("right"));
    p = Partner::new(
        config,
        reqwest::Client::new(),
        Semaphore::Local(LocalSemaphore::new()),
        Duration::from_secs(10),
    );
    assert!(matches!(
        p.attempt(&cpf(), &RequestParams::default()).await,
        Attempt::Done(_)
    ));
}

/// A consumer partner on `sim` that allows one call at a time, its permit in `semaphore`.
fn one_permit_partner(sim: &Sim, semaphore: &Semaphore, timeout_ms: u64) -> Partner {
    Partner::new(
        PartnerConfig {
            max_concurrency: 1,
            ..partner(sim, Kind::Consumer, BreakerConfig::default(), timeout_ms)
                .config()
                .clone()
        },
        reqwest::Client::new(),
        semaphore.clone(),
        Duration::from_secs(10),
    )
}

#[tokio::test]
async fn when_every_permit_is_held_the_request_is_deferred_not_blocked() {
    let sim = Sim::start(quiet()).await;
    let semaphore = Semaphore::Local(LocalSemaphore::new());
    let p = one_permit_partner(&sim, &semaphore, 2000);
    let held =
        integrations::semaphore::Permit::try_acquire(&semaphore, "sim", 1, Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
    match p.attempt(&cpf(), &RequestParams::default()).await {
        Attempt::Defer {
            reason: DeferReason::NoPermit,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    held.release().await.unwrap();
    assert!(matches!(
        p.attempt(&cpf(), &RequestParams::default()).await,
        Attempt::Done(_)
    ));
}

#[tokio::test]
async fn a_stopped_attempt_abandons_its_wait_or_call_and_gives_its_permit_back_before_it_returns() {
    let sim = Sim::start(SimulatorSettings {
        latency_ms: 3000,
        latency_jitter_ms: 0,
        ..SimulatorSettings::default()
    })
    .await;
    let semaphore = Semaphore::Local(LocalSemaphore::new());
    let p = one_permit_partner(&sim, &semaphore, 10_000);
    let stop_soon = || {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tx.send(true);
        });
        rx
    };
    let params = RequestParams::default();

    // Stopped mid-call. On this single-threaded runtime nothing else runs between the return
    // and the count, so a permit given back in the background would still be counted: a
    // process that exits right after must not leave it held in Redis until its lease ends.
    let started = tokio::time::Instant::now();
    let stop = stop_soon();
    assert_eq!(
        p.attempt_until(&cpf(), &params, Duration::from_secs(5), &stop)
            .await,
        None
    );
    assert_eq!(
        semaphore.in_use("sim").await.unwrap(),
        0,
        "the permit was given back before the attempt returned"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the call was abandoned"
    );
    assert_eq!(p.breaker().state(), BreakerState::Closed);

    // Stopped while waiting for a permit someone else holds.
    let held =
        integrations::semaphore::Permit::try_acquire(&semaphore, "sim", 1, Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
    let started = tokio::time::Instant::now();
    let stop = stop_soon();
    assert_eq!(
        p.attempt_until(&cpf(), &params, Duration::from_secs(5), &stop)
            .await,
        None
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the wait was abandoned"
    );
    assert_eq!(semaphore.in_use("sim").await.unwrap(), 1);
    held.release().await.unwrap();

    // Already stopped: nothing is tried.
    let (_tx, stop) = tokio::sync::watch::channel(true);
    let calls = sim.stats().await;
    assert_eq!(
        p.attempt_until(&cpf(), &params, Duration::ZERO, &stop)
            .await,
        None
    );
    assert_eq!(sim.stats().await.requests, calls.requests);
}
