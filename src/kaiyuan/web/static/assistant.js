// The assistant page: an agent run through the Responses API (POST /v1/responses, streamed and
// stored, each task continuing the last with previous_response_id) with the tools this server
// offers (GET /v1/kaiyuan/tools) as toggles. Each tool call is a live card (the tool, its
// arguments, running/done/error, its result, all as text); the answer is Markdown through
// markdown.js, its url_citation annotations numbered links to their sources. An MCP call that
// needs the user's approval (mcp_approval_request) is a card with Approve and Deny, answered
// with mcp_approval_response input items. Beside it, the documents file_search reads
// (GET|POST /v1/kaiyuan/documents, DELETE …/{id}).
import { ApiError, call, stream, upload } from "./api.js";
import { apply, language, t } from "./i18n.js";
import { render } from "./markdown.js";
import { $, el } from "./dom.js";

const TOOLS_KEY = "kaiyuan.assistant.tools";
const MODEL_KEY = "kaiyuan.assistant.model";
const DOCUMENTS = "/v1/kaiyuan/documents";
const ACCEPT = ".pdf,.docx,.md,.markdown,.txt,.text,.rst,.html,.htm";
const state = { models: [], offered: null, turns: [], previous: null, running: null };

const MARKUP = `
<div class="assistant-layout">
<div class="assistant-main">
  <h1 id="assistant-title" data-i18n="assistant">Assistant</h1>
  <p class="muted" data-i18n="assistant_help">An agent that searches the web, runs code and reads your documents to do a task, and shows each step.</p>
  <div class="toolbar">
    <label for="assistant-model" data-i18n="model">Model</label>
    <select id="assistant-model"></select>
    <span class="spacer"></span>
    <button type="button" id="assistant-new" data-i18n="assistant_new">New task</button>
  </div>
  <p id="assistant-hint" class="muted"></p>
  <fieldset class="assistant-tools">
    <legend data-i18n="assistant_tools">Tools</legend>
    <span id="assistant-tool-list"></span>
  </fieldset>
  <ul id="assistant-unavailable" class="muted assistant-unavailable"></ul>
  <p id="assistant-notice" class="notice" role="status" aria-live="polite"></p>
  <ol id="assistant-turns" class="assistant-turns"></ol>
  <form id="assistant-composer" class="assistant-composer">
    <label class="sr" for="assistant-input" data-i18n="assistant_task">Task</label>
    <textarea id="assistant-input" rows="2" data-i18n-placeholder="assistant_placeholder" placeholder="Task"></textarea>
    <div class="row">
      <span class="spacer"></span>
      <button type="submit" id="assistant-send" class="primary" data-i18n="send">Send</button>
      <button type="button" id="assistant-stop" hidden data-i18n="stop">Stop</button>
    </div>
  </form>
</div>
<section id="assistant-docs" class="assistant-docs" aria-labelledby="assistant-docs-title">
  <h2 id="assistant-docs-title" tabindex="-1" data-i18n="assistant_documents">Your documents</h2>
  <p class="muted" data-i18n="assistant_documents_help">PDF, Word (DOCX), Markdown or text. The “Your documents” tool searches them.</p>
  <label class="button" for="assistant-upload" data-i18n="assistant_upload">Upload files</label>
  <input id="assistant-upload" type="file" multiple class="sr" accept="${ACCEPT}">
  <p id="assistant-docs-notice" class="notice" role="status" aria-live="polite"></p>
  <ul id="assistant-doc-list" class="assistant-doc-list"></ul>
  <p id="assistant-docs-empty" class="muted" data-i18n="assistant_no_documents" hidden>No documents yet.</p>
</section>
</div>`;

function failed(where, error) {
  where.textContent = t("error", { message: error.message });
  if (error.status === 401) document.dispatchEvent(new CustomEvent("kaiyuan:key-needed", { detail: error.message }));
}

