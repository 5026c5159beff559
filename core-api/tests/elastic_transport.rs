//! The Elasticsearch store's transport behaviour against a scripted HTTP server (wiremock):
//! partial bulk failures, 429 then success, a timeout. A scripted server, not Elasticsearch,
//! because these answers cannot be provoked on demand from a real cluster; the store's
//! queries are checked against real servers in `store_contract.rs`.

use std::time::Duration;

use core_api::store::{
    ElasticSettings, ElasticStore, StoreError, StoredTransaction, TransactionStore,
};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const INDEX: &str = "tx";

fn row(movement: &str) -> StoredTransaction {
    StoredTransaction {
        analysis_id: "an_1".into(),
        movement_id: movement.into(),
        tenant: "acme".into(),
        cpf_hash: "h".into(),
        date: "2026-10-01".into(),
        description: "X".into(),
        amount_cents: -100,
        label: "BANK_FEES".into(),
        probability: 0.9,
        confidence: "HIGH".into(),
    }
}

/// A server that already has the template and index (whose mapping takes `stored_at`), and a
/// store on it.
async fn store_on(server: &MockServer, timeout: Duration) -> ElasticStore {
    Mock::given(method("HEAD"))
        .and(path(format!("/_index_template/{INDEX}-template")))
        .respond_with(ResponseTemplate::new(200))
        .mount(server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/{INDEX}")))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"type": "resource_already_exists_exception"}, "status": 400}),
        ))
        .mount(server)
        .await;
    // The mapping is brought up to date (`stored_at`) once the index is there.
    Mock::given(method("PUT"))
        .and(path(format!("/{INDEX}/_mapping")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(server)
        .await;
    ElasticStore::connect(&ElasticSettings {
        index: INDEX.into(),
        timeout,
        ..ElasticSettings::new(&server.uri())
    })
    .await
    .unwrap()
}

fn item(status: u16, error: Option<&str>) -> Value {
    let mut i = json!({"_index": INDEX, "status": status});
    if let Some(e) = error {
        i["error"] = json!({"type": e, "reason": "document 'SECRET' could not be parsed"});
    }
    json!({ "index": i })
}

/// Bulk requests get `first` for their first `times`, then `then` for good.
async fn bulk_answers(
    server: &MockServer,
    first: ResponseTemplate,
    times: u64,
    then: ResponseTemplate,
) {
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_bulk")))
        .respond_with(first)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_bulk")))
        .respond_with(then)
        .with_priority(2)
        .mount(server)
        .await;
}

/// The ids of the documents in each bulk request the server received.
async fn bulk_ids(server: &MockServer) -> Vec<Vec<String>> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/_bulk"))
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["index"]["_id"].as_str().map(String::from))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_bulk_answer_with_partial_failures_retries_the_retriable_and_reports_the_rest() {
    let server = MockServer::start().await;
    let store = store_on(&server, Duration::from_secs(5)).await;
    // HTTP 200, errors: true: m1 written, m2 refused for now (429), m3 refused for good.
    bulk_answers(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "errors": true,
            "items": [item(201, None), item(429, Some("es_rejected_execution_exception")), item(400, Some("mapper_parsing_exception"))]
        })),
        1,
        ResponseTemplate::new(200)
            .set_body_json(json!({"errors": false, "items": [item(201, None)]})),
    )
    .await;
    let err = store
        .put(vec![row("m1"), row("m2"), row("m3")])
        .await
        .expect_err("a refused row is an error, never dropped silently");
    match &err {
        StoreError::Refused {
            refused,
            total,
            first,
        } => {
            assert_eq!((*refused, *total), (1, 3));
            assert_eq!(first, "mapper_parsing_exception");
        }
        other => panic!("expected Refused, got {other}"),
    }
    assert!(
        !err.to_string().contains("SECRET"),
        "the reason text (which can quote the document) is not repeated"
    );
    assert_eq!(
        bulk_ids(&server).await,
        [vec!["an_1:m1", "an_1:m2", "an_1:m3"], vec!["an_1:m2"]],
        "only the row refused for now is sent again"
    );
}

#[tokio::test]
async fn a_429_is_retried_until_the_bulk_succeeds() {
    let server = MockServer::start().await;
    let store = store_on(&server, Duration::from_secs(5)).await;
    bulk_answers(
        &server,
        ResponseTemplate::new(429).set_body_json(json!({"error": "too many requests"})),
        2,
        ResponseTemplate::new(200)
            .set_body_json(json!({"errors": false, "items": [item(201, None), item(200, None)]})),
    )
    .await;
    store
        .put(vec![row("m1"), row("m2")])
        .await
        .expect("written after the 429s");
    assert_eq!(bulk_ids(&server).await.len(), 3);
}

#[tokio::test]
async fn a_bulk_that_times_out_is_sent_again_and_one_that_always_fails_is_an_error() {
    let server = MockServer::start().await;
    let store = store_on(&server, Duration::from_millis(300)).await;
    let written = ResponseTemplate::new(200)
        .set_body_json(json!({"errors": false, "items": [item(201, None)]}));
    bulk_answers(
        &server,
        written.clone().set_delay(Duration::from_secs(2)),
        1,
        written,
    )
    .await;
    store
        .put(vec![row("m1")])
        .await
        .expect("written on the second attempt");
    assert_eq!(
        bulk_ids(&server).await.len(),
        2,
        "same id both times: idempotent"
    );

    let down = MockServer::start().await;
    let store = store_on(&down, Duration::from_secs(5)).await;
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_bulk")))
        .respond_with(ResponseTemplate::new(503))
        .mount(&down)
        .await;
    assert!(store.put(vec![row("m1")]).await.is_err());
    assert_eq!(
        bulk_ids(&down).await.len(),
        6,
        "six attempts, then the error"
    );
}
