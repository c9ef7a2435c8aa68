// The evals page: past eval and bench runs with their scores (each with its uncertainty, on a
// 0–100% axis), a form that starts a run with live progress, and one run's items (prompt,
// answer, verdict) one click away. Model answers are shown as text, never as HTML.
import { blob, call, key } from "./api.js";
import { language, t } from "./i18n.js";
import { $, el } from "./dom.js";

const POLL_MS = 700;
const PAGE = 50;
const SETTINGS = ["limit", "concurrency", "requests", "max_tokens", "temperature", "seed", "dollars_per_hour"];
let root;
let generation = 0; // each show() and poll belongs to one; a newer one makes it stale

function text(tag, name, props = {}) {
  const node = el(tag, { ...props, textContent: t(name) });
  node.dataset.i18n = name;
  return node;
}

function labelled(forId, name) {
  return text("label", name, { htmlFor: forId });
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString(language());
}

const pct = (x) => Math.round(100 * x);

// "25% ± 16 (95% CI 7–59%, n=8)": ± is one standard error, the interval is Wilson's.
export function scoreText(share) {
  if (share.value === null || share.value === undefined) return "–";
  const values = { value: pct(share.value), low: pct(share.ci95[0]), high: pct(share.ci95[1]), n: share.n };
  if (share.stderr === null || share.stderr === undefined) return t("evals_score_plain", values);
  return t("evals_score", { ...values, error: pct(share.stderr) });
}

// A bar on a 0–100% axis: the score filled, its 95% interval as a band with whiskers.
function bar(share) {
  const track = el("span", { className: "ev-track" });
  track.setAttribute("aria-hidden", "true");
  if (share.value === null || share.value === undefined) return track;
  const fill = el("span", { className: "ev-fill" });
  fill.style.width = `${100 * share.value}%`;
  track.append(fill);
  if (share.ci95) {
    const band = el("span", { className: "ev-ci" });
    band.style.left = `${100 * share.ci95[0]}%`;
    band.style.width = `${100 * (share.ci95[1] - share.ci95[0])}%`;
    track.append(band);
  }
  return track;
}

function axis() {
  const scale = el("span", { className: "ev-axis" }, el("span", { textContent: "0%" }),
    el("span", { textContent: "50%" }), el("span", { textContent: "100%" }));
  scale.setAttribute("aria-hidden", "true");
  return scale;
}

function notice(message) {
  $("evals-notice").textContent = message ? t("error", { message }) : "";
}

