// The chat page: model picker, streamed answers with a stop button, stored conversations.
import { ApiError, call, stream } from "./api.js";
import { render } from "./markdown.js";
import { t } from "./i18n.js";
import { $, el } from "./dom.js";

const IMAGE_LIMIT_MB = 20;
const state = { models: [], conversation: blank(), running: null, images: [] };

function blank() {
  return { id: null, title: "", model: null, system: "", settings: {}, messages: [] };
}

export function notice(text) {
  $("notice").textContent = text || "";
}

// --- models -------------------------------------------------------------------------------
export async function loadModels() {
  const list = await call("GET", "/v1/models");
  state.models = list.data.filter((m) => (m.capabilities || []).includes("chat") && !m.alias_of);
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.id, textContent: m.id })));
  if (!state.models.length) notice(t("no_models"));
  const wanted = state.conversation.model || localStorage.getItem("kaiyuan.model");
  if (state.models.some((m) => m.id === wanted)) select.value = wanted;
  describeModel();
}

function model() {
  return state.models.find((m) => m.id === $("model").value);
}

export function describeModel() {
  const m = model();
  const badges = $("badges");
  badges.replaceChildren();
  if (!m) return;
  for (const cap of ["vision", "tools", "reasoning"]) {
    if (m.capabilities.includes(cap)) badges.append(el("span", { className: `badge ${cap}`, textContent: t(`badge_${cap}`) }));
  }
  const unknown = t("unknown");
  $("provenance").textContent = t("provenance", { publisher: m.publisher || m.owned_by || unknown, origin: m.origin || unknown, licence: m.licence || unknown });
  $("hint").textContent = /135m|smollm2/i.test(m.id) ? t("weak_model", { model: m.id }) : "";
  localStorage.setItem("kaiyuan.model", m.id);
}

// --- messages -----------------------------------------------------------------------------
function view(message, index) {
  const item = el("li", { className: `message ${message.role}` });
  item.dataset.index = index;
  item.append(el("div", { className: "who", textContent: message.role === "user" ? t("you") : message.model || t("assistant") }));
  if (message.reasoning) {
    const details = el("details", { className: "thinking" }, el("summary", { textContent: t("thinking") }));
    details.append(el("div", { className: "reasoning", textContent: message.reasoning }));
    item.append(details);
  }
  for (const src of message.images || []) item.append(el("img", { src, alt: "", className: "attached" }));
  const body = el("div", { className: "content" });
  if (message.role === "assistant") render(body, message.content || "");
  else body.textContent = message.content;
  item.append(body);
  if (message.error) item.append(el("p", { className: "error", textContent: t("error", { message: message.error }) }));
  if (message.stopped) item.append(el("p", { className: "muted", textContent: t("stopped") }));
  if (message.stats) {
    item.append(el("p", { className: "stats muted", textContent: t("stats", message.stats) }));
  }
  const actions = el("div", { className: "actions" });
  const copy = el("button", { type: "button", textContent: t("copy") });
  copy.addEventListener("click", () => navigator.clipboard?.writeText(message.content));
  actions.append(copy);
  const last = index === state.conversation.messages.length - 1;
  if (message.role === "assistant" && last) {
    const again = el("button", { type: "button", textContent: t("regenerate"), className: "regenerate" });
    again.addEventListener("click", () => regenerate());
    actions.append(again);
  }
  if (message.role === "user") {
    const edit = el("button", { type: "button", textContent: t("edit"), className: "edit" });
    edit.addEventListener("click", () => startEdit(item, index));
    actions.append(edit);
  }
  item.append(actions);
  return item;
}

export function show() {
  const list = $("messages");
  list.replaceChildren(...state.conversation.messages.map(view));
  $("system").value = state.conversation.system || "";
  const s = state.conversation.settings || {};
  $("temperature").value = s.temperature ?? "";
  $("max-tokens").value = s.max_tokens ?? "";
  list.lastElementChild?.scrollIntoView({ block: "end" });
}

function startEdit(item, index) {
  const message = state.conversation.messages[index];
  const box = el("textarea", { className: "edit-box", value: message.content, rows: 3 });
  box.setAttribute("aria-label", t("edit"));
  const resend = el("button", { type: "button", className: "primary", textContent: t("edit_resend") });
  resend.addEventListener("click", () => {
    state.conversation.messages = state.conversation.messages.slice(0, index);
    ask({ ...message, content: box.value });
  });
  item.querySelector(".content").replaceWith(box);
  item.querySelector(".actions").replaceChildren(resend);
  box.focus();
}

