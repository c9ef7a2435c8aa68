// The usage page: tokens per day stacked by model, origin, app or key (an SVG drawn here, with a
// table of the same numbers), from GET /v1/usage?by=day&split=...; for an admin key, the keys
// too (GET/POST /v1/keys, DELETE /v1/keys/NAME, POST /v1/keys/NAME/rotate), a new secret shown
// once. A plain key sees its own usage only, as the API answers it.
import { call, key, setKey } from "./api.js";
import { apply, language, t } from "./i18n.js";
import { $, el } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const DAY_MS = 86_400_000;
const NAMED = 7; // series drawn by name; the rest are summed as "other" (colours: usage.css)
const OTHER = "\u0000other";
const state = { split: "model", days: 30, share: false, viewer: null, secret: "" };

const MARKUP = `
<h1 id="usage-title" data-i18n="usage">Usage</h1>
<p id="usage-scope" class="muted"></p>
<div id="usage-open" class="usage-callout" hidden>
  <p data-i18n="usage_open">This server has no API keys: it is open, and everyone's usage is shown here.</p>
  <p data-i18n="usage_open_later">Once keys exist, each key sees its own usage here, and an admin key sees everyone's and manages the keys (create, rotate, revoke). Create the first admin key on the server:</p>
  <pre><code>kaiyuan keys create NAME --admin</code></pre>
</div>
<form id="usage-controls" class="row">
  <fieldset class="usage-split">
    <legend data-i18n="usage_split">Split by</legend>
    <label><input type="radio" name="usage-split" value="model" checked> <span data-i18n="usage_by_model">Model</span></label>
    <label><input type="radio" name="usage-split" value="origin"> <span data-i18n="usage_by_origin">Maker's country</span></label>
    <label><input type="radio" name="usage-split" value="app"> <span data-i18n="usage_by_app">App</span></label>
    <label><input type="radio" name="usage-split" value="key"> <span data-i18n="usage_by_key">Key</span></label>
  </fieldset>
  <label for="usage-days" data-i18n="usage_period">Period</label>
  <select id="usage-days">
    <option value="7" data-i18n="usage_days_7">Last 7 days</option>
    <option value="30" selected data-i18n="usage_days_30">Last 30 days</option>
    <option value="90" data-i18n="usage_days_90">Last 90 days</option>
    <option value="365" data-i18n="usage_days_365">Last year</option>
  </select>
  <label><input type="checkbox" id="usage-share"> <span data-i18n="usage_as_share">As shares of each day (100%)</span></label>
</form>
<p id="usage-notice" class="notice" role="status" aria-live="polite"></p>
<figure id="usage-figure" class="usage-figure">
  <figcaption id="usage-caption"></figcaption>
  <div id="usage-chart"></div>
  <ul id="usage-legend" class="usage-legend"></ul>
</figure>
<p id="usage-empty" class="muted" data-i18n="usage_empty" hidden>No tokens used in this period.</p>
<div class="table usage-numbers" tabindex="0" role="region" aria-labelledby="usage-table-caption"><table id="usage-table">
  <caption id="usage-table-caption"></caption>
  <thead><tr><th scope="col" data-i18n="usage_col_day">Day (UTC)</th><th scope="col" id="usage-col-group"></th>
    <th scope="col" data-i18n="usage_col_requests">Requests</th><th scope="col" data-i18n="usage_col_prompt">Prompt tokens</th>
    <th scope="col" data-i18n="usage_col_completion">Completion tokens</th><th scope="col" data-i18n="usage_col_tokens">Tokens</th>
    <th scope="col" data-i18n="usage_col_share">Share of the day</th><th scope="col" data-i18n="usage_col_cost">Cost</th></tr></thead>
  <tbody id="usage-rows"></tbody></table></div>
<section id="keys-admin" aria-labelledby="keys-title" hidden>
  <h2 id="keys-title" data-i18n="keys_title">API keys</h2>
  <p id="keys-notice" class="notice error" role="alert"></p>
  <div id="key-secret" class="key-secret" hidden>
    <p><strong data-i18n="key_secret_warning">Copy this secret now: it is shown only this once and cannot be shown again.</strong></p>
    <label for="key-secret-value" id="key-secret-label"></label>
    <div class="row">
      <input id="key-secret-value" readonly autocomplete="off" spellcheck="false">
      <button type="button" id="key-secret-copy" data-i18n="key_copy">Copy</button>
      <button type="button" id="key-secret-done" data-i18n="key_done">Done</button>
    </div>
    <p id="key-secret-status" class="muted" role="status" aria-live="polite"></p>
  </div>
  <div class="table"><table>
    <thead><tr><th scope="col" data-i18n="keys_col_name">Name</th><th scope="col" data-i18n="keys_col_state">State</th>
      <th scope="col" data-i18n="keys_col_models">Models</th><th scope="col" data-i18n="keys_col_limits">Limits</th>
      <th scope="col" data-i18n="keys_col_budget">Budget</th><th scope="col" data-i18n="keys_col_expires">Expires</th>
      <th scope="col" data-i18n="keys_col_created">Created</th><th scope="col" data-i18n="keys_col_actions">Actions</th></tr></thead>
    <tbody id="keys-rows"></tbody></table></div>
  <h3 data-i18n="key_create_title">New key</h3>
  <form id="key-create" class="key-create">
    <label for="key-name" data-i18n="key_name">Name</label>
    <input id="key-name" required maxlength="128" pattern="[A-Za-z0-9][A-Za-z0-9_.@\\-]{0,127}" autocomplete="off" aria-describedby="key-name-help">
    <span id="key-name-help" class="muted" data-i18n="key_name_help">Letters, digits and _ . @ - (the first a letter or digit).</span>
    <fieldset class="key-models"><legend data-i18n="key_models">Models (none ticked: all)</legend><span id="key-models"></span></fieldset>
    <label for="key-rpm" data-i18n="key_rpm">Requests per minute</label><input id="key-rpm" type="number" min="1" step="1">
    <label for="key-tpm" data-i18n="key_tpm">Tokens per minute</label><input id="key-tpm" type="number" min="1" step="1">
    <label for="key-parallel" data-i18n="key_parallel">Requests at once</label><input id="key-parallel" type="number" min="1" step="1">
    <label for="key-budget" data-i18n="key_budget">Budget</label>
    <span class="row"><input id="key-budget" type="number" min="1" step="1">
      <label class="sr" for="key-budget-unit" data-i18n="key_budget_unit">Budget in</label>
      <select id="key-budget-unit"><option value="tokens" data-i18n="key_unit_tokens">tokens</option><option value="usd" data-i18n="key_unit_usd">US dollars</option></select>
      <label class="sr" for="key-period" data-i18n="key_period">Budget period</label>
      <select id="key-period"><option value="month" data-i18n="key_per_month">per month</option><option value="day" data-i18n="key_per_day">per day</option></select></span>
    <label for="key-expires" data-i18n="key_expires">Expires on (UTC)</label><input id="key-expires" type="date">
    <span></span><label><input id="key-admin" type="checkbox"> <span data-i18n="key_admin">Admin key (sees all usage, manages keys)</span></label>
    <span></span><span><button type="submit" class="primary" data-i18n="key_create">Create key</button></span>
  </form>
</section>`;

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