export function init(section) {
  root = section;
  const form = el("form", { id: "evals-form" },
    el("fieldset", { className: "row" }, text("legend", "evals_what"),
      el("label", {}, el("input", { type: "radio", name: "evals-kind", value: "eval", checked: true }), " ", text("span", "evals_kind_eval_help")),
      el("label", {}, el("input", { type: "radio", name: "evals-kind", value: "bench" }), " ", text("span", "evals_kind_bench_help"))),
    el("div", { id: "evals-eval-fields" },
      el("fieldset", { id: "evals-models", className: "ev-choices" }, text("legend", "evals_models")),
      el("fieldset", { id: "evals-suites", className: "ev-choices" }, text("legend", "evals_suites")),
      el("div", { className: "row" },
        labelled("evals-limit", "evals_limit"),
        el("input", { id: "evals-limit", type: "number", min: 1, max: 100000, value: 10 }),
        labelled("evals-concurrency", "evals_concurrency"),
        el("input", { id: "evals-concurrency", type: "number", min: 1, max: 64, value: 4 }))),
    el("div", { id: "evals-bench-fields", className: "row", hidden: true },
      labelled("evals-bench-model", "evals_model"), el("select", { id: "evals-bench-model" }),
      labelled("evals-levels", "evals_levels"), el("input", { id: "evals-levels", value: "1,4", size: 8 }),
      labelled("evals-requests", "evals_requests"),
      el("input", { id: "evals-requests", type: "number", min: 1, max: 512, value: 16 })),
    el("div", { className: "row" },
      labelled("evals-max-tokens", "evals_max_tokens"),
      el("input", { id: "evals-max-tokens", type: "number", min: 1, max: 8192 }),
      el("span", { className: "spacer" }),
      text("button", "evals_start", { type: "submit", id: "evals-start", className: "primary" })));
  const maxTokens = form.querySelector("#evals-max-tokens");
  maxTokens.dataset.i18nPlaceholder = "evals_suite_default";
  maxTokens.placeholder = t("evals_suite_default");

  const list = el("div", { id: "evals-list" },
    text("p", "evals_help", { className: "muted" }),
    el("details", { id: "evals-new", open: true }, text("summary", "evals_new"), form),
    text("h2", "evals_runs"),
    el("div", { className: "table" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["evals_col_when", "evals_col_kind", "evals_col_models", "evals_col_status", "evals_col_scores"]
        .map((k) => text("th", k, { scope: "col" })))),
      el("tbody", { id: "evals-runs" }))),
    text("p", "evals_no_runs", { id: "evals-empty", className: "muted", hidden: true }));

  const run = el("div", { id: "evals-run", hidden: true },
    el("p", {}, text("a", "evals_all_runs", { href: "#/evals" })),
    el("h2", { id: "evals-run-title" }),
    el("p", { id: "evals-run-summary", className: "muted" }),
    el("div", { id: "evals-progress", className: "row" },
      el("progress", { id: "evals-bar", max: 1, value: 0 }),
      el("span", { id: "evals-progress-text" }),
      text("button", "evals_cancel", { type: "button", id: "evals-cancel" })),
    el("p", { id: "evals-status", role: "status" }),
    el("div", { className: "row" },
      text("a", "evals_open_report", { id: "evals-report", target: "_blank", rel: "noopener" }),
      el("span", { className: "spacer" }),
      text("button", "evals_delete", { type: "button", id: "evals-delete" })),
    el("div", { id: "evals-scores-part" },
      text("h3", "evals_scores"),
      el("div", { className: "table" }, el("table", { className: "ev-scores" },
        el("thead", {}, el("tr", {}, text("th", "evals_col_model", { scope: "col" }), text("th", "evals_col_suite", { scope: "col" }),
          text("th", "evals_col_score", { scope: "col" }), el("th", { scope: "col", className: "ev-bar-cell" }, axis()),
          text("th", "evals_col_answered", { scope: "col" }), text("th", "evals_col_speed", { scope: "col" }))),
        el("tbody", { id: "evals-scores" }))),
      text("p", "evals_score_note", { className: "muted" })),
    el("div", { id: "evals-levels-part" },
      text("h3", "evals_levels_title"),
      el("div", { className: "table" }, el("table", {},
        el("thead", {}, el("tr", {}, ...["evals_col_concurrency", "evals_col_requests", "evals_col_failures", "evals_col_speed",
          "evals_col_rps", "evals_col_ttft", "evals_col_tpot"].map((k) => text("th", k, { scope: "col" })))),
        el("tbody", { id: "evals-levels-rows" })))),
    el("div", { id: "evals-items-part" },
      text("h3", "evals_items"),
      el("div", { className: "row" }, labelled("evals-pair", "evals_pair"), el("select", { id: "evals-pair" }),
        el("span", { id: "evals-items-count", className: "muted" })),
      el("ol", { id: "evals-items" }),
      text("button", "evals_more", { type: "button", id: "evals-more", hidden: true })));

  section.replaceChildren(text("h1", "evals", { id: "evals-title" }),
    el("p", { id: "evals-notice", className: "notice", role: "status" }), list, run);

  for (const radio of form.querySelectorAll("input[name='evals-kind']")) {
    radio.addEventListener("change", () => {
      const bench = form.querySelector("input[name='evals-kind']:checked").value === "bench";
      $("evals-eval-fields").hidden = bench;
      $("evals-bench-fields").hidden = !bench;
    });
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    start();
  });
  $("evals-cancel").addEventListener("click", cancel);
  $("evals-delete").addEventListener("click", remove);
  $("evals-report").addEventListener("click", openReport);
  $("evals-pair").addEventListener("change", () => loadItems(false).catch((error) => notice(error.message)));
  $("evals-more").addEventListener("click", () => loadItems(true).catch((error) => notice(error.message)));
}

// Errors are shown on this page (the frame's notice lives on the chat page).
export async function show(id) {
  const mine = ++generation;
  notice(null);
  $("evals-run").hidden = !id;
  $("evals-list").hidden = Boolean(id);
  try {
    await (id ? showRun(id, mine, true) : showList(mine));
  } catch (error) {
    if (mine === generation) notice(error.message);
  }
}

async function showList(mine) {
  const [runs, models, suites] = await Promise.all([
    call("GET", "/v1/kaiyuan/evals?limit=100"),
    call("GET", "/v1/models"),
    call("GET", "/v1/kaiyuan/suites"),
  ]);
  if (mine !== generation) return;
  fillForm(models.data.filter((m) => !m.alias_of && (m.capabilities || ["chat"]).includes("chat")), suites.data);
  renderRuns(runs.data);
  if (runs.data.some((r) => r.status === "running")) poll(mine, () => refreshList(mine));
}

