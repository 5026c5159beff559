//! An analysis, step by step: ask each partner kind for its data through the integrations
//! gateway, classify movement pages as they arrive, store them, compute the summary. Every
//! step appends an event to the analysis's log, which the SSE endpoint streams.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use classifier::features::MovementInput;
use classifier::model::Workspace;
use hmac::{Hmac, Mac};
use integrations::contract::{ConsumerRecord, MovementsPage, RatingRecord};
use integrations::gateway::{PartnerRequest, Submitted};
use integrations::partner::RequestParams;
use integrations::queue::Outcome;
use integrations::{Cpf, Kind};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::state::AppState;
use crate::store::{StoredTransaction, TransactionStore};

/// Where an analysis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    Failed,
}

/// Where one partner kind is within an analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartnerState {
    pub partner: String,
    /// `requested`, `queued`, `completed`, `not_found`, `failed`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `GET /v1/analyses/{id}` shows.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub id: String,
    #[serde(skip, default)]
    pub tenant: String,
    pub status: Status,
    pub cpf: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub created_at: String,
    pub partners: BTreeMap<String, PartnerState>,
    pub classified: u64,
    pub stored: u64,
    /// Income, spend by category, net flow and risk signals, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The SSE stream with a fresh 15-minute token, so a client whose `events_url` expired
    /// can follow again; filled when a snapshot is read, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_url: Option<String>,
}

/// The analyses' snapshots: in memory, and written through to Redis (`{prefix}:an:{id}`)
/// when it is configured, so any instance can answer for any analysis. Only the instance
/// running an analysis writes its snapshot.
#[derive(Clone, Default)]
pub struct Analyses {
    local: Arc<Mutex<HashMap<String, Snapshot>>>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

/// How a snapshot is kept in Redis: with its tenant, which the API never shows.
#[derive(Serialize, Deserialize)]
struct Stored {
    tenant: String,
    snapshot: Snapshot,
}

/// Snapshots stay in Redis this long.
const SNAPSHOT_TTL_SECS: u64 = 24 * 3600;

impl Analyses {
    pub fn with_redis(conn: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Analyses {
            local: Arc::default(),
            redis: Some((conn, prefix.to_string())),
        }
    }

    async fn write_through(&self, s: &Snapshot) {
        if let Some((conn, prefix)) = &self.redis {
            let stored = Stored {
                tenant: s.tenant.clone(),
                snapshot: s.clone(),
            };
            let json = serde_json::to_string(&stored).expect("snapshots serialise");
            let mut conn = conn.clone();
            let r: Result<(), _> = redis::AsyncCommands::set_ex(
                &mut conn,
                format!("{prefix}:an:{}", s.id),
                json,
                SNAPSHOT_TTL_SECS,
            )
            .await;
            if let Err(e) = r {
                tracing::warn!(analysis = %s.id, error = %e, "Snapshot not written to Redis.");
            }
        }
    }

    pub async fn insert(&self, s: Snapshot) {
        self.local
            .lock()
            .expect("analyses lock")
            .insert(s.id.clone(), s.clone());
        self.write_through(&s).await;
    }

    /// An analysis, from this instance or (when configured) Redis, whoever owns it.
    async fn find(&self, id: &str) -> Option<Snapshot> {
        let local = self.local.lock().expect("analyses lock").get(id).cloned();
        match (local, &self.redis) {
            (Some(s), _) => Some(s),
            (None, Some((conn, prefix))) => {
                let mut conn = conn.clone();
                let raw: Option<String> =
                    redis::AsyncCommands::get(&mut conn, format!("{prefix}:an:{id}"))
                        .await
                        .ok()
                        .flatten();
                raw.and_then(|r| serde_json::from_str::<Stored>(&r).ok())
                    .map(|st| Snapshot {
                        tenant: st.tenant,
                        ..st.snapshot
                    })
            }
            (None, None) => None,
        }
    }

