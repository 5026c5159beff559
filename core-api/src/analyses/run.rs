//! An analysis, step by step: ask each partner kind for its data through the integrations
//! gateway, classify movement pages as they arrive, store them, compute the summary. Every
//! step records an event in the analysis's log, which the SSE endpoint streams.

use std::sync::Arc;
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
use sha2::Sha256;

use crate::domain::analysis::Cached;
use crate::domain::summary::{LabelledAmount, OpenDebt};
use crate::domain::{AnalysisEvent, PartnerState, PartnerStatus, Status, Summary, Window};
use crate::state::AppState;
use crate::store::{StoredTransaction, TransactionStore};

/// Records an event and logs a failure to do so (a full log ends the analysis anyway).
async fn emit(state: &AppState, id: &str, event: AnalysisEvent) {
    if let Err(e) = state.events.record(id, &event).await {
        tracing::warn!(analysis = id, kind = event.name(), error = %e, "Event not recorded.");
    }
}

/// Records the final event, retrying while the log fails (Redis restarting, say) for up to
/// [`super::final_retry`]: it is what ends every follower's stream. If it never lands, the
/// events route ends its streams itself once [`super::ending_within`] has passed.
async fn emit_final(state: &AppState, id: &str, event: AnalysisEvent) {
    let deadline = tokio::time::Instant::now() + super::final_retry(state);
    let backend =
        |e: &crate::events::AppendError| matches!(e, crate::events::AppendError::Backend(_));
    let outcome = crate::retry::until("recording the final event", deadline, backend, || {
        state.events.record(id, &event)
    })
    .await;
    if let Err(e) = outcome {
        tracing::error!(analysis = id, kind = event.name(), error = %e, "Final event not recorded; its followers' streams end with stream.error.");
    }
}

/// The analysis's reason when the store fails (the cause goes to the log, not the client).
fn store_failed(id: &str) -> impl Fn(crate::store::StoreError) -> String + '_ {
    move |e| {
        tracing::error!(analysis = id, error = %e, "Storing transactions failed.");
        "the transaction store failed".to_string()
    }
}

/// Who an analysis is about and for: what each of its partner requests carries.
#[derive(Clone)]
pub struct Subject {
    /// The analysis id.
    pub id: String,
    pub tenant: String,
    pub cpf: Cpf,
    /// Ask the partners even where a cached answer would do.
    pub fresh: bool,
}

/// Runs an analysis to its end (completed, failed or deadline).
pub async fn run(state: Arc<AppState>, subject: Subject, window: Window) {
    let deadline = Duration::from_secs(state.settings.analysis_deadline_secs);
    let id = subject.id.clone();
    crate::metrics::ANALYSES_RUNNING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work = run_steps(state.clone(), subject, window);
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
    crate::metrics::ANALYSES_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    match result {
        Ok(summary) => {
            state
                .analyses
                .finish(&id, super::final_retry(&state), |s| {
                    s.status = Status::Completed;
                    s.summary = Some(summary.clone());
                })
                .await;
            emit_final(
                &state,
                &id,
                AnalysisEvent::Completed {
                    id: id.clone(),
                    summary,
                },
            )
            .await;
        }
        Err(reason) => {
            tracing::warn!(analysis = %id, reason = %reason, "Analysis failed.");
            state
                .analyses
                .finish(&id, super::final_retry(&state), |s| {
                    s.status = Status::Failed;
                    s.error = Some(reason.clone());
                })
                .await;
            emit_final(
                &state,
                &id,
                AnalysisEvent::Failed {
                    id: id.clone(),
                    reason,
                },
            )
            .await;
        }
    }
}

/// What a partner kind came to: its data (and whether it came from the cache), or why not.
enum PartnerResult {
    Data(serde_json::Value, Option<Cached>),
    Missing(String),
}