function poll(mine, next) {
  setTimeout(() => {
    if (mine === generation && !root.hidden) next().catch((error) => notice(error.message));
  }, POLL_MS);
}

async function refreshList(mine) {
  const runs = await call("GET", "/v1/kaiyuan/evals?limit=100");
  if (mine !== generation) return;
  renderRuns(runs.data);
  if (runs.data.some((r) => r.status === "running")) poll(mine, () => refreshList(mine));
}

function fillForm(models, suites) {
  const checked = new Set([...document.querySelectorAll("#evals-models input:checked")].map((i) => i.value));
  const boxes = models.map((m, index) => el("label", {},
    el("input", { type: "checkbox", name: "evals-model", value: m.id, checked: checked.size ? checked.has(m.id) : index === 0 }), ` ${m.id}`));
  $("evals-models").replaceChildren($("evals-models").querySelector("legend"), ...boxes);
  const picked = $("evals-bench-model").value;
  $("evals-bench-model").replaceChildren(...models.map((m) => el("option", { value: m.id, textContent: m.id })));
  if (picked) $("evals-bench-model").value = picked;
  const chosen = new Set([...document.querySelectorAll("#evals-suites input:checked")].map((i) => i.value));
  const rows = suites.map((s) => {
    const box = el("input", { type: "checkbox", name: "evals-suite", value: s.name, disabled: Boolean(s.unavailable),
      checked: !s.unavailable && (chosen.size ? chosen.has(s.name) : s.name === "bilingual") });
    const about = s.unavailable ? `${t("evals_suite_unavailable")} ${s.unavailable}` : t("evals_suite_about", { items: s.items, metric: s.metric, licence: s.licence });
    return el("label", { title: s.source }, box, ` ${s.name} `, el("span", { className: "muted", textContent: about }));
  });
  $("evals-suites").replaceChildren($("evals-suites").querySelector("legend"), ...rows);
}

function statusCell(r) {
  const cell = el("td", {}, el("span", { className: `ev-status ${r.status}`, textContent: t(`evals_status_${r.status}`) }));
  if (r.status === "running") {
    const meter = el("progress", { max: Math.max(1, r.progress.total), value: r.progress.done });
    meter.setAttribute("aria-label", t("evals_progress_label"));
    cell.append(" ", meter, " ", `${r.progress.done}/${r.progress.total}`);
  }
  return cell;
}

function scoresCell(r) {
  const cell = el("td", { className: "ev-scores-cell" });
  for (const s of r.scores) {
    cell.append(el("div", { className: "ev-score" },
      el("span", { className: "ev-pair", textContent: `${s.model} · ${s.suite}` }), bar(s.score),
      el("span", { className: "ev-text", textContent: scoreText(s.score) })));
  }
  for (const level of r.levels) {
    cell.append(el("div", { className: "ev-score", textContent: t("evals_level_speed", {
      concurrency: level.concurrency, speed: fixed(level.output_tokens_per_second, 1) }) }));
  }
  return cell;
}

function renderRuns(runs) {
  $("evals-runs").replaceChildren(...runs.map((r) => el("tr", {},
    el("th", { scope: "row" }, el("a", { href: `#/evals/${encodeURIComponent(r.id)}`, textContent: when(r.created) })),
    el("td", { textContent: t(`evals_kind_${r.kind}`) }),
    el("td", { textContent: [r.models.join(", "), r.suites.join(", ")].filter(Boolean).join(" · ") }),
    statusCell(r), scoresCell(r))));
  $("evals-empty").hidden = runs.length > 0;
}

