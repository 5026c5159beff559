// The live analysis page: starts an analysis through the public API, follows its events with
// EventSource, and reads the query API for the table. No framework and no build step: the
// service embeds this file as it is.
"use strict";

const KEY_STORE = "credit-analysis.api-key";
const RUN_STORE = "credit-analysis.current";
const EVENT_TYPES = [
  "analysis.accepted", "partner.started", "partner.queued", "partner.completed",
  "partner.failed", "classification.progress", "transactions.stored",
  "analysis.completed", "analysis.failed", "stream.error",
];
// Fields the API can name in a problem, and where the page shows it.
const FIELD_INPUTS = { cpf: "cpf", from: "from", to: "to", "api-key": "api-key" };
// How often the page reopens a stream the browser gave up on before it says it cannot.
const MAX_REOPENS = 5;
const PAGE_SIZE = 100;

const $ = (id) => document.getElementById(id);
const money = new Intl.NumberFormat("pt-BR", { style: "currency", currency: "BRL" });
const count = new Intl.NumberFormat("en");

/** The analysis the page follows. */
let current = null;

function human(label) {
  const text = label.toLowerCase().replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function reais(cents) {
  return money.format(cents / 100);
}

function clearErrors() {
  for (const el of document.querySelectorAll("#start .error")) {
    el.hidden = true;
    el.textContent = "";
  }
  for (const el of document.querySelectorAll("#start [aria-invalid]")) {
    el.removeAttribute("aria-invalid");
  }
}

/** Shows `text` next to the input of `field`, or under the form when no input is named. */
function showError(field, text) {
  const input = FIELD_INPUTS[field];
  const box = $(input ? `${input}-error` : "form-error");
  box.textContent = text;
  box.hidden = false;
  if (input) {
    $(input).setAttribute("aria-invalid", "true");
    box.setAttribute("role", "alert");
    $(input).focus();
  }
}

/** The problem document of a failed response, or one made up when the body is not one. */
async function problem(res) {
  try {
    const p = await res.json();
    if (p && typeof p.detail === "string") return p;
  } catch (_) {
    // Not JSON: fall through.
  }
  return { detail: `The service answered ${res.status}.` };
}

async function start(event) {
  event.preventDefault();
  clearErrors();
  const key = $("api-key").value.trim();
  if (!key) {
    showError("api-key", "Enter your API key.");
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  const body = { cpf: $("cpf").value };
  if ($("from").value) body.from = $("from").value;
  if ($("to").value) body.to = $("to").value;
  $("run").disabled = true;
  let res;
  try {
    res = await fetch("/v1/analyses", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
      body: JSON.stringify(body),
    });
  } catch (_) {
    showError(null, "The service could not be reached. Check the connection and try again.");
    return;
  } finally {
    $("run").disabled = false;
  }
  if (!res.ok) {
    const p = await problem(res);
    showError(res.status === 401 || res.status === 403 ? "api-key" : p.field, p.detail);
    return;
  }
  const started = await res.json();
  sessionStorage.setItem(RUN_STORE, JSON.stringify({ id: started.id, events_url: started.events_url }));
  follow(started);
}

function resetLive() {
  $("live").hidden = false;
  $("result").hidden = true;
  $("events").replaceChildren();
  $("events").dataset.repeats = "0";
  $("event-count").textContent = "0";
  $("stored").value = "0";
  $("progress").max = 1;
  $("progress").value = 0;
  $("progress-text").textContent = "No movements yet.";
  for (const chip of document.querySelectorAll("#partners .chip")) {
    setChip(chip.dataset.kind, "waiting", "waiting");
  }
}

/** Follows an analysis from its first event. */
function follow(started) {
  if (current && current.es) current.es.close();
  resetLive();
  current = {
    id: started.id,
    url: started.events_url,
    lastId: 0,
    drops: 0,
    repeats: 0,
    reopens: 0,
    done: false,
    es: null,
    more: true,
    classified: 0,
    stored: 0,
  };
  $("live").scrollIntoView({ block: "start" });
  open(current);
}

function setConnection(state, text) {
  const el = $("connection");
  el.dataset.state = state;
  el.dataset.drops = String(current ? current.drops : 0);
  el.textContent = text;
}

/**
 * Opens the stream. The browser reconnects by itself after a drop, sending Last-Event-ID, so
 * the server resumes after the last event seen; when the browser gives up instead (an HTTP
 * error on reconnect), the page opens a new stream with `last_event_id`, which EventSource
 * cannot send as a header on a first request.
 */
function open(run) {
  let url = run.url;
  if (run.lastId > 0) url += `${url.includes("?") ? "&" : "?"}last_event_id=${run.lastId}`;
  const es = new EventSource(url);
  run.es = es;
  es.onopen = () => {
    if (current !== run) return;
    run.reopens = 0;
    setConnection("live", "Live: following the analysis.");
  };
  es.onerror = () => {
    if (current !== run || run.done) return;
    const el = $("connection");
    if (el.dataset.state !== "reconnecting") run.drops += 1;
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      if (run.reopens >= MAX_REOPENS) {
        setConnection("lost", "The stream could not be reopened. Start the analysis again or reload the page.");
        return;
      }
      run.reopens += 1;
      setConnection("reconnecting", "Connection lost. Reconnecting…");
      setTimeout(() => reopen(run), 3000);
    } else {
      setConnection("reconnecting", "Connection lost. Reconnecting…");
    }
  };
  for (const type of EVENT_TYPES) es.addEventListener(type, (ev) => receive(run, ev));
}

