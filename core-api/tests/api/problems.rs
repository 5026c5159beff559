//! Bad input of every kind is answered with an `application/problem+json` naming it.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn every_bad_input_gets_a_problem_naming_it() {
    let app = spawn_app().await;
    let expect = |r: reqwest::Response, status: u16, field: Option<&'static str>| async move {
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], status);
        if let Some(f) = field {
            assert_eq!(p["field"], f, "{p}");
        }
        assert!(
            !p.to_string().contains("529982247"),
            "the CPF is not echoed"
        );
    };
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-24"})).await,
        422,
        Some("cpf"),
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "1234"})).await,
        422,
        Some("cpf"),
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-25", "from": "01/08/2026"}))
            .await,
        422,
        Some("from"),
    )
    .await;
    expect(
        app.start(
            ACME,
            json!({"cpf": "529.982.247-25", "from": "2026-10-01", "to": "2026-09-01"}),
        )
        .await,
        422,
        Some("from"),
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-25", "to": "2999-01-01"}))
            .await,
        422,
        Some("to"),
    )
    .await;
    // chrono's first day: the default window's start once overflowed and dropped the
    // connection; implausible years are now refused by name.
    for (field, date) in [("to", "-262143-01-01"), ("from", "1969-12-31")] {
        expect(
            app.start(ACME, json!({"cpf": "529.982.247-25", field: date}))
                .await,
            422,
            Some(field),
        )
        .await;
    }
    // A CPF sent as a number: refused, and not repeated in the reason (serde's own quotes
    // the value).
    expect(
        app.start(ACME, json!({"cpf": 52998224725u64})).await,
        422,
        None,
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-25", "surprise": true}))
            .await,
        422,
        None,
    )
    .await;
    let post = |body: &'static str, ct: &'static str| {
        app.http
            .post(format!("{}/v1/analyses", app.url))
            .bearer_auth(ACME)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    expect(
        post("{\"cpf\": ", "application/json").await.unwrap(),
        400,
        None,
    )
    .await;
    expect(
        post("cpf=1", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
        None,
    )
    .await;
    let huge = app
        .http
        .post(format!("{}/v1/analyses", app.url))
        .bearer_auth(ACME)
        .header("content-type", "application/json")
        .body(vec![b' '; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    expect(huge, 413, None).await;
    let unknown = app
        .http
        .get(format!("{}/v1/analyses/an_nope", app.url))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    expect(unknown, 404, None).await;
    let started = app.started().await;
    let bad_last = app
        .http
        .get(format!(
            "{}{}",
            app.url,
            started["events_url"].as_str().unwrap()
        ))
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    expect(bad_last, 400, None).await;
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": i.to_string(), "description": "X", "amount": -1.0}))
        .collect();
    let r = app
        .http
        .post(format!("{}/v1/classifications", app.url))
        .bearer_auth(ACME)
        .json(&json!({"transactions": too_many}))
        .send()
        .await
        .unwrap();
    expect(r, 413, None).await;
}