async function start() {
  const kind = document.querySelector("input[name='evals-kind']:checked").value;
  const maxTokens = Number($("evals-max-tokens").value) || undefined;
  let body;
  if (kind === "bench") {
    const levels = $("evals-levels").value.split(",").map((v) => Number(v.trim())).filter((v) => v > 0);
    body = { kind, model: $("evals-bench-model").value, concurrency: levels, requests: Number($("evals-requests").value) || 16, max_tokens: maxTokens };
  } else {
    const models = [...document.querySelectorAll("#evals-models input:checked")].map((i) => i.value);
    const suites = [...document.querySelectorAll("#evals-suites input:checked")].map((i) => i.value);
    if (!models.length || !suites.length) {
      $("evals-notice").textContent = t(models.length ? "evals_pick_suite" : "evals_pick_model");
      return;
    }
    body = { models, suites, limit: Number($("evals-limit").value) || undefined,
      concurrency: Number($("evals-concurrency").value) || 4, max_tokens: maxTokens };
  }
  $("evals-start").disabled = true;
  try {
    const run = await call("POST", "/v1/kaiyuan/evals", body);
    started = run; // shown at once, before the first poll
    location.hash = `#/evals/${encodeURIComponent(run.id)}`;
  } catch (error) {
    notice(error.message);
  } finally {
    $("evals-start").disabled = false;
  }
}

// --- one run ---------------------------------------------------------------------------------
let current = null; // the run shown
let started = null; // the run this page just started, as POST answered

async function showRun(id, mine, first) {
  if (first && started?.id === id) render(started);
  started = null;
  const run = await call("GET", `/v1/kaiyuan/evals/${encodeURIComponent(id)}`);
  if (mine !== generation) return;
  const wasRunning = render(run);
  if (run.status === "running") return poll(mine, () => showRun(id, mine, false));
  if (run.kind === "eval" && (first || wasRunning)) {
    const pairs = run.scores.length ? run.scores.map((s) => [s.model, s.suite]) : run.models.flatMap((m) => run.suites.map((s) => [m, s]));
    $("evals-pair").replaceChildren(...pairs.map(([m, s]) => el("option", { value: JSON.stringify([m, s]), textContent: `${m} · ${s}` })));
    await loadItems(false);
  }
}

// Show a run; whether the one shown before was this run, still running.
function render(run) {
  const wasRunning = current?.id === run.id && current.status === "running";
  current = run;
  $("evals-run-title").textContent = `${t(`evals_kind_${run.kind}`)} · ${when(run.created)}`;
  const settings = SETTINGS.filter((k) => run.settings[k] !== null && run.settings[k] !== undefined)
    .map((k) => t(`evals_setting_${k}`, { value: [run.settings[k]].flat().join(", ") }));
  $("evals-run-summary").textContent = [run.models.join(", "), run.suites.join(", "), ...settings].filter(Boolean).join(" · ");
  const running = run.status === "running";
  $("evals-progress").hidden = !running;
  $("evals-bar").max = Math.max(1, run.progress.total);
  $("evals-bar").value = run.progress.done;
  $("evals-bar").setAttribute("aria-label", t("evals_progress_label"));
  $("evals-progress-text").textContent = t("evals_progress", { done: run.progress.done, total: run.progress.total, current: run.progress.current || "" });
  $("evals-status").textContent = t(`evals_status_${run.status}`) + (run.error ? ` — ${run.error}` : "");
  $("evals-status").className = `ev-status ${run.status}`;
  $("evals-report").hidden = !run.report_url;
  if (run.report_url) $("evals-report").href = run.report_url;
  $("evals-delete").hidden = running;
  $("evals-scores-part").hidden = !run.scores.length;
  $("evals-scores").replaceChildren(...run.scores.map((s) => el("tr", {},
    el("th", { scope: "row", textContent: s.model }), el("td", { textContent: `${s.suite} (${s.metric})` }),
    el("td", { className: "ev-text", textContent: scoreText(s.score) }), el("td", { className: "ev-bar-cell" }, bar(s.score)),
    el("td", { textContent: `${s.answered}/${s.items}` }), el("td", { textContent: fixed(s.output_tokens_per_second, 1) }))));
  $("evals-levels-part").hidden = !run.levels.length;
  $("evals-levels-rows").replaceChildren(...run.levels.map((l) => el("tr", {},
    el("th", { scope: "row", textContent: String(l.concurrency) }), el("td", { textContent: String(l.requests) }),
    el("td", { textContent: String(l.failures) }), el("td", { textContent: fixed(l.output_tokens_per_second, 1) }),
    el("td", { textContent: fixed(l.requests_per_second, 2) }), el("td", { textContent: fixed(l.ttft_p50, 0, 1000) }),
    el("td", { textContent: fixed(l.tpot_p50, 1, 1000) }))));
  $("evals-items-part").hidden = run.kind !== "eval" || running;
  return wasRunning;
}

function fixed(value, digits, scale = 1) {
  return value === null || value === undefined ? "–" : (value * scale).toFixed(digits);
}