/**
 * Opens the stream again after the browser gave up: the analysis's snapshot carries an
 * `events_url` with a fresh token (the first one lasts 15 minutes), and `open` resumes after
 * the last event shown.
 */
async function reopen(run) {
  if (current !== run || run.done) return;
  try {
    const snapshot = await api(`/v1/analyses/${encodeURIComponent(run.id)}`);
    if (snapshot.events_url) run.url = snapshot.events_url;
  } catch (_) {
    // The service is still unreachable: the old address is tried, and fails into here again.
  }
  if (current === run && !run.done) open(run);
}

function receive(run, ev) {
  if (current !== run) return;
  if (ev.type === "stream.error") {
    // The server cut this stream off; the browser reconnects from the last id.
    setConnection("reconnecting", "The stream fell behind. Reconnecting…");
    return;
  }
  const id = Number(ev.lastEventId);
  // The server resumes after Last-Event-ID and repeats nothing; this guard keeps the page
  // right even if a stream were replayed from the start, and counts what it dropped.
  if (!Number.isInteger(id) || id <= run.lastId) {
    run.repeats += 1;
    $("events").dataset.repeats = String(run.repeats);
    return;
  }
  run.lastId = id;
  let data;
  try {
    data = JSON.parse(ev.data);
  } catch (_) {
    return;
  }
  logEvent(id, ev.type, data);
  switch (ev.type) {
    case "partner.started":
      setChip(data.kind, "requested", "requested");
      break;
    case "partner.queued":
      setChip(data.kind, "queued", `queued: ${human(data.reason || "waiting")}`, data.next_attempt_at);
      break;
    case "partner.completed":
      setChip(data.kind, "done", data.movements !== undefined ? `done, ${count.format(data.movements)} movements` : "done");
      break;
    case "partner.failed":
      setChip(data.kind, "failed", `failed: ${data.reason || "no answer"}`);
      break;
    case "classification.progress":
      run.classified = data.classified;
      run.more = Boolean(data.more);
      showProgress(run, data.page);
      break;
    case "transactions.stored":
      run.stored = data.stored;
      $("stored").value = count.format(data.stored);
      showProgress(run);
      break;
    case "analysis.completed":
      finish(run, data.summary, null);
      break;
    case "analysis.failed":
      finish(run, null, data.reason || "the analysis failed");
      break;
    default:
      break;
  }
}