export function init(section) {
  section.innerHTML = MARKUP; // fixed text: nothing from the server goes through innerHTML
  apply(section);
  $("assistant-composer").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  $("assistant-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  $("assistant-stop").addEventListener("click", () => state.running?.abort());
  $("assistant-new").addEventListener("click", newTask);
  $("assistant-model").addEventListener("change", describeModel);
  $("assistant-tool-list").addEventListener("change", () => localStorage.setItem(TOOLS_KEY, JSON.stringify(chosen())));
  $("assistant-upload").addEventListener("change", async (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    await uploadFiles(files);
  });
}

// Shown again after a language switch, so everything built with t() is built again.
export async function show(id) {
  $("assistant-notice").textContent = "";
  paintAll();
  await Promise.all([loadModels(), loadTools(), listDocuments()]);
  if (id === "documents") $("assistant-docs-title").focus();
}

// --- model and tools ----------------------------------------------------------------------
async function loadModels() {
  try {
    const list = await call("GET", "/v1/models");
    state.models = list.data.filter((m) => (m.capabilities || []).includes("chat") && !m.alias_of);
  } catch (error) {
    return failed($("assistant-notice"), error);
  }
  const select = $("assistant-model");
  const wanted = select.value || localStorage.getItem(MODEL_KEY) || localStorage.getItem("kaiyuan.model");
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.id, textContent: m.id })));
  if (state.models.some((m) => m.id === wanted)) select.value = wanted;
  if (!state.models.length) $("assistant-notice").textContent = t("no_models");
  describeModel();
}

function describeModel() {
  const m = state.models.find((x) => x.id === $("assistant-model").value);
  $("assistant-hint").textContent = m && !(m.capabilities || []).includes("tools") ? t("assistant_model_no_tools", { model: m.id }) : "";
  if (m) localStorage.setItem(MODEL_KEY, m.id);
}

const BUILTIN = {
  web_search: { label: () => t("assistant_tool_web_search"), spec: () => ({ type: "web_search" }) },
  code_interpreter: { label: () => t("assistant_tool_code"), spec: () => ({ type: "code_interpreter", container: { type: "auto" } }) },
  file_search: { label: () => t("assistant_tool_files"), spec: () => ({ type: "file_search", vector_store_ids: ["local"] }) },
};

async function loadTools() {
  try {
    state.offered = await call("GET", "/v1/kaiyuan/tools");
  } catch (error) {
    state.offered = null;
    $("assistant-tool-list").replaceChildren();
    return failed($("assistant-notice"), error);
  }
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(TOOLS_KEY) || "null");
  } catch {
    /* not ours any more: the defaults */
  }
  const checked = (name, fallback) => (Array.isArray(saved) ? saved.includes(name) : fallback);
  const box = (name, label, on, title) => {
    const input = el("input", { type: "checkbox", value: name, checked: on });
    return el("label", { className: "assistant-tool", title: title || "" }, input, " ", label);
  };
  const offered = state.offered;
  $("assistant-tool-list").replaceChildren(
    ...offered.builtin.filter((type) => BUILTIN[type]).map((type) => box(type, BUILTIN[type].label(), checked(type, true))),
    ...offered.mcp.map((s) => box(`mcp:${s.label}`, t("assistant_tool_mcp", { label: s.label }), checked(`mcp:${s.label}`, false),
      s.origin ? `${s.transport} · ${s.origin}` : s.transport)),
  );
  $("assistant-unavailable").replaceChildren(...offered.unavailable.filter((u) => BUILTIN[u.type]).map((u) =>
    el("li", { textContent: t("assistant_tool_unavailable", { tool: BUILTIN[u.type].label(), reason: u.reason }) })));
}

function chosen() {
  return [...$("assistant-tool-list").querySelectorAll("input:checked")].map((input) => input.value);
}

// The tools ticked, and the MCP servers of any approval being answered (the request must offer
// a tool again for its call to run).
function toolSpecs(servers = []) {
  const names = chosen();
  for (const label of servers) if (!names.includes(`mcp:${label}`)) names.push(`mcp:${label}`);
  return names.map((name) => (name.startsWith("mcp:") ? { type: "mcp", server_label: name.slice(4) } : BUILTIN[name].spec()));
}

