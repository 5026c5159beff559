//! An analysis's stored transactions and categories, read back page by page.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_s_transactions_and_categories_can_be_read_back_by_its_tenant_only() {
    let app = spawn_app().await;
    let started = app.started().await;
    let id = started["id"].as_str().unwrap();
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let stored = events
        .iter()
        .rev()
        .find(|e| e.1 == "transactions.stored")
        .map(|e| e.2["stored"].as_u64().unwrap())
        .unwrap();
    // Every page, by cursor: each movement once, by date.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                ACME,
                &format!("/v1/analyses/{id}/transactions?limit=250{cursor}"),
            )
            .await;
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        seen.extend(page["transactions"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, stored);
    let dates: Vec<&str> = seen.iter().map(|t| t["date"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "sorted by date");
    // Categories add up to the same rows; a label filter gives that label's count.
    let cats = app
        .get_json(ACME, &format!("/v1/analyses/{id}/categories"))
        .await;
    let cats = cats["categories"].as_array().unwrap();
    assert_eq!(
        cats.iter()
            .map(|c| c["count"].as_u64().unwrap())
            .sum::<u64>(),
        stored
    );
    let first = &cats[0];
    let label = first["label"].as_str().unwrap();
    let only = app
        .get_json(
            ACME,
            &format!("/v1/analyses/{id}/transactions?label={label}&limit=1000"),
        )
        .await;
    assert_eq!(
        only["transactions"].as_array().unwrap().len() as u64,
        first["count"].as_u64().unwrap()
    );
    // Another tenant: 404, on both.
    for path in ["transactions", "categories"] {
        let r = app.get(BETA, &format!("/v1/analyses/{id}/{path}")).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    // A bad parameter is named.
    let r = app
        .get(ACME, &format!("/v1/analyses/{id}/transactions?limit=0"))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "limit");
}
