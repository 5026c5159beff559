//! What the service offers besides the API itself: the OpenAPI description, metrics, and the
//! page at `/` with its files.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn the_api_is_described_as_openapi_3() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/analyses",
        "/v1/analyses/{id}",
        "/v1/analyses/{id}/events",
        "/v1/classifications",
        "/v1/classifications/stream",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    assert!(doc["paths"]["/v1/analyses"]["post"]["responses"]["422"].is_object());
    for schema in [
        "StartBody",
        "Snapshot",
        "Problem",
        "ClassifyItem",
        "Classified",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no {schema} schema"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    // The documented problem shape is the one the API sends.
    let r = app.start(ACME, json!({"cpf": "1"})).await;
    let problem: Value = r.json().await.unwrap();
    let documented: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in problem.as_object().unwrap().keys() {
        assert!(
            documented.contains(&key.as_str()),
            "{key} is not documented"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_analyses_and_partner_state() {
    let app = spawn_app().await;
    let started = app.started().await;
    app.events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let text = app.metrics().await;
    let value = |line_start: &str| metric(&text, line_start);
    assert!(value("core_api_analyses_total{state=\"completed\"}") >= 1.0);
    assert!(value("core_api_movements_classified_total") > 100.0);
    assert!(value("core_api_requests_total{class=\"2xx\"}") >= 2.0);
    assert_eq!(
        value("integrations_breaker_state{partner=\"movements-sim\"}"),
        0.0
    );
    assert!(value("integrations_partner_calls_total{partner=\"movements-sim\"}") >= 1.0);
    assert!(!text.contains("52998224725"), "no CPF in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_its_files_and_a_policy_that_keeps_it_to_this_origin() {
    let app = spawn_app().await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<form id=\"start\""),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "new EventSource",
        ),
        ("/app.css", "text/css; charset=utf-8", ".chip"),
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        let policy = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_trickles_its_request_head_or_sits_idle_is_closed() {
    let app = spawn_app_with(|s| s.header_read_timeout_secs = 1).await;
    let addr = app.url.trim_start_matches("http://");
    trickling_and_idle_connections_are_closed(addr).await;
}

/// The metric names (`core_api_*`, `integrations_*`) in a text: PromQL expressions in a
/// dashboard's JSON or an alert file's YAML.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = text;
    while let Some(start) = rest.find(['c', 'i']) {
        // Only at a word's start, so `xcore_api_` or a label value inside one is not taken.
        let before = &rest[..start];
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        let at_start = !before.ends_with(is_name);
        let ours = word.starts_with("core_api_") || word.starts_with("integrations_");
        // `core_api_*` in a comment is a family, not a name.
        if at_start && ours && !word.ends_with('_') {
            names.insert(word.to_string());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alert_rules_name_is_exported() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana/dashboards/credit-analysis.json"))
            .unwrap();
    let exprs: Vec<String> = serde_json::from_str::<Value>(&dashboard).unwrap()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let mut wanted = metric_names(&exprs.join("\n"));
    let from_dashboard = wanted.len();
    wanted.extend(metric_names(&alerts));
    assert!(from_dashboard >= 12, "{wanted:?}");
    assert!(
        wanted.contains("core_api_analyses_total") && wanted.contains("integrations_breaker_state")
    );
    // The embedded shape renders the core API's metrics and the gateway's (the same text
    // `integrations serve` exports); with a token set, only its bearer reads them.
    let app = spawn_app_with(|s| {
        s.metrics_token = Some(core_api::config::Secret::new("metrics-token-0123456789"));
    })
    .await;
    let metrics = format!("{}/metrics", app.url);
    assert_eq!(app.http.get(&metrics).send().await.unwrap().status(), 401);
    let wrong = app
        .http
        .get(&metrics)
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "an API key is not the metrics token");
    let text = app
        .http
        .get(&metrics)
        .bearer_auth("metrics-token-0123456789")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
}

#[test]
fn metric_names_are_found_at_word_starts_only() {
    let names = metric_names(
        r#"sum(rate(core_api_requests_total{class="5xx"}[5m])) / max(integrations_queue_dead) + xcore_api_no # core_api_*"#,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["core_api_requests_total", "integrations_queue_dead"]
    );
}
