//! One contract, every transaction store: the embedded SQLite store; an Elasticsearch-
//! compatible server (`osmem-server` from PyPI, an in-memory OpenSearch-compatible server,
//! NOT Elasticsearch: `test.sh` installs it in `.venv` and sets `OSMEM_SERVER_BIN`); and a
//! real Elasticsearch when `ELASTICSEARCH_TEST_URL` is set. Each store gets the same rows and
//! must answer every query as the reference filter below does.

#[path = "common/mod.rs"]
mod common;

use common::start_osmem;

use core_api::store::{
    words, AccessRecord, AuditQuery, AuditTrail, ElasticSettings, ElasticStore, LabelTotal,
    Position, SqliteStore, StoredTransaction, TransactionQuery, TransactionStore,
};

const LABELS: [&str; 4] = [
    "FOOD_AND_DRINK",
    "ENTERTAINMENT_CASINOS_AND_GAMBLING",
    "BANK_FEES",
    "INCOME",
];
const DESCRIPTIONS: [&str; 6] = [
    "PIX IFOOD PEDIDO 123",
    "Compra cartao iFood*Restaurante",
    "BET365 DEPOSITO OR SAQUE",
    "TARIFA PACOTE SERVICOS",
    "Padaria São João",
    "SALARIO EMPRESA X",
];

fn rows(analysis: &str, n: usize) -> Vec<StoredTransaction> {
    (0..n)
        .map(|i| StoredTransaction {
            analysis_id: analysis.into(),
            // Not in date order, so the store must sort.
            movement_id: format!("m{:04}", (i * 37) % n),
            tenant: "acme".into(),
            cpf_hash: "hash".into(),
            // Several movements a day: the movement id breaks ties.
            date: format!("2026-{:02}-{:02}", 8 + (i % 3), 1 + (i * 7) % 28),
            description: DESCRIPTIONS[i % DESCRIPTIONS.len()].into(),
            amount_cents: (i as i64 * 1_337) % 20_000 - 10_000,
            label: LABELS[i % LABELS.len()].into(),
            probability: 0.5 + (i % 50) as f32 / 100.0,
            confidence: "HIGH".into(),
        })
        .collect()
}