const number = (n, options) => new Intl.NumberFormat(language(), options).format(n);
const percent = (share) => number(share, { style: "percent", maximumFractionDigits: 1 });
const dollars = (usd) => number(usd, { style: "currency", currency: "USD", maximumFractionDigits: 4 });
// The API's times are UTC; one written without a zone is read as UTC too, not as local time.
const utc = (iso) => new Date(/(Z|[+-]\d\d:?\d\d)$/i.test(iso) ? iso : `${iso}Z`);
const date = (iso) => (iso ? utc(iso).toLocaleDateString(language(), { timeZone: "UTC" }) : "—");
const tokensOf = (row) => row.prompt_tokens + row.completion_tokens;
const label = (name) => (name === OTHER ? t("usage_other") : name ?? t("usage_unset"));

export function init(section) {
  section.innerHTML = MARKUP; // fixed text: nothing from the server goes through innerHTML
  apply(section);
  $("usage-controls").addEventListener("change", () => {
    state.split = $("usage-controls").elements["usage-split"].value;
    state.days = Number($("usage-days").value);
    state.share = $("usage-share").checked;
    refresh();
  });
  $("usage-controls").addEventListener("submit", (e) => e.preventDefault());
  $("key-create").addEventListener("submit", (e) => {
    e.preventDefault();
    createKey();
  });
  $("key-secret-copy").addEventListener("click", copySecret);
  $("key-secret-done").addEventListener("click", () => reveal(null));
  $("key-budget-unit").addEventListener("change", budgetUnit);
}

