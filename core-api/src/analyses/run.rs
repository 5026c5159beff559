//! An analysis, step by step: ask each partner kind for its data through the integrations
//! gateway, classify movement pages as they arrive, store them, compute the summary. Every
//! step records an event in the analysis's log, which the SSE endpoint streams.
//!
//! In the Redis shape a run holds a lease ([`super::durable`]) and saves its progress after
//! each step (a partner's answer, a stored page), so another instance can take it over and go
//! on from there; its events carry the lease's token, which the log checks.

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
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::durable::{Lease, MovementsProgress, Progress};
use crate::domain::analysis::Cached;
use crate::domain::summary::{LabelledAmount, OpenDebt, Tally};
use crate::domain::{AnalysisEvent, PartnerState, PartnerStatus, Status, Summary, Window};
use crate::events::AppendError;
use crate::state::AppState;
use crate::store::{StoredTransaction, TransactionStore};

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

/// What a partner kind came to: its data (and whether it came from the cache), or why not.
/// Kept in a durable run's progress, so a successor does not ask again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PartnerResult {
    Data(serde_json::Value, Option<Cached>),
    Missing(String),
}

/// One run of an analysis: what it is about and, in the Redis shape, its lease and progress.
pub struct Run {
    state: Arc<AppState>,
    subject: Subject,
    window: Window,
    lease: Option<Lease>,
    progress: tokio::sync::Mutex<Progress>,
}

/// A run in progress on this instance: its lease renewed in the background, and counted (in
/// the metrics, and for a shutdown to wait on its handover). Dropped when the run returns or
/// panics, which stops the renewals.
struct Running {
    keeper: Option<tokio::task::JoinHandle<()>>,
    active: Arc<std::sync::atomic::AtomicUsize>,
}

impl Running {
    fn new(state: &AppState, lease: Option<Lease>) -> Self {
        crate::metrics::ANALYSES_RUNNING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state
            .active_runs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running {
            keeper: lease.map(|l| tokio::spawn(l.keep())),
            active: state.active_runs.clone(),
        }
    }
}

