//! The Elasticsearch store, through the official `elasticsearch` client (rustls, the
//! workspace's reqwest).
//!
//! One index (`ELASTICSEARCH_INDEX`, default `credit-transactions`) under an index template
//! with a strict mapping, both created when missing. Writes are `_bulk` requests of at most
//! [`BULK_MAX`] rows with ids `{analysis}:{movement}`, so a retried write replaces instead of
//! duplicating. A bulk answer is read item by item: HTTP 200 with `errors: true` is a failure
//! for those items; items refused with 429 or 503 (a full write queue, a shard moving) are
//! sent again with backoff, as are whole requests answered 429/502/503/504 or timing out;
//! items refused for good are reported with their error type (never the reason text, which
//! can quote the document). Queries use `term`/`range` filters and a `match` query for the
//! text, so a search string is data, never query syntax.

use std::sync::Arc;
use std::time::Duration;

use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::StatusCode;
use elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsIndexTemplateParts, IndicesPutIndexTemplateParts,
    IndicesPutMappingParts, IndicesRefreshParts,
};
use elasticsearch::params::Conflicts;
use elasticsearch::{
    BulkParts, CountParts, CreateParts, DeleteByQueryParts, Elasticsearch, SearchParts,
};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::audit::{AccessRecord, AuditPage, AuditQuery, AuditTrail, Expired};
use super::model::{
    LabelTotal, Page, Position, StoreError, StoredTransaction, TransactionQuery, TransactionStore,
};
use crate::config::Secret;

/// Rows per bulk request at most: a page of movements is one or two requests, and a request
/// stays far below Elasticsearch's 100 MB limit.
pub const BULK_MAX: usize = 1_000;

/// Attempts of one write (the first and the retries).
const ATTEMPTS: u32 = 6;

/// How to reach Elasticsearch.
#[derive(Clone)]
pub struct ElasticSettings {
    /// `ELASTICSEARCH_URL`, e.g. `https://localhost:9200`.
    pub url: String,
    /// `ELASTICSEARCH_USER` and `ELASTICSEARCH_PASSWORD` (basic authentication).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `ELASTICSEARCH_API_KEY`: an encoded API key (instead of user and password).
    pub api_key: Option<Secret>,
    /// `ELASTICSEARCH_INDEX`: the index (and the template's pattern).
    pub index: String,
    /// `ELASTICSEARCH_AUDIT_INDEX`: the access audit trail's index; it must not match the
    /// transactions' pattern (`{index}*`).
    pub audit_index: String,
    /// Per request; a bulk that takes longer is retried.
    pub timeout: Duration,
}