export async function show() {
  await refresh();
  if (state.viewer?.admin) await listKeys();
}

async function refresh() {
  $("usage-notice").textContent = "";
  try {
    const query = new URLSearchParams({ by: "day", split: state.split, days: String(state.days) });
    const answer = await call("GET", `/v1/usage?${query}`);
    state.viewer = answer;
    describe(answer);
    draw(answer);
  } catch (error) {
    failed($("usage-notice"), error);
  }
}

function failed(where, error) {
  where.textContent = t("error", { message: error.message });
  if (error.status === 401) document.dispatchEvent(new CustomEvent("kaiyuan:key-needed", { detail: error.message }));
}

// Whose usage this is, and what the page offers for it.
function describe(answer) {
  $("usage-open").hidden = answer.key !== null;
  $("keys-admin").hidden = !answer.admin;
  let scope = t("usage_scope_open");
  if (answer.admin) scope = t("usage_scope_admin", { key: answer.key });
  else if (answer.key !== null) scope = t("usage_scope_own", { key: answer.key });
  $("usage-scope").textContent = scope;
}

// Days from the answer's `since` to today (UTC), each series' tokens per day, the biggest first.
function series(answer) {
  const days = [];
  const today = new Date().toISOString().slice(0, 10);
  for (let d = Date.parse(answer.since.slice(0, 10)); ; d += DAY_MS) {
    const day = new Date(d).toISOString().slice(0, 10);
    days.push(day);
    if (day >= today) break;
  }
  const totals = new Map();
  for (const row of answer.data) totals.set(row.split, (totals.get(row.split) || 0) + tokensOf(row));
  const ranked = [...totals].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([name]) => name);
  const named = ranked.length > NAMED + 1 ? ranked.slice(0, NAMED) : ranked;
  const names = ranked.length > named.length ? [...named, OTHER] : named;
  const index = new Map(days.map((day, i) => [day, i]));
  const values = new Map(names.map((name) => [name, days.map(() => 0)]));
  for (const row of answer.data) {
    const i = index.get(row.group);
    if (i === undefined || !tokensOf(row)) continue;
    values.get(named.includes(row.split) ? row.split : OTHER)[i] += tokensOf(row);
  }
  const perDay = days.map((_, i) => names.reduce((sum, name) => sum + values.get(name)[i], 0));
  return { days, names, values, perDay, totals: names.map((name) => values.get(name).reduce((a, b) => a + b, 0)) };
}

function niceStep(max) {
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  return Math.max(1, [1, 2, 2.5, 5, 10].map((m) => m * power).find((step) => step >= rough)); // whole tokens
}

function draw(answer) {
  const data = series(answer);
  const groupName = t(`usage_name_${state.split}`);
  const grand = data.perDay.reduce((a, b) => a + b, 0);
  $("usage-figure").hidden = grand === 0;
  $("usage-empty").hidden = grand > 0;
  const caption = t(state.share ? "usage_chart_share" : "usage_chart", { split: groupName, days: state.days });
  $("usage-caption").textContent = caption;
  $("usage-table-caption").textContent = t("usage_table", { split: groupName, days: state.days });
  $("usage-col-group").textContent = t(`usage_by_${state.split}`);
  $("usage-chart").replaceChildren(chart(data, caption));
  $("usage-legend").replaceChildren(...data.names.map((name, i) => el("li", {},
    el("span", { className: `swatch series-${name === OTHER ? NAMED : i}` }), " ",
    el("span", { className: "name", textContent: label(name) }), " ",
    el("span", { className: "muted", textContent: t("usage_legend", { tokens: number(data.totals[i]), share: percent(data.totals[i] / grand) }) }))));
  const dayTotal = new Map(answer.data.map((r) => [r.group, 0]));
  for (const row of answer.data) dayTotal.set(row.group, dayTotal.get(row.group) + tokensOf(row));
  $("usage-rows").replaceChildren(...answer.data.map((row) => el("tr", {},
    el("td", { textContent: row.group }), el("th", { scope: "row", textContent: label(row.split) }),
    el("td", { className: "number", textContent: number(row.requests) }),
    el("td", { className: "number", textContent: number(row.prompt_tokens) }),
    el("td", { className: "number", textContent: number(row.completion_tokens) }),
    el("td", { className: "number", textContent: number(tokensOf(row)) }),
    el("td", { className: "number", textContent: dayTotal.get(row.group) ? percent(tokensOf(row) / dayTotal.get(row.group)) : "—" }),
    el("td", { className: "number", textContent: dollars(row.cost_usd || 0) }))));
}