// --- a run --------------------------------------------------------------------------------
function newTask() {
  state.running?.abort();
  state.turns = [];
  state.previous = null;
  $("assistant-notice").textContent = "";
  paintAll();
  $("assistant-input").focus();
}

async function submit() {
  const input = $("assistant-input");
  const text = input.value.trim();
  if (state.running || !text) return;
  const model = $("assistant-model").value;
  if (!model) return ($("assistant-notice").textContent = t("no_models"));
  input.value = "";
  await run({ task: text }, text);
}

// One response: `input` is the request's (text, or input items); the turn shows `shown`.
async function run(shown, input, servers = []) {
  const turn = { ...shown, model: $("assistant-model").value, items: [], answers: {}, status: "running", error: null, reason: null, id: null };
  state.turns.push(turn);
  if (state.turns.length > 1) paint(state.turns.at(-2)); // its approval requests close
  paint(turn);
  const controller = new AbortController();
  state.running = controller;
  running(true);
  const body = { model: turn.model, input, stream: true, store: true, tools: toolSpecs(servers) };
  if (state.previous) body.previous_response_id = state.previous;
  try {
    await stream("/v1/responses", body, (event) => {
      absorb(turn, event);
      paint(turn);
    }, controller.signal);
    if (turn.status === "running") turn.status = "stopped"; // the stream ended without an end
  } catch (error) {
    if (error.name === "AbortError") turn.status = "stopped";
    else {
      turn.status = "failed";
      turn.error = error.message;
      if (error instanceof ApiError && error.status === 401) document.dispatchEvent(new CustomEvent("kaiyuan:key-needed", { detail: error.message }));
    }
  } finally {
    state.running = null;
    running(false);
  }
  paint(turn);
}

// A stream event into the turn's state: output items by their place in the output.
function absorb(turn, event) {
  const at = event.output_index;
  switch (event.type) {
    case "response.created":
      turn.id = event.response.id;
      break;
    case "response.output_item.added":
    case "response.output_item.done":
      turn.items[at] = structuredClone(event.item);
      if (event.item.type === "message" && !turn.items[at].content.length) turn.items[at].content = [{ type: "output_text", text: "", annotations: [] }];
      break;
    case "response.output_text.delta":
      if (turn.items[at]) turn.items[at].content[event.content_index].text += event.delta;
      break;
    case "response.output_text.done":
      if (turn.items[at]) turn.items[at].content[event.content_index].text = event.text;
      break;
    case "response.content_part.done":
      if (turn.items[at]) turn.items[at].content[event.content_index] = event.part;
      break;
    case "response.completed":
    case "response.incomplete":
    case "response.failed": {
      const response = event.response;
      turn.items = response.output;
      turn.status = response.status;
      turn.reason = response.incomplete_details?.reason || null;
      turn.error = response.error?.message || null;
      if (response.status !== "failed") state.previous = response.id;
      break;
    }
    default:
      if (/^response\.\w+\.in_progress$/.test(event.type) && turn.items[at]) turn.items[at].status = "in_progress";
  }
}

function running(on) {
  $("assistant-send").hidden = on;
  $("assistant-stop").hidden = !on;
  if (!on) $("assistant-input").focus();
}

// --- drawing ------------------------------------------------------------------------------
function paintAll() {
  $("assistant-turns").replaceChildren(...state.turns.map(view));
}

function paint(turn) {
  const index = state.turns.indexOf(turn);
  if (index < 0) return; // a new task was started meanwhile
  const fresh = view(turn, index);
  const old = $("assistant-turns").querySelector(`:scope > li[data-turn="${index}"]`);
  if (old) old.replaceWith(fresh);
  else $("assistant-turns").append(fresh);
  fresh.scrollIntoView({ block: "end" });
}