    /// The analysis if `tenant` owns it: another tenant's analysis does not exist for them.
    pub async fn get(&self, id: &str, tenant: &str) -> Option<Snapshot> {
        self.find(id).await.filter(|s| s.tenant == tenant)
    }

    /// The status of an analysis, whoever owns it (for ending streams).
    pub async fn get_status(&self, id: &str) -> Option<Status> {
        self.find(id).await.map(|s| s.status)
    }

    async fn update(&self, id: &str, f: impl FnOnce(&mut Snapshot)) {
        let updated = {
            let mut local = self.local.lock().expect("analyses lock");
            local.get_mut(id).map(|s| {
                f(s);
                s.clone()
            })
        };
        if let Some(s) = updated {
            self.write_through(&s).await;
        }
    }
}

/// One classified movement, as the run keeps it for the summary.
struct Classified {
    amount_cents: i64,
    label: classifier::Label,
}

/// Emits an event and logs a failure to do so (a full log ends the analysis anyway).
async fn emit(state: &AppState, id: &str, kind: &str, data: serde_json::Value) {
    if let Err(e) = state.events.append(id, kind, data).await {
        tracing::warn!(analysis = id, kind, error = %e, "Event not recorded.");
    }
}

/// The analysis's reason when the store fails (the cause goes to the log, not the client).
fn store_failed(id: &str) -> impl Fn(crate::store::StoreError) -> String + '_ {
    move |e| {
        tracing::error!(analysis = id, error = %e, "Storing transactions failed.");
        "the transaction store failed".to_string()
    }
}

/// Runs an analysis to its end (completed, failed or deadline).
pub async fn run(
    state: Arc<AppState>,
    id: String,
    tenant: String,
    cpf: Cpf,
    from: NaiveDate,
    to: NaiveDate,
) {
    let deadline = Duration::from_secs(state.settings.analysis_deadline_secs);
    let work = run_steps(state.clone(), id.clone(), tenant, cpf, from, to);
    let result = tokio::select! {
        r = tokio::time::timeout(deadline, work) => r.unwrap_or_else(|_| Err(format!("the analysis took longer than its {} s deadline", deadline.as_secs()))),
        _ = state.shutdown_signal() => Err("the service is shutting down".to_string()),
    };
    let ended = if result.is_ok() {
        &crate::metrics::ANALYSES_COMPLETED
    } else {
        &crate::metrics::ANALYSES_FAILED
    };
    ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match result {
        Ok(summary) => {
            state
                .analyses
                .update(&id, |s| {
                    s.status = Status::Completed;
                    s.summary = Some(summary.clone());
                })
                .await;
            emit(
                &state,
                &id,
                "analysis.completed",
                serde_json::json!({ "id": id, "summary": summary }),
            )
            .await;
        }
        Err(reason) => {
            tracing::warn!(analysis = %id, reason = %reason, "Analysis failed.");
            state
                .analyses
                .update(&id, |s| {
                    s.status = Status::Failed;
                    s.error = Some(reason.clone());
                })
                .await;
            emit(
                &state,
                &id,
                "analysis.failed",
                serde_json::json!({ "id": id, "reason": reason }),
            )
            .await;
        }
    }
}

/// What a partner kind came to.
enum PartnerResult {
    Data(serde_json::Value),
    Missing(String),
}