impl ElasticSettings {
    pub fn new(url: &str) -> Self {
        ElasticSettings {
            url: url.into(),
            username: None,
            password: None,
            api_key: None,
            index: "credit-transactions".into(),
            audit_index: "credit-audit".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct ElasticStore {
    client: Elasticsearch,
    index: Arc<str>,
    /// Set once the template and index exist; until then every write tries to create them,
    /// so a cluster that was down at start is set up when it comes back.
    set_up: Arc<OnceCell<()>>,
    audit_index: Arc<str>,
    audit_set_up: Arc<OnceCell<()>>,
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// Statuses after which the same request may succeed.
fn retriable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The wait before attempt `n` (1-based retries): 100 ms doubling, at most 3.2 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(100 << n.min(5))
}

impl ElasticStore {
    /// A store for `settings`; sets up the index now if the cluster answers, else on first use.
    pub async fn connect(settings: &ElasticSettings) -> Result<Self, StoreError> {
        let url = elasticsearch::http::Url::parse(&settings.url)
            .map_err(|e| backend("ELASTICSEARCH_URL", e))?;
        let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(settings.timeout)
            .disable_proxy();
        if let Some(key) = &settings.api_key {
            transport = transport.auth(elasticsearch::auth::Credentials::EncodedApiKey(
                key.expose().to_string(),
            ));
        } else if let Some(user) = &settings.username {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            transport = transport.auth(elasticsearch::auth::Credentials::Basic(
                user.clone(),
                password,
            ));
        }
        let transport = transport
            .build()
            .map_err(|e| backend("building the Elasticsearch client", e))?;
        let store = ElasticStore {
            client: Elasticsearch::new(transport),
            index: settings.index.as_str().into(),
            set_up: Arc::default(),
            audit_index: settings.audit_index.as_str().into(),
            audit_set_up: Arc::default(),
        };
        if let Err(e) = store.ensure_index().await {
            tracing::warn!(error = %e, "Elasticsearch is not reachable yet; the index is set up on first use.");
        }
        Ok(store)
    }

    /// The index template (strict mapping) and the index, created when missing.
    async fn ensure_index(&self) -> Result<(), StoreError> {
        self.set_up
            .get_or_try_init(|| async {
                let name = format!("{}-template", self.index);
                let exists = self
                    .client
                    .indices()
                    .exists_index_template(IndicesExistsIndexTemplateParts::Name(&name))
                    .send()
                    .await
                    .map_err(|e| backend("checking the index template", e))?;
                if exists.status_code() == StatusCode::NOT_FOUND {
                    let r = self
                        .client
                        .indices()
                        .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
                        .body(template(&self.index))
                        .send()
                        .await
                        .map_err(|e| backend("creating the index template", e))?;
                    if !r.status_code().is_success() {
                        return Err(backend("creating the index template", r.status_code()));
                    }
                }
                let r = self
                    .client
                    .indices()
                    .create(IndicesCreateParts::Index(&self.index))
                    .send()
                    .await
                    .map_err(|e| backend("creating the index", e))?;
                // 400 resource_already_exists_exception: another instance was first.
                if !r.status_code().is_success() && r.status_code() != StatusCode::BAD_REQUEST {
                    return Err(backend("creating the index", r.status_code()));
                }
                // An index made before retention lacks `stored_at`; adding a field to a
                // mapping is allowed, and a no-op when it is there.
                let r = self
                    .client
                    .indices()
                    .put_mapping(IndicesPutMappingParts::Index(&[&self.index]))
                    .body(json!({"properties": {"stored_at": {"type": "long"}}}))
                    .send()
                    .await
                    .map_err(|e| backend("updating the mapping", e))?;
                if !r.status_code().is_success() {
                    return Err(backend("updating the mapping", r.status_code()));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The audit index (strict mapping), created when missing.
    async fn ensure_audit_index(&self) -> Result<(), StoreError> {
        self.audit_set_up
            .get_or_try_init(|| async {
                let keyword = json!({"type": "keyword"});
                let r = self
                    .client
                    .indices()
                    .create(IndicesCreateParts::Index(&self.audit_index))
                    .body(json!({
                        "settings": {"number_of_shards": 1},
                        "mappings": {
                            "dynamic": "strict",
                            "properties": {
                                "id": keyword,
                                "at_ms": {"type": "long"},
                                "tenant": keyword,
                                "key_id": keyword,
                                "action": keyword,
                                "analysis_id": keyword,
                                "cpf_hash": keyword,
                                "client": keyword
                            }
                        }
                    }))
                    .send()
                    .await
                    .map_err(|e| backend("creating the audit index", e))?;
                if !r.status_code().is_success() && r.status_code() != StatusCode::BAD_REQUEST {
                    return Err(backend("creating the audit index", r.status_code()));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// One capped bulk write, retried as the module says. Returns the error types of the rows
    /// refused for good.
    async fn bulk(&self, rows: &[StoredTransaction]) -> Result<Vec<String>, StoreError> {
        let mut pending: Vec<&StoredTransaction> = rows.iter().collect();
        let stored_at = chrono::Utc::now().timestamp_millis();
        let mut refused = Vec::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let mut body: Vec<JsonBody<Value>> = Vec::with_capacity(pending.len() * 2);
            for r in &pending {
                body.push(json!({"index": {"_id": doc_id(r)}}).into());
                let mut doc = serde_json::to_value(r).expect("a row serialises");
                doc["stored_at"] = json!(stored_at);
                body.push(doc.into());
            }
            let response = match self
                .client
                .bulk(BulkParts::Index(&self.index))
                .body(body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) if attempt + 1 < ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "Bulk request failed; retrying.");
                    continue;
                }
                Err(e) => return Err(backend("bulk request", e)),
            };
            let status = response.status_code();
            if retriable(status) && attempt + 1 < ATTEMPTS {
                tracing::warn!(
                    attempt,
                    status = status.as_u16(),
                    "Bulk request refused; retrying."
                );
                continue;
            }
            if !status.is_success() {
                return Err(backend("bulk request", status));
            }
            let answer: Value = response
                .json()
                .await
                .map_err(|e| backend("reading the bulk answer", e))?;
            if answer["errors"] != json!(true) {
                return Ok(refused);
            }
            let items = answer["items"].as_array().cloned().unwrap_or_default();
            if items.len() != pending.len() {
                return Err(backend(
                    "bulk answer",
                    format!("{} items for {} rows", items.len(), pending.len()),
                ));
            }
            let mut again = Vec::new();
            for (row, item) in pending.iter().zip(&items) {
                let result = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .cloned()
                    .unwrap_or(Value::Null);
                let status = result["status"].as_u64().unwrap_or(500) as u16;
                if (200..300).contains(&status) {
                    continue;
                }
                match StatusCode::from_u16(status) {
                    Ok(s) if retriable(s) => again.push(*row),
                    _ => refused.push(
                        result["error"]["type"]
                            .as_str()
                            .unwrap_or("unknown error")
                            .to_string(),
                    ),
                }
            }
            if again.is_empty() {
                return Ok(refused);
            }
            tracing::warn!(
                attempt,
                rows = again.len(),
                "Bulk items refused for now; retrying them."
            );
            pending = again;
        }
        Err(StoreError::Backend(format!(
            "{} rows still refused after {ATTEMPTS} attempts",
            pending.len()
        )))
    }

    async fn search(&self, body: Value) -> Result<Value, StoreError> {
        let r = self
            .client
            .search(SearchParts::Index(&[&self.index]))
            .body(body)
            .send()
            .await
            .map_err(|e| backend("search", e))?;
        if !r.status_code().is_success() {
            return Err(backend("search", r.status_code()));
        }
        r.json()
            .await
            .map_err(|e| backend("reading the search answer", e))
    }
}

fn doc_id(r: &StoredTransaction) -> String {
    format!("{}:{}", r.analysis_id, r.movement_id)
}

/// The index template: every field mapped, nothing else accepted.
fn template(index: &str) -> Value {
    let keyword = json!({"type": "keyword"});
    json!({
        "index_patterns": [format!("{index}*")],
        "template": {
            "settings": {"number_of_shards": 1},
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "analysis_id": keyword,
                    "movement_id": keyword,
                    "tenant": keyword,
                    "cpf_hash": keyword,
                    "date": {"type": "date", "format": "strict_date"},
                    "description": {
                        "type": "text",
                        "fields": {"raw": {"type": "keyword", "ignore_above": 1024}}
                    },
                    "amount_cents": {"type": "long"},
                    "label": keyword,
                    "probability": {"type": "float"},
                    "confidence": keyword,
                    "stored_at": {"type": "long"}
                }
            }
        }
    })
}

/// Midnight UTC of a `YYYY-MM-DD` date, in milliseconds: how a `date` field sorts.
fn date_millis(date: &str) -> Option<i64> {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
}

/// The search body of a query: filters, the text as a `match` (data, not syntax), the
/// date-then-movement order, and one row more than asked to know whether a page follows.
fn search_body(q: &TransactionQuery) -> Value {
    let mut filter = vec![json!({"term": {"analysis_id": q.analysis_id}})];
    if let Some(l) = &q.label {
        filter.push(json!({"term": {"label": l}}));
    }
    let mut dates = serde_json::Map::new();
    if let Some(d) = &q.from {
        dates.insert("gte".into(), json!(d));
    }
    if let Some(d) = &q.to {
        dates.insert("lte".into(), json!(d));
    }
    if !dates.is_empty() {
        filter.push(json!({"range": {"date": dates}}));
    }
    let mut cents = serde_json::Map::new();
    if let Some(v) = q.min_cents {
        cents.insert("gte".into(), json!(v));
    }
    if let Some(v) = q.max_cents {
        cents.insert("lte".into(), json!(v));
    }
    if !cents.is_empty() {
        filter.push(json!({"range": {"amount_cents": cents}}));
    }
    let mut bool_query = json!({"filter": filter});
    if let Some(text) = &q.text {
        // No words (only punctuation): no condition, as in the embedded store.
        bool_query["must"] = json!([{"match": {"description": {
            "query": text, "operator": "and", "zero_terms_query": "all"
        }}}]);
    }
    let mut body = json!({
        "size": q.limit + 1,
        "query": {"bool": bool_query},
        "sort": [{"date": "asc"}, {"movement_id": "asc"}],
        "track_total_hits": false
    });
    if let Some(p) = &q.after {
        body["search_after"] = json!([date_millis(&p.date).unwrap_or(0), p.movement_id]);
    }
    body
}

impl TransactionStore for ElasticStore {
    async fn put(&self, rows: Vec<StoredTransaction>) -> Result<(), StoreError> {
        self.ensure_index().await?;
        let mut refused = Vec::new();
        for chunk in rows.chunks(BULK_MAX) {
            refused.extend(self.bulk(chunk).await?);
        }
        match refused.first() {
            None => Ok(()),
            Some(first) => Err(StoreError::Refused {
                refused: refused.len(),
                total: rows.len(),
                first: first.clone(),
            }),
        }
    }

    async fn searchable(&self, _analysis_id: &str) -> Result<(), StoreError> {
        self.ensure_index().await?;
        let r = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&self.index]))
            .send()
            .await
            .map_err(|e| backend("refresh", e))?;
        if !r.status_code().is_success() {
            return Err(backend("refresh", r.status_code()));
        }
        Ok(())
    }

    async fn count(&self, analysis_id: &str) -> Result<u64, StoreError> {
        let r = self
            .client
            .count(CountParts::Index(&[&self.index]))
            .body(json!({"query": {"term": {"analysis_id": analysis_id}}}))
            .send()
            .await
            .map_err(|e| backend("count", e))?;
        if r.status_code() == StatusCode::NOT_FOUND {
            return Ok(0);
        }
        if !r.status_code().is_success() {
            return Err(backend("count", r.status_code()));
        }
        let v: Value = r.json().await.map_err(|e| backend("count", e))?;
        Ok(v["count"].as_u64().unwrap_or(0))
    }

    async fn totals(&self, analysis_id: &str) -> Result<Vec<LabelTotal>, StoreError> {
        let v = self
            .search(json!({
                "size": 0,
                "query": {"term": {"analysis_id": analysis_id}},
                "aggs": {"labels": {
                    "terms": {"field": "label", "size": 100, "order": {"_key": "asc"}},
                    "aggs": {"total": {"sum": {"field": "amount_cents"}}}
                }}
            }))
            .await?;
        let buckets = v["aggregations"]["labels"]["buckets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(buckets
            .iter()
            .map(|b| LabelTotal {
                label: b["key"].as_str().unwrap_or_default().to_string(),
                count: b["doc_count"].as_u64().unwrap_or(0),
                total_cents: b["total"]["value"].as_f64().unwrap_or(0.0).round() as i64,
            })
            .collect())
    }

    async fn query(&self, q: TransactionQuery) -> Result<Page, StoreError> {
        let v = self.search(search_body(&q)).await?;
        let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
        let more = hits.len() > q.limit;
        let transactions = hits
            .into_iter()
            .take(q.limit)
            .map(|h| serde_json::from_value::<StoredTransaction>(h["_source"].clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| backend("a stored document", e))?;
        let next = transactions.last().filter(|_| more).map(|last| Position {
            date: last.date.clone(),
            movement_id: last.movement_id.clone(),
        });
        Ok(Page { transactions, next })
    }

    async fn ready(&self) -> bool {
        matches!(self.client.ping().send().await, Ok(r) if r.status_code().is_success())
            && self.ensure_index().await.is_ok()
    }

    async fn erase(&self, analysis_id: &str) -> Result<u64, StoreError> {
        self.ensure_index().await?;
        self.delete_where(&self.index, json!({"term": {"analysis_id": analysis_id}}))
            .await
    }

    async fn expired(
        &self,
        before_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Expired>, Option<String>), StoreError> {
        let mut composite = json!({
            "size": limit,
            "sources": [
                {"analysis_id": {"terms": {"field": "analysis_id"}}},
                {"tenant": {"terms": {"field": "tenant"}}},
                {"cpf_hash": {"terms": {"field": "cpf_hash"}}}
            ]
        });
        if let Some(after) = after.and_then(|a| serde_json::from_str::<Value>(&a).ok()) {
            composite["after"] = after;
        }
        let v = self
            .search(json!({
                "size": 0,
                // Rows indexed before `stored_at` existed have none: they are old enough.
                "query": {"bool": {"should": [
                    {"range": {"stored_at": {"lt": before_ms}}},
                    {"bool": {"must_not": {"exists": {"field": "stored_at"}}}}
                ], "minimum_should_match": 1}},
                "aggs": {"analyses": {"composite": composite}}
            }))
            .await?;
        let next = v["aggregations"]["analyses"]["after_key"]
            .as_object()
            .map(|k| Value::Object(k.clone()).to_string());
        let buckets = v["aggregations"]["analyses"]["buckets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let next = next.filter(|_| buckets.len() == limit);
        let expired = buckets
            .iter()
            .map(|b| Expired {
                analysis_id: b["key"]["analysis_id"].as_str().unwrap_or_default().into(),
                tenant: b["key"]["tenant"].as_str().unwrap_or_default().into(),
                cpf_hash: b["key"]["cpf_hash"].as_str().unwrap_or_default().into(),
            })
            .filter(|e| !e.analysis_id.is_empty())
            .collect();
        Ok((expired, next))
    }
}

impl ElasticStore {
    /// Deletes what `query` matches in `index`, waiting for the deletion and for it to be
    /// visible to searches; how many documents went.
    async fn delete_where(&self, index: &str, query: Value) -> Result<u64, StoreError> {
        // What was indexed in the last second is not searched yet, and a delete-by-query
        // deletes what a search finds.
        let r = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[index]))
            .send()
            .await
            .map_err(|e| backend("refresh", e))?;
        if !r.status_code().is_success() && r.status_code() != StatusCode::NOT_FOUND {
            return Err(backend("refresh", r.status_code()));
        }
        let r = self
            .client
            .delete_by_query(DeleteByQueryParts::Index(&[index]))
            .conflicts(Conflicts::Proceed)
            .refresh(true)
            .wait_for_completion(true)
            .body(json!({"query": query}))
            .send()
            .await
            .map_err(|e| backend("delete by query", e))?;
        if r.status_code() == StatusCode::NOT_FOUND {
            return Ok(0);
        }
        if !r.status_code().is_success() {
            return Err(backend("delete by query", r.status_code()));
        }
        let v: Value = r
            .json()
            .await
            .map_err(|e| backend("reading the delete answer", e))?;
        // A document changed while the deletion ran was skipped (`conflicts=proceed`): not
        // deleted, so not done.
        if v["failures"].as_array().is_some_and(|f| !f.is_empty())
            || v["version_conflicts"].as_u64().is_some_and(|n| n > 0)
        {
            return Err(backend(
                "delete by query",
                "some documents were not deleted",
            ));
        }
        Ok(v["deleted"].as_u64().unwrap_or(0))
    }
}

impl AuditTrail for ElasticStore {
    async fn record(&self, r: AccessRecord) -> Result<(), StoreError> {
        self.ensure_audit_index().await?;
        // `create`: a record with an id already there is refused, never replaced.
        let response = self
            .client
            .create(CreateParts::IndexId(&self.audit_index, &r.id))
            .body(serde_json::to_value(&r).expect("a record serialises"))
            .send()
            .await
            .map_err(|e| backend("writing an audit record", e))?;
        if !response.status_code().is_success() {
            return Err(backend("writing an audit record", response.status_code()));
        }
        Ok(())
    }

    async fn audit(&self, q: AuditQuery) -> Result<AuditPage, StoreError> {
        self.ensure_audit_index().await?;
        // Records are read rarely and must include the latest: make them visible first.
        let r = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&self.audit_index]))
            .send()
            .await
            .map_err(|e| backend("refresh", e))?;
        if !r.status_code().is_success() {
            return Err(backend("refresh", r.status_code()));
        }
        let mut filter = Vec::new();
        for (field, value) in [
            ("tenant", &q.tenant),
            ("analysis_id", &q.analysis_id),
            ("cpf_hash", &q.cpf_hash),
        ] {
            if let Some(v) = value {
                filter.push(json!({"term": {field: v}}));
            }
        }
        let mut at = serde_json::Map::new();
        if let Some(v) = q.from_ms {
            at.insert("gte".into(), json!(v));
        }
        if let Some(v) = q.to_ms {
            at.insert("lt".into(), json!(v));
        }
        if !at.is_empty() {
            filter.push(json!({"range": {"at_ms": at}}));
        }
        let mut body = json!({
            "size": q.limit + 1,
            "query": {"bool": {"filter": filter}},
            "sort": [{"at_ms": "desc"}, {"id": "desc"}],
            "track_total_hits": false
        });
        if let Some(p) = &q.before {
            body["search_after"] = json!([p.at_ms, p.id]);
        }
        let r = self
            .client
            .search(SearchParts::Index(&[&self.audit_index]))
            .body(body)
            .send()
            .await
            .map_err(|e| backend("audit search", e))?;
        if !r.status_code().is_success() {
            return Err(backend("audit search", r.status_code()));
        }
        let v: Value = r
            .json()
            .await
            .map_err(|e| backend("reading the audit answer", e))?;
        let rows = v["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|h| serde_json::from_value::<AccessRecord>(h["_source"].clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| backend("an audit record", e))?;
        Ok(AuditPage::from_rows(rows, q.limit))
    }

    async fn expire_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.ensure_audit_index().await?;
        self.delete_where(
            &self.audit_index,
            json!({"range": {"at_ms": {"lt": before_ms}}}),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_string_is_a_match_query_never_query_syntax() {
        let q = TransactionQuery {
            analysis_id: "an_1".into(),
            text: Some("x\" OR *:* }".into()),
            limit: 10,
            ..Default::default()
        };
        let body = search_body(&q);
        assert_eq!(
            body["query"]["bool"]["must"][0]["match"]["description"]["query"],
            "x\" OR *:* }"
        );
        assert_eq!(body["size"], 11);
        assert!(body.to_string().find("query_string").is_none());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(9), Duration::from_millis(3200));
    }
}