/// What every store must answer: the rows that pass every filter, by date then movement.
fn reference(all: &[StoredTransaction], q: &TransactionQuery) -> Vec<StoredTransaction> {
    let wanted = q.text.as_deref().map(words).unwrap_or_default();
    let mut out: Vec<StoredTransaction> = all
        .iter()
        .filter(|r| r.analysis_id == q.analysis_id)
        .filter(|r| q.label.as_ref().is_none_or(|l| &r.label == l))
        .filter(|r| q.from.as_ref().is_none_or(|d| &r.date >= d))
        .filter(|r| q.to.as_ref().is_none_or(|d| &r.date <= d))
        .filter(|r| q.min_cents.is_none_or(|v| r.amount_cents >= v))
        .filter(|r| q.max_cents.is_none_or(|v| r.amount_cents <= v))
        .filter(|r| {
            let have = words(&r.description);
            wanted.iter().all(|w| have.contains(w))
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| (&a.date, &a.movement_id).cmp(&(&b.date, &b.movement_id)));
    out
}

/// Every page of `q`, following the cursors.
async fn all_pages(store: &impl TransactionStore, q: &TransactionQuery) -> Vec<StoredTransaction> {
    let mut out = Vec::new();
    let mut q = q.clone();
    for _ in 0..1_000 {
        let page = store.query(q.clone()).await.expect("a query");
        assert!(page.transactions.len() <= q.limit);
        out.extend(page.transactions);
        match page.next {
            Some(p) => q.after = Some(Position::from_cursor(&p.cursor()).unwrap()),
            None => return out,
        }
    }
    panic!("more pages than rows");
}

async fn keeps_the_contract(store: impl TransactionStore + AuditTrail, run: &str) {
    keeps_the_query_contract(&store, run).await;
    keeps_the_erasure_contract(&store, run).await;
    keeps_the_audit_contract(&store, run).await;
}

/// An erasure takes every row of one analysis and nothing else; what the retention finds is
/// every analysis with old rows, once each, page by page.
async fn keeps_the_erasure_contract(store: &(impl TransactionStore + AuditTrail), run: &str) {
    let (gone, kept) = (format!("{run}-gone"), format!("{run}-kept"));
    store.put(rows(&gone, 30)).await.unwrap();
    store.put(rows(&kept, 20)).await.unwrap();
    store.searchable(&gone).await.unwrap();
    let future = chrono::Utc::now().timestamp_millis() + 60_000;
    let mut found = Vec::new();
    let mut after = None;
    for page_number in 0.. {
        assert!(
            page_number < 1000,
            "more pages than analyses: `after` is not honoured"
        );
        let (page, next) = store.expired(future, after, 1).await.unwrap();
        assert!(page.len() <= 1);
        found.extend(
            page.into_iter()
                .map(|e| (e.analysis_id, e.tenant, e.cpf_hash)),
        );
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    for id in [&gone, &kept] {
        assert_eq!(
            found.iter().filter(|(a, ..)| a == id).count(),
            1,
            "{id} once in {found:?}"
        );
    }
    assert!(found.iter().all(|(_, t, h)| t == "acme" && h == "hash"));
    let past = chrono::Utc::now().timestamp_millis() - 60_000;
    let (old, _) = store.expired(past, None, 100).await.unwrap();
    assert!(
        !old.iter().any(|e| e.analysis_id == gone),
        "nothing of it is old yet"
    );
    assert_eq!(store.erase(&gone).await.unwrap(), 30);
    assert_eq!(store.count(&gone).await.unwrap(), 0);
    assert_eq!(store.count(&kept).await.unwrap(), 20);
    assert_eq!(store.erase(&gone).await.unwrap(), 0);
}

/// The trail pages newest first, records of one millisecond included, filters hold together,
/// tenants see only theirs, and the retention removes the old records only.
async fn keeps_the_audit_contract(store: &(impl TransactionStore + AuditTrail), run: &str) {
    let tenant = format!("t-{run}");
    let base = 1_700_000_000_000i64;
    let mut all = Vec::new();
    for i in 0..25i64 {
        let mut r = AccessRecord::now(&tenant, "key1", "analysis.read").about(
            if i % 2 == 0 { "a1" } else { "a2" },
            if i % 3 == 0 { "h1" } else { "h2" },
        );
        // Ten records share one millisecond: the id breaks the tie.
        r.at_ms = if i < 10 { base } else { base + i * 1000 };
        store.record(r.clone()).await.unwrap();
        all.push(r);
    }
    let mut other = AccessRecord::now("someone-else", "key2", "analysis.read");
    other.at_ms = base;
    store.record(other).await.unwrap();
    all.sort_by(|a, b| (b.at_ms, &b.id).cmp(&(a.at_ms, &a.id)));
    let q = AuditQuery {
        tenant: Some(tenant.clone()),
        limit: 4,
        ..AuditQuery::default()
    };
    let mut paged = Vec::new();
    let mut before = None;
    for page_number in 0.. {
        assert!(
            page_number < 100,
            "more pages than records: `before` is not honoured"
        );
        let page = store
            .audit(AuditQuery {
                before: before.clone(),
                ..q.clone()
            })
            .await
            .unwrap();
        assert!(page.records.len() <= 4);
        paged.extend(page.records);
        match page.next {
            Some(p) => before = Some(p),
            None => break,
        }
    }
    assert_eq!(paged, all, "every record once, newest first");
    let only = |q: AuditQuery| async move {
        store
            .audit(AuditQuery { limit: 100, ..q })
            .await
            .unwrap()
            .records
    };
    let a1 = only(AuditQuery {
        analysis_id: Some("a1".into()),
        cpf_hash: Some("h1".into()),
        from_ms: Some(base + 1),
        ..q.clone()
    })
    .await;
    let expected: Vec<&AccessRecord> = all
        .iter()
        .filter(|r| {
            r.analysis_id.as_deref() == Some("a1")
                && r.cpf_hash.as_deref() == Some("h1")
                && r.at_ms > base
        })
        .collect();
    assert_eq!(a1.iter().collect::<Vec<_>>(), expected);
    let before_end = only(AuditQuery {
        to_ms: Some(base + 1),
        ..q.clone()
    })
    .await;
    assert_eq!(before_end.len(), 10);
    store.expire_audit(base + 15_000).await.unwrap();
    let left = only(q.clone()).await;
    assert_eq!(
        left.len(),
        10,
        "the ten records from the 15th second on stay"
    );
    assert!(left.iter().all(|r| r.at_ms >= base + 15_000));
}

async fn keeps_the_query_contract(store: &impl TransactionStore, run: &str) {
    let a1 = format!("an_{run}_1");
    let a2 = format!("an_{run}_2");
    let mut first = rows(&a1, 200);
    store.put(first.clone()).await.expect("a write");
    store.put(rows(&a2, 50)).await.expect("a write");
    // Writing the same movements again replaces them: relabelled, not duplicated.
    for r in first.iter_mut().take(30) {
        r.label = "BANK_FEES".into();
    }
    store.put(first[..30].to_vec()).await.expect("a rewrite");
    store.searchable(&a1).await.expect("searchable");
    store.searchable(&a2).await.expect("searchable");
    let mut all = first.clone();
    all.extend(rows(&a2, 50));

    assert_eq!(store.count(&a1).await.unwrap(), 200);
    assert_eq!(store.count(&a2).await.unwrap(), 50);
    assert_eq!(store.count("an_nobody").await.unwrap(), 0);

    let mut expected: Vec<LabelTotal> = Vec::new();
    for r in &first {
        match expected.iter_mut().find(|t| t.label == r.label) {
            Some(t) => {
                t.count += 1;
                t.total_cents += r.amount_cents;
            }
            None => expected.push(LabelTotal {
                label: r.label.clone(),
                count: 1,
                total_cents: r.amount_cents,
            }),
        }
    }
    expected.sort_by(|a, b| a.label.cmp(&b.label));
    assert_eq!(
        store.totals(&a1).await.unwrap(),
        expected,
        "totals per label"
    );

    let base = TransactionQuery {
        analysis_id: a1.clone(),
        limit: 7,
        ..Default::default()
    };
    let queries = [
        ("everything, 7 a page", base.clone()),
        (
            "one page of 1,000",
            TransactionQuery {
                limit: 1_000,
                ..base.clone()
            },
        ),
        (
            "a label",
            TransactionQuery {
                label: Some("BANK_FEES".into()),
                ..base.clone()
            },
        ),
        (
            "a date range",
            TransactionQuery {
                from: Some("2026-08-15".into()),
                to: Some("2026-09-10".into()),
                ..base.clone()
            },
        ),
        (
            "an amount range",
            TransactionQuery {
                min_cents: Some(-2_000),
                max_cents: Some(3_000),
                ..base.clone()
            },
        ),
        (
            "a word, any case",
            TransactionQuery {
                text: Some("ifood".into()),
                ..base.clone()
            },
        ),
        (
            "two words",
            TransactionQuery {
                text: Some("IFOOD pedido".into()),
                ..base.clone()
            },
        ),
        (
            "an accented word",
            TransactionQuery {
                text: Some("são".into()),
                ..base.clone()
            },
        ),
        (
            "query syntax is only words",
            TransactionQuery {
                text: Some("\"bet365\" OR *".into()),
                ..base.clone()
            },
        ),
        (
            "no words at all",
            TransactionQuery {
                text: Some("*:* {}".into()),
                ..base.clone()
            },
        ),
        (
            "a word nobody has",
            TransactionQuery {
                text: Some("ifoo".into()),
                ..base.clone()
            },
        ),
        (
            "everything at once",
            TransactionQuery {
                label: Some("FOOD_AND_DRINK".into()),
                from: Some("2026-08-01".into()),
                to: Some("2026-10-31".into()),
                min_cents: Some(-10_000),
                max_cents: Some(10_000),
                text: Some("ifood".into()),
                limit: 3,
                ..base.clone()
            },
        ),
        (
            "another analysis",
            TransactionQuery {
                analysis_id: a2.clone(),
                ..base.clone()
            },
        ),
    ];
    for (what, q) in queries {
        let got = all_pages(store, &q).await;
        let want = reference(&all, &q);
        assert!(
            q.text.as_deref() != Some("ifood") || !want.is_empty(),
            "the data must exercise the query"
        );
        assert_eq!(
            got.iter().map(|r| &r.movement_id).collect::<Vec<_>>(),
            want.iter().map(|r| &r.movement_id).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(got, want, "{what}: whole rows");
    }
    assert!(store.ready().await);
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[tokio::test]
async fn the_embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    keeps_the_contract(SqliteStore::open(dir.path()).unwrap(), &run_id()).await;
}

#[tokio::test]
async fn an_elasticsearch_compatible_server_keeps_the_contract() {
    let Some(server) = start_osmem() else { return };
    eprintln!(
        "Store contract against osmem-server at {}: an in-memory OpenSearch-compatible server, not Elasticsearch.",
        server.url
    );
    let run = run_id();
    let store = ElasticStore::connect(&ElasticSettings {
        index: format!("contract-{run}"),
        audit_index: format!("contract-audit-{run}"),
        ..ElasticSettings::new(&server.url)
    })
    .await
    .unwrap();
    keeps_the_contract(store, &run).await;
}

#[tokio::test]
async fn a_real_elasticsearch_keeps_the_contract_when_one_is_configured() {
    let Ok(url) = std::env::var("ELASTICSEARCH_TEST_URL") else {
        eprintln!(
            "SKIPPED: the real-Elasticsearch contract run (set ELASTICSEARCH_TEST_URL to run it)"
        );
        return;
    };
    let run = run_id();
    let store = ElasticStore::connect(&ElasticSettings {
        index: format!("contract-{run}"),
        audit_index: format!("contract-audit-{run}"),
        username: std::env::var("ELASTICSEARCH_TEST_USER").ok(),
        password: std::env::var("ELASTICSEARCH_TEST_PASSWORD")
            .ok()
            .map(core_api::config::Secret::new),
        ..ElasticSettings::new(&url)
    })
    .await
    .unwrap();
    keeps_the_contract(store, &run).await;
}