async fn ask(
    state: &AppState,
    id: &str,
    kind: Kind,
    cpf: &Cpf,
    params: RequestParams,
) -> Result<PartnerResult, String> {
    let Some(partner) = state.partner_for(kind) else {
        return Ok(PartnerResult::Missing(format!(
            "no {kind} partner is configured"
        )));
    };
    let page = params.cursor.clone();
    if page.is_none() {
        set_partner(state, id, kind, &partner, "requested", None).await;
        emit(
            state,
            id,
            "partner.started",
            serde_json::json!({ "kind": kind, "partner": partner }),
        )
        .await;
    }
    // One request id per movements page, so each page's outcome finds its way back.
    let request_id = match &params.cursor {
        None => id.to_string(),
        Some(c) => format!(
            "{id}.p{}",
            c.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(32)
                .collect::<String>()
        ),
    };
    let submitted = state
        .partners
        .submit(PartnerRequest {
            request_id,
            partner: partner.clone(),
            cpf: cpf.clone(),
            params,
            callback_url: None,
        })
        .await
        .map_err(|e| format!("{kind}: {e}"))?;
    let outcome: Outcome = match submitted {
        Submitted::Now(o) => o,
        Submitted::Queued {
            reason,
            retry_in,
            receiver,
        } => {
            let next =
                chrono::Utc::now() + chrono::Duration::milliseconds(retry_in.as_millis() as i64);
            set_partner(
                state,
                id,
                kind,
                &partner,
                "queued",
                Some(reason.as_str().into()),
            )
            .await;
            emit(
                state,
                id,
                "partner.queued",
                serde_json::json!({
                    "kind": kind, "partner": partner, "reason": reason.as_str(),
                    "next_attempt_at": next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "page": page,
                }),
            )
            .await;
            receiver
                .ok_or("queued without a way to hear back")?
                .await
                .map_err(|_| format!("{kind}: the queued request was dropped"))?
        }
    };
    if outcome.status == "ok" {
        Ok(PartnerResult::Data(
            outcome.data.unwrap_or(serde_json::Value::Null),
        ))
    } else {
        Ok(PartnerResult::Missing(
            outcome.error.unwrap_or_else(|| "failed".into()),
        ))
    }
}

async fn set_partner(
    state: &AppState,
    id: &str,
    kind: Kind,
    partner: &str,
    st: &str,
    detail: Option<String>,
) {
    state
        .analyses
        .update(id, |s| {
            s.partners.insert(
                kind.as_str().into(),
                PartnerState {
                    partner: partner.to_string(),
                    state: st.into(),
                    detail,
                },
            );
        })
        .await;
}

async fn finish_partner(
    state: &AppState,
    id: &str,
    kind: Kind,
    result: &PartnerResult,
    extra: serde_json::Value,
) {
    let partner = state.partner_for(kind).unwrap_or_default();
    match result {
        PartnerResult::Data(_) => {
            set_partner(state, id, kind, &partner, "completed", None).await;
            let mut data = serde_json::json!({ "kind": kind, "partner": partner });
            if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
                d.extend(e.clone());
            }
            emit(state, id, "partner.completed", data).await;
        }
        PartnerResult::Missing(reason) => {
            let st = if reason.starts_with("not_found") {
                "not_found"
            } else {
                "failed"
            };
            set_partner(state, id, kind, &partner, st, Some(reason.clone())).await;
            emit(
                state,
                id,
                "partner.failed",
                serde_json::json!({ "kind": kind, "partner": partner, "reason": reason, "final": true }),
            )
            .await;
        }
    }
}