impl Running {
    /// Stops renewing the lease (the run hands it on).
    fn stop_keeper(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_keeper();
        crate::metrics::ANALYSES_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a run's work came to an end.
enum Ending {
    Finished(Result<Summary, String>),
    /// The service is stopping and the run was handed on to another instance.
    HandedOn,
    /// Another instance owns the run now.
    Lost,
}

impl Run {
    pub fn new(
        state: Arc<AppState>,
        subject: Subject,
        window: Window,
        lease: Option<Lease>,
        progress: Progress,
    ) -> Self {
        Run {
            state,
            subject,
            window,
            lease,
            progress: tokio::sync::Mutex::new(progress),
        }
    }

    fn id(&self) -> &str {
        &self.subject.id
    }

    /// Records an event and logs a failure to do so (a full log ends the analysis anyway).
    /// Refused as no longer the owner, the run's lease is lost and the run stops.
    pub async fn emit(&self, event: AnalysisEvent) {
        match self
            .state
            .events
            .record_as(self.id(), self.owner(), &event)
            .await
        {
            Ok(_) => {}
            Err(AppendError::NotOwner) => {
                if let Some(lease) = &self.lease {
                    lease.lose();
                }
            }
            Err(e) => {
                tracing::warn!(analysis = self.id(), kind = event.name(), error = %e, "Event not recorded.")
            }
        }
    }

    /// Records the final event, retrying while the log fails (Redis restarting, say) for up
    /// to [`super::final_retry`]: it is what ends every follower's stream. If it never lands,
    /// the events route ends its streams itself once [`super::ending_within`] has passed.
    /// `false` when another instance owns the run now.
    async fn emit_final(&self, event: AnalysisEvent) -> bool {
        let deadline = tokio::time::Instant::now() + super::final_retry(&self.state);
        let backend = |e: &AppendError| matches!(e, AppendError::Backend(_));
        let outcome = crate::retry::until("recording the final event", deadline, backend, || {
            self.state.events.record_as(self.id(), self.owner(), &event)
        })
        .await;
        match outcome {
            Ok(_) => true,
            Err(AppendError::NotOwner) => false,
            Err(e) => {
                tracing::error!(analysis = self.id(), kind = event.name(), error = %e, "Final event not recorded; its followers' streams end with stream.error.");
                true
            }
        }
    }

    /// Changes the run's progress and, in the Redis shape, saves it for a successor.
    async fn save(&self, change: impl FnOnce(&mut Progress)) {
        let mut progress = self.progress.lock().await;
        change(&mut progress);
        if let Some(lease) = &self.lease {
            // Under the lock: two steps finishing together save in the order they changed it.
            lease.save(&progress).await;
        }
    }

    /// Runs the analysis to its end (completed, failed or deadline), or until it is handed on
    /// or taken over. `spent` is how much of its deadline earlier owners used.
    pub async fn run(self, spent: Duration) {
        let state = self.state.clone();
        let deadline = Duration::from_secs(state.settings.analysis_deadline_secs);
        let left = deadline.saturating_sub(spent).max(Duration::from_secs(1));
        // Until this returns (or panics): the lease is renewed and the run counted.
        let mut running = Running::new(&state, self.lease.clone());
        let lost = async {
            match &self.lease {
                Some(lease) => lease.lost().await,
                None => std::future::pending().await,
            }
        };
        let ending = tokio::select! {
            r = tokio::time::timeout(left, self.steps()) => Ending::Finished(r.unwrap_or_else(|_| Err(format!("the analysis took longer than its {} s deadline", deadline.as_secs())))),
            _ = state.shutdown_signal() => match &self.lease {
                Some(_) => Ending::HandedOn,
                None => Ending::Finished(Err("the service is shutting down".to_string())),
            },
            _ = lost => Ending::Lost,
        };
        let result = match ending {
            Ending::Finished(result) => result,
            Ending::HandedOn => {
                // No renewal may land after the release and undo it.
                running.stop_keeper();
                if let Some(lease) = &self.lease {
                    lease.release().await;
                    state.analyses.forget_local(self.id(), lease.token());
                }
                tracing::info!(
                    analysis = self.id(),
                    "Analysis handed on to another instance."
                );
                return;
            }
            Ending::Lost => return self.lost(),
        };
        self.end(result).await;
    }

    /// Another instance owns the run now: this one stops, and answers for the analysis from
    /// Redis from now on.
    fn lost(&self) {
        if let Some(lease) = &self.lease {
            self.state.analyses.forget_local(self.id(), lease.token());
        }
        tracing::warn!(
            analysis = self.id(),
            "Analysis taken over by another instance; this run stops."
        );
    }

    /// The end of the run: the last snapshot, then the final event; with a lease, each only
    /// while the run still owns the analysis (the lease is renewed meanwhile).
    async fn end(&self, result: Result<Summary, String>) {
        let (state, id) = (&self.state, self.id());
        let (status, event, reason) = match result {
            Ok(summary) => (
                Status::Completed,
                AnalysisEvent::Completed {
                    id: id.to_string(),
                    summary,
                },
                None,
            ),
            Err(reason) => {
                tracing::warn!(analysis = %id, reason = %reason, "Analysis failed.");
                (
                    Status::Failed,
                    AnalysisEvent::Failed {
                        id: id.to_string(),
                        reason: reason.clone(),
                    },
                    Some(reason),
                )
            }
        };
        let summary = match &event {
            AnalysisEvent::Completed { summary, .. } => Some(summary.clone()),
            _ => None,
        };
        let owned = state
            .analyses
            .finish(id, self.owner(), super::final_retry(state), |s| {
                s.status = status;
                s.summary = summary;
                s.error = reason;
            })
            .await;
        if !owned {
            return self.lost();
        }
        // Queued before the final event: a lender's back end hears of the end even if this
        // instance dies now (a successor that ends the run again queues the same messages).
        let person = cpf_hash(state, &self.subject.cpf);
        super::tell_webhooks(state, &self.subject.tenant, id, &person, status).await;
        if !self.emit_final(event).await {
            return self.lost();
        }
        let ended = match status {
            Status::Completed => &crate::metrics::ANALYSES_COMPLETED,
            _ => &crate::metrics::ANALYSES_FAILED,
        };
        ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(lease) = &self.lease {
            lease.end().await;
        }
    }

    /// This run's lease token, which the event log and the snapshots check.
    fn owner(&self) -> Option<&str> {
        self.lease.as_ref().map(Lease::token)
    }

    /// The three partner kinds at once, in this task: when the run stops (handed on, taken
    /// over) nothing of it goes on writing.
    async fn steps(&self) -> Result<Summary, String> {
        let (consumer, rating, movements) =
            tokio::try_join!(self.consumer(), self.rating(), self.movements())?;
        // Everything stored is searchable before the client hears the analysis is complete.
        self.state
            .store
            .searchable(self.id())
            .await
            .map_err(store_failed(self.id()))?;
        Ok(summarise(self.window, &movements, &consumer, &rating))
    }

    async fn consumer(&self) -> Result<PartnerResult, String> {
        if let Some(done) = self.progress.lock().await.consumer.clone() {
            return Ok(done);
        }
        let r = self.ask(Kind::Consumer, RequestParams::default()).await?;
        let debts = match &r {
            PartnerResult::Data(d, _) => d["dividas"].as_array().map(Vec::len).unwrap_or(0),
            PartnerResult::Missing(_) => 0,
        };
        let counts = Counts {
            debts: Some(debts as u64),
            ..Counts::default()
        };
        self.finish_partner(Kind::Consumer, &r, counts).await;
        self.save(|p| p.consumer = Some(r.clone())).await;
        Ok(r)
    }

    async fn rating(&self) -> Result<PartnerResult, String> {
        if let Some(done) = self.progress.lock().await.rating.clone() {
            return Ok(done);
        }
        let r = self.ask(Kind::Rating, RequestParams::default()).await?;
        self.finish_partner(Kind::Rating, &r, Counts::default())
            .await;
        self.save(|p| p.rating = Some(r.clone())).await;
        Ok(r)
    }

    async fn ask(&self, kind: Kind, params: RequestParams) -> Result<PartnerResult, String> {
        let (state, id) = (&self.state, self.id());
        let Some(partner) = state.partner_for(kind) else {
            return Ok(PartnerResult::Missing(format!(
                "no {kind} partner is configured"
            )));
        };
        let page = params.cursor.clone();
        if page.is_none() {
            self.set_partner(kind, &partner, PartnerStatus::Requested, None)
                .await;
            self.emit(AnalysisEvent::PartnerStarted {
                kind,
                partner: partner.clone(),
            })
            .await;
        }
        // One request id per movements page, so each page's outcome finds its way back.
        // With the partners in process the queue is shared, and a successor asking what its
        // predecessor queued waits for that job (`already_queued`) rather than asking again.
        // A separate integrations service answers a queued job by callback to the instance
        // that asked, so there each owner of the run asks under request ids of its own.
        let base = match self.lease.as_ref().map(|l| l.generation) {
            Some(generation) if generation > 0 && state.partners.is_remote() => {
                format!("{id}.g{generation}")
            }
            _ => id.to_string(),
        };
        let request_id = match &params.cursor {
            None => base,
            Some(c) => format!(
                "{base}.p{}",
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
                cpf: self.subject.cpf.clone(),
                params,
                callback_url: None,
                fresh: self.subject.fresh,
                cache_scope: cache_scope(&self.subject.tenant, &cpf_hash(state, &self.subject.cpf)),
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
                let next = chrono::Utc::now()
                    + chrono::Duration::milliseconds(retry_in.as_millis() as i64);
                self.set_partner(
                    kind,
                    &partner,
                    PartnerStatus::Queued,
                    Some(reason.as_str().into()),
                )
                .await;
                self.emit(AnalysisEvent::PartnerQueued {
                    kind,
                    partner: partner.clone(),
                    reason: reason.as_str().into(),
                    next_attempt_at: next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    page,
                })
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
        &self,
        kind: Kind,
        partner: &str,
        st: PartnerStatus,
        detail: Option<String>,
    ) {
        self.set_partner_state(
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

    async fn set_partner_state(&self, kind: Kind, partner: PartnerState) {
        self.state
            .analyses
            .update(self.id(), self.owner(), |s| {
                s.partners.insert(kind.as_str().into(), partner);
            })
            .await;
    }

    async fn finish_partner(&self, kind: Kind, result: &PartnerResult, counts: Counts) {
        let partner = self.state.partner_for(kind).unwrap_or_default();
        match result {
            PartnerResult::Data(_, cached) => {
                let completed = PartnerState {
                    partner: partner.clone(),
                    state: PartnerStatus::Completed,
                    detail: None,
                    cached: cached.clone(),
                };
                self.set_partner_state(kind, completed).await;
                self.emit(AnalysisEvent::PartnerCompleted {
                    kind,
                    partner,
                    debts: counts.debts,
                    movements: counts.movements,
                    pages: counts.pages,
                    cached: cached.clone(),
                })
                .await;
            }
            PartnerResult::Missing(reason) => {
                let st = if reason.starts_with("not_found") {
                    PartnerStatus::NotFound
                } else {
                    PartnerStatus::Failed
                };
                self.set_partner(kind, &partner, st, Some(reason.clone()))
                    .await;
                self.emit(AnalysisEvent::PartnerFailed {
                    kind,
                    partner,
                    reason: reason.clone(),
                    is_final: true,
                })
                .await;
            }
        }
    }

    /// The movements, page by page from where the run got to: each page classified, stored,
    /// and added to the tally the summary is computed from.
    async fn movements(&self) -> Result<Tally, String> {
        let (state, id) = (&self.state, self.id());
        let tenant = self.subject.tenant.as_str();
        let mut at: MovementsProgress = self.progress.lock().await.movements.clone();
        if at.done {
            return Ok(at.tally);
        }
        let hash = cpf_hash(state, &self.subject.cpf);
        // One workspace for the whole history, not one per page: it remembers the words it
        // has scored, and a person's statement repeats the same shops and transfer lines page
        // after page. It ends with the analysis, so no one else's words are kept in it.
        let mut ws = Workspace::default();
        // The last page was stored but the kind not finished (its owner stopped in between):
        // nothing left to fetch.
        let mut more = at.pages == 0 || at.cursor.is_some();
        while more {
            let params = RequestParams {
                from: Some(self.window.from.to_string()),
                to: Some(self.window.to.to_string()),
                cursor: at.cursor.clone(),
                limit: Some(500),
            };
            let (page, cached) = match self.ask(Kind::Movements, params).await? {
                PartnerResult::Data(d, cached) => (
                    serde_json::from_value::<MovementsPage>(d).map_err(|_| {
                        "the movements partner's page does not follow the contract".to_string()
                    })?,
                    cached,
                ),
                missing @ PartnerResult::Missing(_) => {
                    self.finish_partner(Kind::Movements, &missing, Counts::default())
                        .await;
                    let PartnerResult::Missing(reason) = missing else {
                        unreachable!("matched above")
                    };
                    at.done = true;
                    at.failed = Some(reason);
                    let saved = at.clone();
                    self.save(|p| p.movements = saved).await;
                    return Ok(at.tally);
                }
            };
            let in_page = page.movimentacao_financeira.len() as u64;
            if at.tally.count + in_page > state.max_transactions as u64 {
                return Err(format!(
                    "the history holds more than {} movements",
                    state.max_transactions
                ));
            }
            let mut tally = at.tally.clone();
            let whose = Whose {
                analysis_id: id,
                tenant,
                cpf_hash: &hash,
            };
            let rows = classify_page(
                &state.scorer,
                &mut ws,
                &page.movimentacao_financeira,
                &whose,
                &mut tally,
            );
            crate::metrics::MOVEMENTS_CLASSIFIED
                .fetch_add(in_page, std::sync::atomic::Ordering::Relaxed);
            let page_number = at.pages + 1;
            let classified = at.classified + in_page;
            state
                .analyses
                .update(id, self.owner(), |s| s.classified = classified)
                .await;
            self.emit(AnalysisEvent::ClassificationProgress {
                page: page_number,
                classified,
                in_page,
                more: page.proximo_cursor.is_some(),
            })
            .await;
            state.store.put(rows).await.map_err(store_failed(id))?;
            // Counted here rather than asked of the store: a search store shows writes only
            // after its next refresh, which comes before `analysis.completed` (see `steps`).
            // Saved only once stored: a successor redoes a page whose rows may not be there
            // (rows are written idempotently), never skips one.
            at.pages = page_number;
            at.classified = classified;
            at.stored += in_page;
            at.tally = tally;
            at.cursor = page.proximo_cursor;
            more = at.cursor.is_some();
            if let Some(c) = cached {
                at.cached_pages += 1;
                if at
                    .oldest_cached
                    .as_ref()
                    .is_none_or(|o| o.age_secs < c.age_secs)
                {
                    at.oldest_cached = Some(c);
                }
            }
            let saved = at.clone();
            self.save(|p| p.movements = saved).await;
            let stored = at.stored;
            state
                .analyses
                .update(id, self.owner(), |s| s.stored = stored)
                .await;
            self.emit(AnalysisEvent::TransactionsStored { stored })
                .await;
        }
        let counts = Counts {
            movements: Some(at.tally.count),
            pages: Some(at.pages),
            ..Counts::default()
        };
        // From the cache only if every page was (then as old as the oldest page).
        let cached = (at.pages > 0 && at.cached_pages == at.pages)
            .then(|| at.oldest_cached.clone())
            .flatten();
        self.finish_partner(
            Kind::Movements,
            &PartnerResult::Data(serde_json::Value::Null, cached),
            counts,
        )
        .await;
        at.done = true;
        let saved = at.clone();
        self.save(|p| p.movements = saved).await;
        Ok(at.tally)
    }
}

/// Whose movements a page holds, as every stored row says.
pub struct Whose<'a> {
    pub analysis_id: &'a str,
    pub tenant: &'a str,
    /// The keyed hash of the person's CPF.
    pub cpf_hash: &'a str,
}

/// Classifies a page of movements with `ws` (the run's word memory) into the rows to store,
/// adding each to `tally`. Public so the benchmarks time exactly what a run does.
pub fn classify_page(
    scorer: &classifier::Scorer,
    ws: &mut Workspace,
    movements: &[integrations::contract::Movement],
    whose: &Whose,
    tally: &mut Tally,
) -> Vec<StoredTransaction> {
    let mut rows = Vec::with_capacity(movements.len());
    for m in movements {
        let mcc = m
            .mcc
            .as_deref()
            .and_then(|c| classifier::data::parse_mcc(c).ok().flatten());
        let p = scorer.predict_with(
            &MovementInput {
                description: &m.descricao,
                amount: m.valor,
                mcc,
                kind: m.tipo.as_deref(),
            },
            ws,
        );
        let amount_cents = (m.valor * 100.0).round() as i64;
        tally.add(LabelledAmount {
            amount_cents,
            label: p.label,
        });
        rows.push(StoredTransaction {
            analysis_id: whose.analysis_id.to_string(),
            movement_id: m.id.clone(),
            tenant: whose.tenant.to_string(),
            cpf_hash: whose.cpf_hash.to_string(),
            date: iso_date(&m.data),
            description: m.descricao.clone(),
            amount_cents,
            label: p.label.as_str().into(),
            probability: p.probability,
            confidence: p.confidence.as_str().into(),
        });
    }
    rows
}

/// The analysis's reason when the store fails (the cause goes to the log, not the client).
fn store_failed(id: &str) -> impl Fn(crate::store::StoreError) -> String + '_ {
    move |e| {
        tracing::error!(analysis = id, error = %e, "Storing transactions failed.");
        "the transaction store failed".to_string()
    }
}

/// What `partner.completed` counts, by kind.
#[derive(Default)]
struct Counts {
    debts: Option<u64>,
    movements: Option<u64>,
    pages: Option<u32>,
}

/// The scope of a person's cached partner answers: the tenant (no lender learns from a cache
/// hit that another asked) and the person, so an erasure can forget them all.
pub fn cache_scope(tenant: &str, cpf_hash: &str) -> String {
    format!("{tenant}\n{cpf_hash}")
}

/// The keyed hash of a CPF (`CPF_HASH_KEY`): how the store and the audit trail name a person.
pub fn cpf_hash(state: &AppState, cpf: &Cpf) -> String {
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

/// The summary, from the classified movements and what the consumer and rating partners said.
fn summarise(
    window: Window,
    movements: &Tally,
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