function view(turn, index) {
  const item = el("li", { className: "turn" });
  item.dataset.turn = index;
  item.dataset.status = turn.status;
  item.append(el("div", { className: "who", textContent: t("you") }), el("div", { className: "task", textContent: turn.task }));
  const cards = turn.items.filter((x) => x && x.type !== "message").map((x) => card(x, turn));
  if (cards.length) item.append(el("ol", { className: "tool-cards" }, ...cards));
  for (const message of turn.items.filter((x) => x && x.type === "message")) item.append(...answer(message, turn.model));
  if (turn.status === "running" && !turn.items.some((x) => x?.type === "message")) {
    item.append(el("p", { className: "muted working", textContent: t("assistant_working") }));
  }
  if (turn.status === "stopped") item.append(el("p", { className: "muted", textContent: t("stopped") }));
  if (turn.status === "incomplete") item.append(el("p", { className: "muted incomplete", textContent: (REASON[turn.reason] || REASON.max_steps)() }));
  if (turn.error) item.append(el("p", { className: "error", textContent: t("error", { message: turn.error }) }));
  if (turn.id && turn.status !== "running") {
    const run = turn.id.replace(/^resp_/, "");
    item.append(el("p", { className: "muted" }, el("a", { href: `#/traces/${encodeURIComponent(run)}`, textContent: t("assistant_trace") })));
  }
  return item;
}

const REASON = {
  max_output_tokens: () => t("assistant_cut_tokens"),
  max_steps: () => t("assistant_cut_steps"),
  max_tool_calls: () => t("assistant_cut_tool_calls"),
  max_seconds: () => t("assistant_cut_seconds"),
};

const STATE = {
  in_progress: ["running", () => t("assistant_state_running")],
  completed: ["done", () => t("assistant_state_done")],
  failed: ["error", () => t("assistant_state_error")],
};

function pretty(json) {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return String(json ?? "");
  }
}

function field(label, value, className = "") {
  return el("div", { className: `tool-field ${className}` }, el("span", { className: "muted", textContent: `${label}: ` }), el("code", { textContent: String(value ?? "") }));
}

function block(label, text, className) {
  return el("div", { className: `tool-block ${className}` }, el("div", { className: "muted", textContent: label }), el("pre", { textContent: text }));
}

// One tool call: what it is, what it was given, how it went, what it gave back; all text.
function card(x, turn) {
  if (x.type === "mcp_approval_request") return approval(x, turn);
  const [stateName, stateLabel] = STATE[x.status] || STATE.in_progress;
  const node = el("li", { className: "tool-card" });
  node.dataset.type = x.type;
  node.dataset.state = stateName;
  node.dataset.id = x.id;
  const head = el("div", { className: "tool-head" }, el("strong", { className: "tool-name" }), " ", el("span", { className: `badge state ${stateName}`, textContent: stateLabel() }));
  node.append(head);
  const name = head.querySelector(".tool-name");
  if (x.type === "web_search_call") {
    const page = x.action?.type === "open_page";
    name.textContent = page ? t("assistant_card_open_page") : t("assistant_card_search");
    node.append(page ? field(t("assistant_url"), x.action.url, "tool-args") : field(t("assistant_query"), x.action?.query, "tool-args"));
  } else if (x.type === "code_interpreter_call") {
    name.textContent = t("assistant_card_code");
    node.append(block(t("assistant_code"), String(x.code ?? ""), "tool-args"));
    const logs = (x.outputs || []).map((o) => o.logs ?? "").join("\n");
    if (x.outputs && !x.error) node.append(block(t("assistant_logs"), logs || t("assistant_no_output"), "tool-result"));
  } else if (x.type === "file_search_call") {
    name.textContent = t("assistant_card_files");
    node.append(field(t("assistant_query"), (x.queries || []).join(" · "), "tool-args"));
    if (x.results) {
      const list = el("ol", { className: "tool-result file-results" }, ...x.results.map((r) => el("li", {},
        el("strong", { textContent: r.filename || r.file_id || "" }),
        r.score === null || r.score === undefined ? "" : el("span", { className: "muted", textContent: ` (${Number(r.score).toFixed(2)})` }),
        el("div", { className: "snippet", textContent: (r.text || "").slice(0, 400) }))));
      node.append(x.results.length ? list : el("p", { className: "muted tool-result", textContent: t("assistant_no_results") }));
    }
  } else if (x.type === "mcp_call") {
    name.textContent = t("assistant_card_mcp", { server: x.server_label, tool: x.name });
    node.append(block(t("arguments"), pretty(x.arguments), "tool-args"));
    if (x.output !== null && x.output !== undefined) node.append(block(t("result"), x.output, "tool-result"));
  } else {
    name.textContent = x.name || x.type;
    if (x.arguments !== undefined) node.append(block(t("arguments"), pretty(x.arguments), "tool-args"));
  }
  if (x.error) node.append(el("p", { className: "error", textContent: t("error", { message: x.error }) }));
  return node;
}