async fn ask(
    state: &AppState,
    subject: &Subject,
    kind: Kind,
    params: RequestParams,
) -> Result<PartnerResult, String> {
    let id = subject.id.as_str();
    let Some(partner) = state.partner_for(kind) else {
        return Ok(PartnerResult::Missing(format!(
            "no {kind} partner is configured"
        )));
    };
    let page = params.cursor.clone();
    if page.is_none() {
        set_partner(state, id, kind, &partner, PartnerStatus::Requested, None).await;
        emit(
            state,
            id,
            AnalysisEvent::PartnerStarted {
                kind,
                partner: partner.clone(),
            },
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
            caller: String::new(),
            request_id,
            partner: partner.clone(),
            cpf: subject.cpf.clone(),
            params,
            callback_url: None,
            fresh: subject.fresh,
            cache_scope: subject.tenant.clone(),
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
                PartnerStatus::Queued,
                Some(reason.as_str().into()),
            )
            .await;
            emit(
                state,
                id,
                AnalysisEvent::PartnerQueued {
                    kind,
                    partner: partner.clone(),
                    reason: reason.as_str().into(),
                    next_attempt_at: next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    page,
                },
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
            outcome.cached.map(Cached::from),
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
    st: PartnerStatus,
    detail: Option<String>,
) {
    set_partner_state(
        state,
        id,
        kind,
        PartnerState {
            partner: partner.to_string(),
            state: st,
            detail,
            cached: None,
        },
    )
    .await
}

async fn set_partner_state(state: &AppState, id: &str, kind: Kind, partner: PartnerState) {
    state
        .analyses
        .update(id, |s| {
            s.partners.insert(kind.as_str().into(), partner);
        })
        .await;
}

/// What `partner.completed` counts, by kind.
#[derive(Default)]
struct Counts {
    debts: Option<u64>,
    movements: Option<u64>,
    pages: Option<u32>,
}

async fn finish_partner(
    state: &AppState,
    id: &str,
    kind: Kind,
    result: &PartnerResult,
    counts: Counts,
) {
    let partner = state.partner_for(kind).unwrap_or_default();
    match result {
        PartnerResult::Data(_, cached) => {
            let completed = PartnerState {
                partner: partner.clone(),
                state: PartnerStatus::Completed,
                detail: None,
                cached: cached.clone(),
            };
            set_partner_state(state, id, kind, completed).await;
            emit(
                state,
                id,
                AnalysisEvent::PartnerCompleted {
                    kind,
                    partner,
                    debts: counts.debts,
                    movements: counts.movements,
                    pages: counts.pages,
                    cached: cached.clone(),
                },
            )
            .await;
        }
        PartnerResult::Missing(reason) => {
            let st = if reason.starts_with("not_found") {
                PartnerStatus::NotFound
            } else {
                PartnerStatus::Failed
            };
            set_partner(state, id, kind, &partner, st, Some(reason.clone())).await;
            emit(
                state,
                id,
                AnalysisEvent::PartnerFailed {
                    kind,
                    partner,
                    reason: reason.clone(),
                    is_final: true,
                },
            )
            .await;
        }
    }
}

async fn run_steps(
    state: Arc<AppState>,
    subject: Subject,
    window: Window,
) -> Result<Summary, String> {
    let id = subject.id.clone();
    let consumer = {
        let (state, subject) = (state.clone(), subject.clone());
        tokio::spawn(async move {
            let r = ask(&state, &subject, Kind::Consumer, RequestParams::default()).await?;
            let debts = match &r {
                PartnerResult::Data(d, _) => d["dividas"].as_array().map(Vec::len).unwrap_or(0),
                PartnerResult::Missing(_) => 0,
            };
            let counts = Counts {
                debts: Some(debts as u64),
                ..Counts::default()
            };
            finish_partner(&state, &subject.id, Kind::Consumer, &r, counts).await;
            Ok::<_, String>(r)
        })
    };
    let rating = {
        let (state, subject) = (state.clone(), subject.clone());
        tokio::spawn(async move {
            let r = ask(&state, &subject, Kind::Rating, RequestParams::default()).await?;
            finish_partner(&state, &subject.id, Kind::Rating, &r, Counts::default()).await;
            Ok::<_, String>(r)
        })
    };
    let movements = movements(&state, &subject, window).await?;
    let consumer = consumer.await.map_err(|e| e.to_string())??;
    let rating = rating.await.map_err(|e| e.to_string())??;
    // Everything stored is searchable before the client hears the analysis is complete.
    state
        .store
        .searchable(&id)
        .await
        .map_err(store_failed(&id))?;
    Ok(summarise(window, &movements, &consumer, &rating))
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
    subject: &Subject,
    window: Window,
) -> Result<Vec<LabelledAmount>, String> {
    let (id, tenant) = (subject.id.as_str(), subject.tenant.as_str());
    let hash = cpf_hash(state, &subject.cpf);
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    let mut pages = 0u32;
    let mut stored = 0u64;
    // One workspace for the whole history, not one per page: it remembers the words it has
    // scored, and a person's statement repeats the same shops and transfer lines page after
    // page. It ends with the analysis, so no one else's words are kept in it.
    let mut ws = Workspace::default();
    loop {
        let params = RequestParams {
            from: Some(window.from.to_string()),
            to: Some(window.to.to_string()),
            cursor: cursor.clone(),
            limit: Some(500),
        };
        let page = match ask(state, subject, Kind::Movements, params).await? {
            PartnerResult::Data(d, _) => {
                serde_json::from_value::<MovementsPage>(d).map_err(|_| {
                    "the movements partner's page does not follow the contract".to_string()
                })?
            }
            missing @ PartnerResult::Missing(_) => {
                finish_partner(state, id, Kind::Movements, &missing, Counts::default()).await;
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
            all.push(LabelledAmount {
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
            AnalysisEvent::ClassificationProgress {
                page: pages,
                classified,
                in_page: rows.len() as u64,
                more: page.proximo_cursor.is_some(),
            },
        )
        .await;
        let in_page = rows.len() as u64;
        state.store.put(rows).await.map_err(store_failed(id))?;
        // Counted here rather than asked of the store: a search store shows writes only after
        // its next refresh, which comes before `analysis.completed` (see below).
        stored += in_page;
        state.analyses.update(id, |s| s.stored = stored).await;
        emit(state, id, AnalysisEvent::TransactionsStored { stored }).await;
        match page.proximo_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let counts = Counts {
        movements: Some(all.len() as u64),
        pages: Some(pages),
        ..Counts::default()
    };
    finish_partner(
        state,
        id,
        Kind::Movements,
        &PartnerResult::Data(serde_json::Value::Null, None),
        counts,
    )
    .await;
    Ok(all)
}

/// The summary, from the classified movements and what the consumer and rating partners said.
fn summarise(
    window: Window,
    movements: &[LabelledAmount],
    consumer: &PartnerResult,
    rating: &PartnerResult,
) -> Summary {
    let mut open_debts = Vec::new();
    if let PartnerResult::Data(d, _) = consumer {
        if let Ok(c) = serde_json::from_value::<ConsumerRecord>(d.clone()) {
            open_debts = c
                .dividas
                .iter()
                .filter(|debt| debt.data_pagamento.is_none())
                .map(|debt| OpenDebt {
                    amount: debt.valor,
                    due: NaiveDate::parse_from_str(&debt.data_vencimento, "%d/%m/%Y").ok(),
                })
                .collect();
        }
    }
    let declared = match rating {
        PartnerResult::Data(d, _) => serde_json::from_value::<RatingRecord>(d.clone())
            .ok()
            .map(|r| r.renda_mensal),
        PartnerResult::Missing(_) => None,
    };
    Summary::compute(
        window,
        movements,
        &open_debts,
        declared,
        chrono::Utc::now().date_naive(),
    )
}