function logEvent(id, type, data) {
  const li = document.createElement("li");
  li.dataset.eventId = String(id);
  li.value = id;
  const name = document.createElement("code");
  name.textContent = type;
  li.append(name);
  const detail = data.partner || data.reason || (data.classified !== undefined ? `${data.classified} classified` : "") ||
    (data.stored !== undefined ? `${data.stored} stored` : "");
  if (detail) li.append(` ${detail}`);
  $("events").append(li);
  $("event-count").textContent = String($("events").children.length);
}

function setChip(kind, state, text, nextAttempt) {
  const chip = document.querySelector(`#partners .chip[data-kind="${kind}"]`);
  if (!chip) return;
  chip.dataset.state = state;
  if (nextAttempt) chip.dataset.next = nextAttempt; else delete chip.dataset.next;
  chip.querySelector(".state").textContent = text;
  chip.dataset.text = text;
  tick();
}

/** Updates the countdown of every queued partner. */
function tick() {
  for (const chip of document.querySelectorAll("#partners .chip[data-next]")) {
    const left = Math.max(0, Math.ceil((Date.parse(chip.dataset.next) - Date.now()) / 1000));
    chip.querySelector(".state").textContent = `${chip.dataset.text}, next attempt in ${left} s`;
  }
}

function showProgress(run, page) {
  const bar = $("progress");
  if (run.more) {
    // The partner does not say how many pages are left: the bar moves without a fraction.
    bar.removeAttribute("value");
  } else {
    bar.max = Math.max(1, run.classified);
    bar.value = Math.min(run.stored, run.classified);
  }
  const pageText = page ? `, page ${page}` : "";
  $("progress-text").textContent = `${count.format(run.classified)} movements classified${pageText}; ` +
    `${count.format(run.stored)} stored${run.more ? "; more pages to come" : ""}.`;
}

function finish(run, summary, failure) {
  run.done = true;
  run.es.close();
  $("result").hidden = false;
  if (failure) {
    setConnection("failed", "The analysis ended without a summary.");
    $("outcome").textContent = `The analysis failed: ${failure}.`;
    $("figures").replaceChildren();
    $("chart").replaceChildren();
  } else {
    setConnection("done", "Finished.");
    run.more = false;
    showProgress(run);
    $("outcome").textContent = "The analysis is complete.";
    showFigures(summary);
    drawChart(summary.spend_by_category || {});
  }
  loadCategories(run);
  loadTable(false);
}

function showFigures(s) {
  const risk = s.risk || {};
  const pct = (x) => (x === null || x === undefined ? "n/a" : `${(x * 100).toFixed(1)}%`);
  const cur = (x) => (x === null || x === undefined ? "not declared" : money.format(x));
  const rows = [
    ["Transactions", count.format(s.transactions)],
    ["Monthly income (observed)", cur(s.monthly_income)],
    ["Monthly income (declared)", cur(risk.declared_monthly_income)],
    ["Observed to declared income", risk.observed_to_declared_income == null ? "n/a" : `${risk.observed_to_declared_income}×`],
    ["Money in", cur(s.total_in)],
    ["Money out", cur(s.total_out)],
    ["Net flow", cur(s.net_flow)],
    ["Gambling share of spend", pct(risk.gambling_share_of_spend)],
    ["Bank fees and interest", cur(risk.bank_fees_total)],
    ["Cash withdrawals", cur(risk.cash_withdrawals_total)],
    ["Loan payments", cur(risk.loan_payments_total)],
    ["Open debts", `${count.format(risk.open_debts || 0)} (${cur(risk.open_debts_total || 0)})`],
    ["Overdue debts", `${count.format(risk.overdue_debts || 0)} (${cur(risk.overdue_debts_total || 0)})`],
  ];
  const dl = $("figures");
  dl.replaceChildren();
  for (const [term, value] of rows) {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    div.append(dt, dd);
    dl.append(div);
  }
}

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A horizontal bar per category, largest first, drawn by the page (nothing fetched). */
function drawChart(spend) {
  const chart = $("chart");
  chart.replaceChildren();
  const rows = Object.entries(spend).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  const labelWidth = 230, barWidth = 330, valueWidth = 120, rowHeight = 28;
  const width = labelWidth + barWidth + valueWidth;
  const height = Math.max(1, rows.length) * rowHeight + 8;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.setAttribute("width", String(width));
  chart.setAttribute("height", String(height));
  if (rows.length === 0) {
    chart.append(svg("text", { x: 0, y: 20, class: "chart-label" }, "No spending in this window."));
    chart.setAttribute("aria-label", "No spending in this window.");
    return;
  }
  const max = rows[0][1];
  rows.forEach(([label, value], i) => {
    const y = i * rowHeight + 4;
    const w = Math.max(2, Math.round((value / max) * barWidth));
    const g = svg("g", { class: "bar-row" });
    g.append(svg("title", {}, `${human(label)}: ${money.format(value)}`));
    g.append(svg("text", { x: labelWidth - 8, y: y + 17, "text-anchor": "end", class: "chart-label" }, human(label)));
    g.append(svg("rect", { x: labelWidth, y: y + 3, width: w, height: rowHeight - 8, rx: 3, class: "bar", "data-label": label }));
    g.append(svg("text", { x: labelWidth + w + 6, y: y + 17, class: "chart-value" }, money.format(value)));
    chart.append(g);
  });
  chart.setAttribute("aria-label", "Spend per category: " +
    rows.map(([l, v]) => `${human(l)} ${money.format(v)}`).join("; "));
}