// A call waiting for the user: Approve or Deny while it is the conversation's last response;
// once every request of the response is answered, the answers go in one request.
function approval(x, turn) {
  const answered = turn.answers[x.id];
  const open = answered === undefined && !state.running && state.turns.at(-1) === turn && state.previous === turn.id;
  let [stateName, label] = ["approval", t("assistant_state_approval")];
  if (answered === true) [stateName, label] = ["approved", t("assistant_state_approved")];
  else if (answered === false) [stateName, label] = ["denied", t("assistant_state_denied")];
  else if (!open) [stateName, label] = ["unanswered", t("assistant_state_unanswered")];
  const node = el("li", { className: "tool-card approval" });
  Object.assign(node.dataset, { type: x.type, state: stateName, id: x.id });
  node.append(
    el("div", { className: "tool-head" }, el("strong", { className: "tool-name", textContent: t("assistant_card_mcp", { server: x.server_label, tool: x.name }) }),
      " ", el("span", { className: `badge state ${stateName}`, textContent: label })),
    block(t("arguments"), pretty(x.arguments), "tool-args"));
  if (open) {
    const approve = el("button", { type: "button", className: "primary approve", textContent: t("assistant_approve") });
    const deny = el("button", { type: "button", className: "deny", textContent: t("assistant_deny") });
    approve.addEventListener("click", () => decide(turn, x, true));
    deny.addEventListener("click", () => decide(turn, x, false));
    node.append(el("p", { className: "muted", textContent: t("assistant_approval_help") }), el("div", { className: "row" }, approve, deny));
  }
  return node;
}

function decide(turn, request, approve) {
  if (state.running) return;
  turn.answers[request.id] = approve;
  paint(turn);
  const requests = turn.items.filter((x) => x?.type === "mcp_approval_request");
  if (!requests.every((r) => r.id in turn.answers)) return;
  const input = requests.map((r) => ({ type: "mcp_approval_response", approval_request_id: r.id, approve: turn.answers[r.id] }));
  const shown = requests.map((r) => t(turn.answers[r.id] ? "assistant_approved" : "assistant_denied", { tool: `${r.server_label} · ${r.name}` }));
  run({ task: shown.join("\n") }, input, [...new Set(requests.map((r) => r.server_label))]);
}

// The answer as Markdown (sanitised by render), then its citations: the [n] in the text become
// links to the sources, which are listed below it, numbered as the text numbers them.
function answer(message, model) {
  const part = message.content?.[0] || { text: "", annotations: [] };
  const body = el("div", { className: "content answer" });
  render(body, part.text || "");
  const sources = cited(part);
  if (sources.size) link(body, sources);
  const out = [el("div", { className: "who", textContent: model || t("assistant") }), body];
  if (sources.size) {
    const list = el("ol", { className: "citations" });
    for (const [n, s] of [...sources].sort((a, b) => a[0] - b[0])) list.append(el("li", { value: n }, source(s)));
    out.push(el("div", { className: "sources" }, el("div", { className: "muted", textContent: t("assistant_sources") }), list));
  }
  return out;
}