function regenerate() {
  const messages = state.conversation.messages;
  if (state.running || !messages.length || messages.at(-1).role !== "assistant") return;
  messages.pop();
  const user = messages.pop();
  ask(user);
}

// --- sending ------------------------------------------------------------------------------
function wire(messages) {
  const out = [];
  const system = $("system").value.trim();
  if (system) out.push({ role: "system", content: system });
  for (const m of messages) {
    if (m.error || (m.role === "assistant" && !m.content)) continue;
    if (m.images?.length) {
      out.push({ role: m.role, content: [{ type: "text", text: m.content }, ...m.images.map((url) => ({ type: "image_url", image_url: { url } }))] });
    } else out.push({ role: m.role, content: m.content });
  }
  return out;
}

export async function submit() {
  const input = $("composer-input");
  const text = input.value.trim();
  if (state.running || (!text && !state.images.length)) return;
  const m = model();
  if (!m) return notice(t("no_models"));
  if (state.images.length && !m.capabilities.includes("vision")) {
    return notice(t("vision_only", { model: m.id }));
  }
  input.value = "";
  const images = state.images.splice(0);
  showAttachments();
  await ask({ role: "user", content: text, images: images.length ? images : null });
}

async function ask(user) {
  const c = state.conversation;
  const m = model();
  c.model = m.id;
  c.system = $("system").value;
  c.settings = {};  // only what the user set: the server's defaults fit the model
  if ($("temperature").value !== "") c.settings.temperature = Number($("temperature").value);
  if ($("max-tokens").value !== "") c.settings.max_tokens = Number($("max-tokens").value);
  c.messages.push(user);
  if (!c.title) c.title = user.content.slice(0, 60) || t("untitled");
  const answer = { role: "assistant", content: "", reasoning: null, model: m.id, stats: null };
  c.messages.push(answer);
  show();
  const item = $("messages").lastElementChild;
  const body = item.querySelector(".content");
  const controller = new AbortController();
  state.running = controller;
  running(true);
  const began = performance.now();
  let first = null;
  let tokens = 0;
  let usage = null;
  let thinking = null;
  try {
    await stream("/v1/chat/completions", {
      model: m.id, messages: wire(c.messages.slice(0, -1)), stream: true,
      stream_options: { include_usage: true }, ...c.settings,
    }, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices?.[0]?.delta || {};
      if (delta.reasoning_content) {
        answer.reasoning = (answer.reasoning || "") + delta.reasoning_content;
        if (!thinking) {
          thinking = el("details", { className: "thinking", open: true }, el("summary", { textContent: t("thinking") }), el("div", { className: "reasoning" }));
          body.before(thinking);
        }
        thinking.lastElementChild.textContent = answer.reasoning;
      }
      if (delta.content) {
        first ??= performance.now();
        tokens += 1;
        answer.content += delta.content;
        render(body, answer.content);
      }
    }, controller.signal);
  } catch (error) {
    if (error.name === "AbortError") answer.stopped = true;
    else if (error instanceof ApiError && error.status === 401) {
      answer.error = error.message;
      document.dispatchEvent(new CustomEvent("kaiyuan:key-needed", { detail: error.message }));
    } else answer.error = error.message;
  } finally {
    state.running = null;
    running(false);
  }
  const produced = usage?.completion_tokens ?? tokens;
  if (first !== null) {
    const seconds = (performance.now() - first) / 1000;
    answer.stats = {
      ttft: Math.round(first - began), tokens: produced,
      rate: seconds > 0 ? (produced / seconds).toFixed(1) : "—",
    };
  }
  show();
  await save();
}

function running(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  if (!on) $("composer-input").focus();
}

export function stop() {
  state.running?.abort();
}

// --- images -------------------------------------------------------------------------------
export async function attach(files) {
  for (const file of files) {
    if (file.size > IMAGE_LIMIT_MB * 1024 * 1024) {
      notice(t("image_too_big", { name: file.name, limit: IMAGE_LIMIT_MB }));
      continue;
    }
    state.images.push(await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    }));
  }
  const m = model();
  if (state.images.length && m && !m.capabilities.includes("vision")) notice(t("vision_only", { model: m.id }));
  showAttachments();
}