async fn run_steps(
    state: Arc<AppState>,
    id: String,
    tenant: String,
    cpf: Cpf,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<serde_json::Value, String> {
    let consumer = {
        let (state, id, cpf) = (state.clone(), id.clone(), cpf.clone());
        tokio::spawn(async move {
            let r = ask(&state, &id, Kind::Consumer, &cpf, RequestParams::default()).await?;
            let debts = match &r {
                PartnerResult::Data(d) => d["dividas"].as_array().map(Vec::len).unwrap_or(0),
                PartnerResult::Missing(_) => 0,
            };
            finish_partner(
                &state,
                &id,
                Kind::Consumer,
                &r,
                serde_json::json!({ "debts": debts }),
            )
            .await;
            Ok::<_, String>(r)
        })
    };
    let rating = {
        let (state, id, cpf) = (state.clone(), id.clone(), cpf.clone());
        tokio::spawn(async move {
            let r = ask(&state, &id, Kind::Rating, &cpf, RequestParams::default()).await?;
            finish_partner(&state, &id, Kind::Rating, &r, serde_json::json!({})).await;
            Ok::<_, String>(r)
        })
    };
    let movements = movements(&state, &id, &tenant, &cpf, from, to).await?;
    let consumer = consumer.await.map_err(|e| e.to_string())??;
    let rating = rating.await.map_err(|e| e.to_string())??;
    // Everything stored is searchable before the client hears the analysis is complete.
    state
        .store
        .searchable(&id)
        .await
        .map_err(store_failed(&id))?;
    Ok(summarise(from, to, &movements, &consumer, &rating))
}

fn cpf_hash(state: &AppState, cpf: &Cpf) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(state.cpf_hash_key.expose().as_bytes())
        .expect("any key length");
    mac.update(cpf.digits().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `dd/mm/yyyy` to `yyyy-mm-dd`; anything else is kept as it came.
fn iso_date(br: &str) -> String {
    NaiveDate::parse_from_str(br, "%d/%m/%Y")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| br.to_string())
}

async fn movements(
    state: &Arc<AppState>,
    id: &str,
    tenant: &str,
    cpf: &Cpf,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Classified>, String> {
    let hash = cpf_hash(state, cpf);
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    let mut pages = 0u32;
    let mut stored = 0u64;
    loop {
        let params = RequestParams {
            from: Some(from.to_string()),
            to: Some(to.to_string()),
            cursor: cursor.clone(),
            limit: Some(500),
        };
        let page = match ask(state, id, Kind::Movements, cpf, params).await? {
            PartnerResult::Data(d) => serde_json::from_value::<MovementsPage>(d).map_err(|_| {
                "the movements partner's page does not follow the contract".to_string()
            })?,
            missing @ PartnerResult::Missing(_) => {
                finish_partner(state, id, Kind::Movements, &missing, serde_json::json!({})).await;
                return Ok(all);
            }
        };
        pages += 1;
        if all.len() + page.movimentacao_financeira.len() > state.max_transactions {
            return Err(format!(
                "the history holds more than {} movements",
                state.max_transactions
            ));
        }
        let mut ws = Workspace::default();
        let mut rows = Vec::with_capacity(page.movimentacao_financeira.len());
        for m in &page.movimentacao_financeira {
            let mcc = m
                .mcc
                .as_deref()
                .and_then(|c| classifier::data::parse_mcc(c).ok().flatten());
            let p = state.scorer.predict_with(
                &MovementInput {
                    description: &m.descricao,
                    amount: m.valor,
                    mcc,
                    kind: m.tipo.as_deref(),
                },
                &mut ws,
            );
            let amount_cents = (m.valor * 100.0).round() as i64;
            all.push(Classified {
                amount_cents,
                label: p.label,
            });
            rows.push(StoredTransaction {
                analysis_id: id.to_string(),
                movement_id: m.id.clone(),
                tenant: tenant.to_string(),
                cpf_hash: hash.clone(),
                date: iso_date(&m.data),
                description: m.descricao.clone(),
                amount_cents,
                label: p.label.as_str().into(),
                probability: p.probability,
                confidence: p.confidence.as_str().into(),
            });
        }
        crate::metrics::MOVEMENTS_CLASSIFIED
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let classified = all.len() as u64;
        state
            .analyses
            .update(id, |s| s.classified = classified)
            .await;
        emit(
            state,
            id,
            "classification.progress",
            serde_json::json!({ "page": pages, "classified": classified, "in_page": rows.len(), "more": page.proximo_cursor.is_some() }),
        ).await;
        let in_page = rows.len() as u64;
        state.store.put(rows).await.map_err(store_failed(id))?;
        // Counted here rather than asked of the store: a search store shows writes only after
        // its next refresh, which comes before `analysis.completed` (see below).
        stored += in_page;
        state.analyses.update(id, |s| s.stored = stored).await;
        emit(
            state,
            id,
            "transactions.stored",
            serde_json::json!({ "stored": stored }),
        )
        .await;
        match page.proximo_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    finish_partner(
        state,
        id,
        Kind::Movements,
        &PartnerResult::Data(serde_json::Value::Null),
        serde_json::json!({ "movements": all.len(), "pages": pages }),
    )
    .await;
    Ok(all)
}

fn reais(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// The figures a credit analyst looks at.
fn summarise(
    from: NaiveDate,
    to: NaiveDate,
    movements: &[Classified],
    consumer: &PartnerResult,
    rating: &PartnerResult,
) -> serde_json::Value {
    use classifier::Label;
    let months = (((to - from).num_days() + 1) as f64 / 30.4375).max(1.0 / 30.4375);
    let mut spend: BTreeMap<&str, i64> = BTreeMap::new();
    let (mut inflow, mut outflow, mut income) = (0i64, 0i64, 0i64);
    for m in movements {
        if m.amount_cents >= 0 {
            inflow += m.amount_cents;
            if m.label == Label::Income {
                income += m.amount_cents;
            }
        } else {
            outflow += -m.amount_cents;
            *spend.entry(m.label.as_str()).or_default() += -m.amount_cents;
        }
    }
    let of = |l: Label| spend.get(l.as_str()).copied().unwrap_or(0);
    let share = |cents: i64| {
        if outflow > 0 {
            cents as f64 / outflow as f64
        } else {
            0.0
        }
    };
    let today = chrono::Utc::now().date_naive();
    let (mut debts, mut debt_total, mut overdue, mut overdue_total) = (0u64, 0.0f64, 0u64, 0.0f64);
    if let PartnerResult::Data(d) = consumer {
        if let Ok(c) = serde_json::from_value::<ConsumerRecord>(d.clone()) {
            for debt in &c.dividas {
                if debt.data_pagamento.is_some() {
                    continue;
                }
                debts += 1;
                debt_total += debt.valor;
                if NaiveDate::parse_from_str(&debt.data_vencimento, "%d/%m/%Y")
                    .is_ok_and(|due| due < today)
                {
                    overdue += 1;
                    overdue_total += debt.valor;
                }
            }
        }
    }
    let declared = match rating {
        PartnerResult::Data(d) => serde_json::from_value::<RatingRecord>(d.clone())
            .ok()
            .map(|r| r.renda_mensal),
        PartnerResult::Missing(_) => None,
    };
    let observed = reais(income) / months;
    serde_json::json!({
        "window": { "from": from, "to": to, "months": (months * 100.0).round() / 100.0 },
        "transactions": movements.len(),
        "monthly_income": (observed * 100.0).round() / 100.0,
        "total_in": reais(inflow),
        "total_out": reais(outflow),
        "net_flow": reais(inflow - outflow),
        "spend_by_category": spend.iter().map(|(k, v)| (k.to_string(), reais(*v))).collect::<BTreeMap<_, _>>(),
        "risk": {
            "gambling_share_of_spend": (share(of(Label::Gambling)) * 10_000.0).round() / 10_000.0,
            "gambling_total": reais(of(Label::Gambling)),
            "bank_fees_total": reais(of(Label::BankFees)),
            "cash_withdrawals_total": reais(of(Label::TransferOutWithdrawal)),
            "loan_payments_total": reais(of(Label::LoanPayments)),
            "open_debts": debts,
            "open_debts_total": (debt_total * 100.0).round() / 100.0,
            "overdue_debts": overdue,
            "overdue_debts_total": (overdue_total * 100.0).round() / 100.0,
            "declared_monthly_income": declared,
            "observed_to_declared_income": declared.filter(|d| *d > 0.0).map(|d| ((observed / d) * 100.0).round() / 100.0),
        },
    })
}