// Stacked bars, one per day: the biggest series at the bottom; each bar says its numbers on hover
// (<title>); the table below has all of them for a screen reader.
function chart({ days, names, values, perDay }, caption) {
  // As wide as its box (so its text is the page's size on a phone too), 720 while hidden.
  const width = Math.max(320, $("usage-chart").clientWidth || 720), height = 240, left = 56, bottom = 26, top = 8;
  const plotW = width - left - 20, plotH = height - top - bottom;
  const max = state.share ? 1 : Math.max(1, ...perDay);
  const step = state.share ? 0.25 : niceStep(max);
  const ceiling = state.share ? 1 : Math.ceil(max / step) * step;
  const y = (v) => top + plotH - (v / ceiling) * plotH;
  const out = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "usage-bars" }, svg("title", {}, caption));
  for (let v = 0; v <= ceiling + step / 2; v += step) {
    out.append(svg("line", { x1: left, x2: left + plotW, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" },
        state.share ? percent(v) : number(v, { notation: "compact" })));
  }
  const slot = plotW / days.length;
  const barW = Math.max(1, slot * 0.8);
  const every = Math.ceil(days.length / Math.max(2, Math.floor(plotW / 60)));
  days.forEach((day, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let base = 0;
    names.forEach((name, s) => {
      const tokens = values.get(name)[i];
      if (!tokens) return;
      const v = state.share ? tokens / perDay[i] : tokens;
      const share = percent(tokens / perDay[i]);
      out.append(svg("rect", { x, y: y(base + v), width: barW, height: Math.max(0.5, y(base) - y(base + v)),
        class: `series-${name === OTHER ? NAMED : s}`, "data-day": day, "data-series": label(name) },
      svg("title", {}, t("usage_bar", { day, name: label(name), tokens: number(tokens), share }))));
      base += v;
    });
    if ((days.length - 1 - i) % every === 0) {
      out.append(svg("text", { x: x + barW / 2, y: height - 8, class: "axis", "text-anchor": "middle" }, day.slice(5)));
    }
  });
  return out;
}

// --- keys (admin keys only) -----------------------------------------------------------------

async function listKeys() {
  $("keys-notice").textContent = "";
  try {
    const [keys, models] = await Promise.all([call("GET", "/v1/keys"), call("GET", "/v1/models")]);
    $("keys-rows").replaceChildren(...keys.data.map(keyRow));
    const ticked = new Set([...document.querySelectorAll("#key-models input:checked")].map((c) => c.value));
    $("key-models").replaceChildren(...models.data.filter((m) => !m.alias_of).map((m) =>
      el("label", {}, el("input", { type: "checkbox", value: m.id, checked: ticked.has(m.id) }), ` ${m.id}`)));
  } catch (error) {
    failed($("keys-notice"), error);
  }
}

function keyState(k) {
  if (k.revoked_at) return t("key_revoked", { when: date(k.revoked_at) });
  if (k.expires_at && utc(k.expires_at) <= new Date()) return t("key_expired");
  return k.admin ? t("key_active_admin") : t("key_active");
}

function limits(k) {
  const parts = [];
  if (k.rpm) parts.push(t("key_limit_rpm", { n: number(k.rpm) }));
  if (k.tpm) parts.push(t("key_limit_tpm", { n: number(k.tpm) }));
  if (k.parallel) parts.push(t("key_limit_parallel", { n: number(k.parallel) }));
  for (const [model, on] of Object.entries(k.model_limits || {})) {
    parts.push(`${model}: ${Object.entries(on).map(([name, n]) => `${name} ${number(n)}`).join(", ")}`);
  }
  return parts.join(" · ") || "—";
}