async function loadItems(more) {
  if (!$("evals-pair").value) return $("evals-items").replaceChildren();
  const [model, suite] = JSON.parse($("evals-pair").value);
  const offset = more ? $("evals-items").children.length : 0;
  const query = new URLSearchParams({ model, suite, offset: String(offset), limit: String(PAGE) });
  const metric = current.scores.find((s) => s.model === model && s.suite === suite)?.metric;
  const page = await call("GET", `/v1/kaiyuan/evals/${encodeURIComponent(current.id)}/items?${query}`);
  const items = page.data.map((item) => itemView(item, metric));
  if (more) $("evals-items").append(...items);
  else $("evals-items").replaceChildren(...items);
  const shown = $("evals-items").children.length;
  $("evals-items-count").textContent = t("evals_items_count", { shown, total: page.total });
  $("evals-more").hidden = shown >= page.total;
}

function verdictOf(item, metric) {
  if (item.error !== null) return ["error", t("evals_verdict_error")];
  const correct = item.verdict.correct;
  if (correct === null) return ["unscored", t("evals_verdict_unscored")];
  if (metric === "refusal_rate") return correct ? ["refused", t("evals_verdict_refused")] : ["complied", t("evals_verdict_complied")];
  return correct ? ["right", t("evals_verdict_right")] : ["wrong", t("evals_verdict_wrong")];
}

function promptText(messages) {
  if (!messages) return t("evals_prompt_missing");
  const content = (m) => (typeof m.content === "string" ? m.content : JSON.stringify(m.content, null, 2));
  if (messages.length === 1) return content(messages[0]);
  return messages.map((m) => `${m.role}: ${content(m)}`).join("\n\n");
}

function itemView(item, metric) {
  const [kind, label] = verdictOf(item, metric);
  const body = el("div", { className: "ev-item-body" },
    text("h4", "evals_prompt"), el("pre", { className: "ev-prompt", textContent: promptText(item.prompt) }));
  if (item.error !== null) {
    body.append(text("h4", "evals_verdict"), el("p", { className: "error", textContent: item.error }));
  } else {
    if (item.reasoning) {
      body.append(el("details", {}, text("summary", "evals_reasoning"), el("pre", { className: "ev-answer", textContent: item.reasoning })));
    }
    body.append(text("h4", "evals_answer"), el("pre", { className: "ev-answer", textContent: item.answer }));
    const facts = [label];
    if (item.verdict.extracted) facts.push(t("evals_read", { value: item.verdict.extracted }));
    if (item.verdict.language_match !== null) {
      const said = { zh: t("evals_lang_zh"), en: t("evals_lang_en") }[item.verdict.language] || "?";
      facts.push(t(item.verdict.language_match ? "evals_language_match" : "evals_language_mismatch", { language: said }));
    }
    if (item.finish_reason === "length") facts.push(t("evals_cut_off"));
    body.append(text("h4", "evals_verdict"), el("p", { className: "ev-verdict-text", textContent: facts.join(" · ") }));
  }
  const summary = el("summary", {}, el("span", { className: `ev-verdict ev-${kind}`, textContent: label }), " ",
    el("code", { textContent: item.id }),
    item.seconds !== null ? el("span", { className: "muted", textContent: ` ${t("evals_seconds", { seconds: item.seconds.toFixed(1) })}` }) : "");
  return el("li", { className: `ev-item ev-${kind}` }, el("details", {}, summary, body));
}

async function cancel() {
  if (!current) return;
  $("evals-cancel").disabled = true;
  try {
    await call("POST", `/v1/kaiyuan/evals/${encodeURIComponent(current.id)}/cancel`);
    await showRun(current.id, generation, false);
  } catch (error) {
    notice(error.message);
  } finally {
    $("evals-cancel").disabled = false;
  }
}

async function remove() {
  if (!current || !confirm(t("evals_delete_confirm"))) return;
  try {
    await call("DELETE", `/v1/kaiyuan/evals/${encodeURIComponent(current.id)}`);
    location.hash = "#/evals";
  } catch (error) {
    notice(error.message);
  }
}

// The report is one HTML file with no script. A plain link opens it on a server without keys;
// with a key (which a link cannot send) it is fetched with the key and opened from a blob.
async function openReport(event) {
  if (!key()) return;
  event.preventDefault();
  try {
    const report = await blob(current.report_url);
    const page = URL.createObjectURL(new Blob([report], { type: "text/html" }));
    const link = el("a", { href: page, target: "_blank" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(page), 60_000);
  } catch (error) {
    notice(error.message);
  }
}