function cited(part) {
  const sources = new Map();
  let next = 1;
  for (const a of part.annotations || []) {
    if (a.type !== "url_citation") continue;
    const mark = /^\[(\d+)\]$/.exec((part.text || "").slice(a.start_index, a.end_index));
    const n = mark ? Number(mark[1]) : next;
    next = Math.max(next, n + 1);
    if (!sources.has(n)) sources.set(n, { url: a.url, title: a.title || a.url });
  }
  return sources;
}

function web(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed : null;
  } catch {
    return null;
  }
}

function source(s) {
  const url = web(s.url);
  if (!url) return el("span", {}, el("span", { textContent: s.title }), " ", el("span", { className: "muted", textContent: t("assistant_local_source") }));
  const a = el("a", { href: url.href, textContent: s.title, target: "_blank", rel: "noopener noreferrer" });
  return el("span", {}, a, " ", el("span", { className: "muted", textContent: url.host }));
}

function link(body, sources) {
  const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT);
  const texts = [];
  while (walker.nextNode()) if (!walker.currentNode.parentElement.closest("a, code, pre")) texts.push(walker.currentNode);
  for (const text of texts) {
    const parts = text.data.split(/(\[\d+\])/);
    if (parts.length === 1) continue;
    text.replaceWith(...parts.map((piece) => {
      const n = /^\[(\d+)\]$/.exec(piece);
      const url = n && sources.has(Number(n[1])) ? web(sources.get(Number(n[1])).url) : null;
      if (!url) return piece;
      return el("a", { className: "cite", href: url.href, textContent: piece, target: "_blank", rel: "noopener noreferrer", title: sources.get(Number(n[1])).title });
    }));
  }
}

// --- documents ----------------------------------------------------------------------------
async function listDocuments() {
  let list;
  try {
    list = await call("GET", DOCUMENTS);
  } catch (error) {
    $("assistant-doc-list").replaceChildren();
    return failed($("assistant-docs-notice"), error);
  }
  const when = (seconds) => new Date(seconds * 1000).toLocaleDateString(language());
  $("assistant-doc-list").replaceChildren(...list.data.map((d) => {
    const remove = el("button", { type: "button", className: "remove", textContent: t("remove") });
    remove.setAttribute("aria-label", `${t("remove")}: ${d.filename}`);
    remove.addEventListener("click", () => removeDocument(d));
    return el("li", { className: "document" },
      el("div", { className: "doc-title", textContent: d.title }),
      el("div", { className: "muted", textContent: t("assistant_document_meta", { filename: d.filename, chunks: d.chunks, added: when(d.added) }) }),
      remove);
  }));
  $("assistant-docs-empty").hidden = list.data.length > 0;
}

async function uploadFiles(files) {
  const notice = $("assistant-docs-notice");
  for (const file of files) {
    notice.textContent = t("assistant_uploading", { name: file.name });
    try {
      const doc = await upload(`${DOCUMENTS}?filename=${encodeURIComponent(file.name)}`, file);
      notice.textContent = doc.status === "unchanged" ? t("assistant_upload_unchanged", { name: doc.filename }) : t("assistant_uploaded", { name: doc.filename, chunks: doc.chunks });
    } catch (error) {
      notice.textContent = t("assistant_upload_failed", { name: file.name, message: error.message });
      if (error.status === 401) document.dispatchEvent(new CustomEvent("kaiyuan:key-needed", { detail: error.message }));
      break;
    }
  }
  await listDocuments();
}

async function removeDocument(doc) {
  const notice = $("assistant-docs-notice");
  try {
    await call("DELETE", `${DOCUMENTS}/${encodeURIComponent(doc.id)}`);
    notice.textContent = t("assistant_removed", { name: doc.filename });
  } catch (error) {
    failed(notice, error);
  }
  await listDocuments();
}
