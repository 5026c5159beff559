//! The bundled simulator's people: one CPF per profile (the README lists them), each run
//! through a whole analysis (the real classifier labels the movements), and each summary shows
//! the signals such a person should raise.

use serde_json::{json, Value};

use crate::helpers::*;

/// The completed summary and snapshot of an analysis of `cpf` over the last 90 days.
async fn analyse(app: &TestApp, cpf: &str) -> Value {
    let r = app.start(ACME, json!({"cpf": cpf})).await;
    assert_eq!(r.status(), 202);
    let started: Value = r.json().await.unwrap();
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    assert_eq!(events.last().unwrap().1, "analysis.completed", "{cpf}");
    app.get_json(ACME, started["analysis_url"].as_str().unwrap())
        .await
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_simulated_profile_s_summary_shows_its_risk_signals() {
    let app = spawn_app().await;
    let salaried = analyse(&app, "529.982.247-25").await;
    let s = &salaried["summary"];
    let out_over_in = f(&s["total_out"]) / f(&s["total_in"]);
    assert!(
        (0.7..1.3).contains(&out_over_in),
        "salaried out/in {out_over_in}: {s}"
    );
    assert!(f(&s["risk"]["gambling_share_of_spend"]) < 0.05, "{s}");
    let declared = f(&s["risk"]["declared_monthly_income"]);
    let observed = f(&s["risk"]["observed_to_declared_income"]);
    assert!(
        (0.6..1.2).contains(&observed),
        "salaried income {observed} of {declared}"
    );

    let gambler = analyse(&app, "100.000.004-42").await;
    let g = &gambler["summary"]["risk"];
    assert!(f(&g["gambling_share_of_spend"]) > 0.15, "gambler: {g}");

    let indebted = analyse(&app, "100.000.030-34").await;
    let d = &indebted["summary"]["risk"];
    assert!(
        f(&d["open_debts_total"]) > 3.0 * f(&d["declared_monthly_income"]),
        "over-indebted: {d}"
    );
    assert!(f(&d["overdue_debts"]) >= 3.0, "{d}");
    assert!(
        f(&d["loan_payments_total"]) + f(&d["bank_fees_total"]) > 0.0,
        "{d}"
    );

    let informal = analyse(&app, "100.000.000-19").await;
    let i = &informal["summary"]["risk"];
    assert!(f(&i["observed_to_declared_income"]) < 0.6, "informal: {i}");

    let retired = analyse(&app, "100.000.021-43").await;
    let r = &retired["summary"];
    assert!(
        (0.6..1.4).contains(&f(&r["risk"]["observed_to_declared_income"])),
        "retired: {r}"
    );

    let thin = analyse(&app, "100.000.001-08").await;
    assert_eq!(thin["summary"]["risk"]["open_debts"], 0);
    assert!(
        f(&thin["summary"]["transactions"]) < f(&salaried["summary"]["transactions"]),
        "a thin file has fewer movements"
    );

    let nobody = analyse(&app, "100.000.007-95").await;
    for kind in ["consumer", "rating", "movements"] {
        assert_eq!(nobody["partners"][kind]["state"], "not_found", "{nobody}");
    }
}