async function api(path) {
  const key = sessionStorage.getItem(KEY_STORE) || $("api-key").value.trim();
  const res = await fetch(path, { headers: { Authorization: `Bearer ${key}` } });
  if (!res.ok) throw new Error((await problem(res)).detail);
  return res.json();
}

async function loadCategories(run) {
  try {
    const body = await api(`/v1/analyses/${encodeURIComponent(run.id)}/categories`);
    const select = $("label-filter");
    select.replaceChildren(new Option("All labels", ""));
    for (const c of body.categories) {
      select.append(new Option(`${human(c.label)} (${count.format(c.count)})`, c.label));
    }
  } catch (e) {
    $("table-status").textContent = `The labels could not be read: ${e.message}`;
  }
}

/** Reads a page of the query API; `more` continues after the rows already shown. */
async function loadTable(more) {
  const run = current;
  if (!run) return;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($("label-filter").value) params.set("label", $("label-filter").value);
  if ($("search").value.trim()) params.set("q", $("search").value.trim());
  if (more && run.cursor) params.set("cursor", run.cursor);
  const body = $("transactions").tBodies[0];
  if (!more) body.replaceChildren();
  $("table-status").textContent = "Loading transactions…";
  let page;
  try {
    page = await api(`/v1/analyses/${encodeURIComponent(run.id)}/transactions?${params}`);
  } catch (e) {
    $("table-status").textContent = `The transactions could not be read: ${e.message}`;
    return;
  }
  if (current !== run) return;
  for (const t of page.transactions) {
    const tr = document.createElement("tr");
    tr.dataset.movementId = t.movement_id;
    const cells = [t.date, t.description, reais(t.amount_cents), human(t.label), human(t.confidence)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 2) td.className = t.amount_cents < 0 ? "num out" : "num in";
      tr.append(td);
    });
    body.append(tr);
  }
  run.cursor = page.next_cursor || null;
  $("more").hidden = !run.cursor;
  const shown = body.rows.length;
  $("table-status").textContent = shown === 0
    ? "No transactions match."
    : `Showing ${count.format(shown)} transactions${run.cursor ? "; more below" : ""}.`;
}

function init() {
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) $("api-key").value = key;
  $("start").addEventListener("submit", start);
  $("filter").addEventListener("submit", (e) => {
    e.preventDefault();
    loadTable(false);
  });
  $("more").addEventListener("click", () => loadTable(true));
  setInterval(tick, 1000);
  // A reload picks the analysis up again: its stream replays from the first event.
  const saved = sessionStorage.getItem(RUN_STORE);
  if (saved) {
    try {
      follow(JSON.parse(saved));
    } catch (_) {
      sessionStorage.removeItem(RUN_STORE);
    }
  }
}

init();