function budget(k) {
  const period = t(k.period === "day" ? "key_per_day" : "key_per_month");
  if (k.budget_tokens) return `${t("key_budget_tokens", { n: number(k.budget_tokens) })} ${period}`;
  if (k.budget_usd) return `${dollars(k.budget_usd)} ${period}`;
  return "—";
}

function keyRow(k) {
  const actions = el("td");
  if (!k.revoked_at) {
    const rotate = el("button", { type: "button", className: "rotate", textContent: t("key_rotate") });
    rotate.setAttribute("aria-label", `${t("key_rotate")}: ${k.name}`);
    rotate.addEventListener("click", () => rotateKey(k.name));
    const revoke = el("button", { type: "button", className: "revoke", textContent: t("key_revoke") });
    revoke.setAttribute("aria-label", `${t("key_revoke")}: ${k.name}`);
    revoke.addEventListener("click", () => revokeKey(k.name));
    actions.append(rotate, " ", revoke);
  }
  return el("tr", { className: k.revoked_at ? "revoked" : "" },
    el("th", { scope: "row", textContent: k.name }), el("td", { textContent: keyState(k) }),
    el("td", { textContent: k.models ? k.models.join(", ") : t("key_all_models") }),
    el("td", { textContent: limits(k) }), el("td", { textContent: budget(k) }),
    el("td", { textContent: date(k.expires_at) }), el("td", { textContent: date(k.created_at) }), actions);
}

// Whole tokens, or dollars to the cent (a step counts from min: 1 token, 0.01 dollars).
function budgetUnit() {
  const usd = $("key-budget-unit").value === "usd";
  Object.assign($("key-budget"), { min: usd ? "0.01" : "1", step: usd ? "0.01" : "1" });
}

function positive(id) {
  const value = $(id).value.trim();
  return value ? Number(value) : undefined;
}

async function createKey() {
  const body = { name: $("key-name").value.trim(), period: $("key-period").value };
  const models = [...document.querySelectorAll("#key-models input:checked")].map((c) => c.value);
  if (models.length) body.models = models;
  for (const name of ["rpm", "tpm", "parallel"]) body[name] = positive(`key-${name}`);
  body[$("key-budget-unit").value === "usd" ? "budget_usd" : "budget_tokens"] = positive("key-budget");
  if ($("key-expires").value) body.expires_at = `${$("key-expires").value}T00:00:00Z`;
  if ($("key-admin").checked) body.admin = true;
  $("keys-notice").textContent = "";
  try {
    const made = await call("POST", "/v1/keys", body);
    $("key-create").reset();
    budgetUnit();
    reveal(made);
    await listKeys();
  } catch (error) {
    failed($("keys-notice"), error);
  }
}

async function rotateKey(name) {
  if (!confirm(t("key_rotate_confirm", { name }))) return;
  $("keys-notice").textContent = "";
  try {
    const made = await call("POST", `/v1/keys/${encodeURIComponent(name)}/rotate`);
    // This tab's own key: the old secret no longer works, so the tab goes on with the new one.
    if (name === state.viewer?.key) setKey(made.secret);
    reveal(made);
    await listKeys();
  } catch (error) {
    failed($("keys-notice"), error);
  }
}

async function revokeKey(name) {
  const own = name === state.viewer?.key && key();
  if (!confirm(t(own ? "key_revoke_own_confirm" : "key_revoke_confirm", { name }))) return;
  $("keys-notice").textContent = "";
  try {
    await call("DELETE", `/v1/keys/${encodeURIComponent(name)}`);
    if (own) {
      setKey("");
      document.dispatchEvent(new CustomEvent("kaiyuan:key-needed", { detail: t("key_revoked_own") }));
      return;
    }
    await listKeys();
  } catch (error) {
    failed($("keys-notice"), error);
  }
}

// A new secret, shown once: kept in this page only until Done (or another one replaces it).
function reveal(made) {
  $("key-secret").hidden = !made;
  $("key-secret-value").value = made ? made.secret : "";
  $("key-secret-label").textContent = made ? t("key_secret_for", { name: made.name }) : "";
  $("key-secret-status").textContent = "";
  if (made) $("key-secret-value").focus();
}

async function copySecret() {
  const input = $("key-secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
    $("key-secret-status").textContent = t("key_copied");
  } catch {
    input.select(); // no clipboard here (a page over plain HTTP): selected for Ctrl+C
    $("key-secret-status").textContent = t("key_copy_by_hand");
  }
}
