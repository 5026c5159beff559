//! Keys, tenants and scopes: who may start and read an analysis, and what an events token
//! opens.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn keys_tenants_and_scopes_are_enforced() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(format!("{}/v1/analyses", app.url))
        .json(&json!({"cpf": "529.982.247-25"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // The scheme is case-insensitive, as HTTP says.
    let r = app
        .http
        .post(format!("{}/v1/analyses", app.url))
        .header("authorization", format!("BEARER {ACME}"))
        .json(&json!({"cpf": "529.982.247-25"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        app.start("not-a-key-0123456789", json!({"cpf": "529.982.247-25"}))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.start(READER, json!({"cpf": "529.982.247-25"}))
            .await
            .status(),
        403
    );

    let started = app.started().await;
    let path = started["analysis_url"].as_str().unwrap();
    assert_eq!(app.get(ACME, path).await.status(), 200);
    assert_eq!(
        app.get(READER, path).await.status(),
        200,
        "a read key of the same tenant reads"
    );
    assert_eq!(
        app.get(BETA, path).await.status(),
        404,
        "another tenant's analysis does not exist for them"
    );
    let events_with_key = app.get(BETA, &format!("{path}/events")).await;
    assert_eq!(events_with_key.status(), 404);

    // The events token opens only its own analysis.
    let other = app.started().await;
    let token = started["events_url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap();
    let r = app
        .http
        .get(format!(
            "{}{}/events?token={token}",
            app.url,
            other["analysis_url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