function showAttachments() {
  $("attachments").replaceChildren(...state.images.map((src, i) => {
    const remove = el("button", { type: "button", textContent: "×" });
    remove.setAttribute("aria-label", t("remove"));
    remove.addEventListener("click", () => { state.images.splice(i, 1); showAttachments(); });
    return el("span", { className: "thumb" }, el("img", { src, alt: "" }), remove);
  }));
}

// --- conversations ------------------------------------------------------------------------
const BASE = "/v1/kaiyuan/conversations";

function stored(c) {
  return { title: c.title || t("untitled"), model: c.model, system: c.system || null, settings: c.settings || {}, messages: c.messages.map(({ role, content, reasoning, images, stats, model }) => ({ role, content, reasoning: reasoning ?? null, images: images ?? null, stats: stats ?? null, model: model ?? null })) };
}

async function save() {
  const c = state.conversation;
  try {
    const saved = c.id ? await call("PUT", `${BASE}/${c.id}`, stored(c)) : await call("POST", BASE, stored(c));
    c.id = saved.id;
    location.hash = `#/chat/${c.id}`;
    await listConversations();
  } catch (error) {
    notice(t("error", { message: error.message }));
  }
}

export async function listConversations() {
  const q = $("search").value.trim();
  let list;
  try {
    list = await call("GET", `${BASE}?limit=200${q ? `&q=${encodeURIComponent(q)}` : ""}`);
  } catch (error) {
    if (error.status !== 401) notice(t("error", { message: error.message }));
    return;
  }
  $("conversations").replaceChildren(...list.data.map((c) => {
    const open = el("a", { href: `#/chat/${c.id}`, textContent: c.title || t("untitled"), className: "open" });
    if (c.id === state.conversation.id) open.setAttribute("aria-current", "true");
    const rename = el("button", { type: "button", textContent: "✎", className: "icon rename" });
    rename.setAttribute("aria-label", `${t("rename")}: ${c.title}`);
    rename.addEventListener("click", async () => {
      const title = prompt(t("rename_prompt"), c.title);
      if (!title) return;
      const full = await call("GET", `${BASE}/${c.id}`);
      await call("PUT", `${BASE}/${c.id}`, { ...stored(full), title });
      if (c.id === state.conversation.id) state.conversation.title = title;
      await listConversations();
    });
    const remove = el("button", { type: "button", textContent: "🗑", className: "icon delete" });
    remove.setAttribute("aria-label", `${t("delete")}: ${c.title}`);
    remove.addEventListener("click", async () => {
      if (!confirm(t("delete_confirm", { title: c.title }))) return;
      await call("DELETE", `${BASE}/${c.id}`);
      if (c.id === state.conversation.id) newChat();
      await listConversations();
    });
    return el("li", {}, open, rename, remove);
  }));
}

export async function open(id) {
  if (state.running) return;
  if (!id) return newChat();
  if (id === state.conversation.id) return;
  try {
    const c = await call("GET", `${BASE}/${encodeURIComponent(id)}`);
    state.conversation = { ...blank(), ...c, settings: c.settings || {} };
    if (c.model && state.models.some((m) => m.id === c.model)) $("model").value = c.model;
    describeModel();
    show();
    await listConversations();
  } catch (error) {
    notice(t("error", { message: error.message }));
    newChat();
  }
}

export function newChat() {
  stop();
  state.conversation = blank();
  if (location.hash.startsWith("#/chat/")) history.replaceState(null, "", "#/chat");
  show();
  listConversations();
  $("composer-input").focus();
}

export function exportCurrent() {
  const c = state.conversation;
  if (!c.messages.length) return;
  const blob = new Blob([JSON.stringify({ object: "conversation", id: c.id, ...stored(c) }, null, 2)], { type: "application/json" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `${(c.title || "conversation").replace(/[^\w\u4e00-\u9fff-]+/g, "_").slice(0, 60)}.json` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

export async function importFile(file) {
  try {
    const data = JSON.parse(await file.text());
    const made = await call("POST", `${BASE}/import`, data);
    notice(t("imported", { title: made.title }));
    location.hash = `#/chat/${made.id}`;
  } catch (error) {
    notice(t("import_failed", { message: error.message }));
  }
}
