// Start-up and the page frame: language, theme, API key, routes (#/chat[/ID]) and events.
import { key, setKey } from "./api.js";
import * as chat from "./chat.js";
import * as models from "./models.js";
import * as traces from "./traces.js";
import * as assistant from "./assistant.js";
import * as media from "./media.js";
import * as evals from "./evals.js";
import * as usage from "./usage.js";
import { pick, use, t } from "./i18n.js";
import { $ } from "./dom.js";

const BASE = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
// Each page: show(id) when its route is opened (#/PAGE[/ID]); pages that build their own
// markup get init(section) once, after the strings are loaded.
const ROUTES = {
  chat: { show: (id) => chat.open(id) },
  assistant, models, traces, media, evals, usage,
};
const PAGES = Object.keys(ROUTES);

function theme(next) {
  const saved = next ?? localStorage.getItem("kaiyuan.theme");
  const dark = saved ? saved === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("hljs-dark").disabled = !dark;
  $("hljs-light").disabled = dark;
  if (next) localStorage.setItem("kaiyuan.theme", next);
}

async function askKey(message) {
  const dialog = $("key-dialog");
  if (dialog.open) return;
  $("key-input").value = key();
  dialog.querySelector("p").textContent = message ? t("key_refused", { message }) : t("key_help");
  dialog.showModal();
}

async function route() {
  if (location.hash && !location.hash.startsWith("#/")) return;  // an in-page link (skip link)
  const [, page = "chat", id] = location.hash.split("/");
  const shown = PAGES.includes(page) ? page : "chat";
  for (const name of PAGES) $(name).hidden = name !== shown;
  for (const link of document.querySelectorAll("#pages a")) {
    if (link.dataset.page === shown) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.dataset.page = shown;
  const notice = $("page-notice");
  notice.hidden = true;
  try {
    await ROUTES[shown].show(id ? decodeURIComponent(id) : null);
  } catch (error) {
    notice.textContent = t("error", { message: error.message });
    notice.hidden = false;
  }
}

async function start() {
  theme();
  await use(pick(), BASE);
  for (const [name, page] of Object.entries(ROUTES)) page.init?.($(name));
  $("language").value = document.documentElement.lang;
  $("language").addEventListener("change", async (e) => {
    await use(e.target.value, BASE);
    chat.describeModel();
    chat.show();
    await route();
  });
  $("theme").addEventListener("click", () => theme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));
  document.querySelector(".skip").addEventListener("click", (e) => {
    e.preventDefault();  // focus the content without touching the route in the address
    $("main").focus();
  });
  $("key-button").addEventListener("click", () => askKey());
  $("key-dialog").addEventListener("close", async () => {
    if ($("key-dialog").returnValue !== "ok") return;
    setKey($("key-input").value.trim());
    await boot();
  });
  document.addEventListener("kaiyuan:key-needed", (e) => askKey(e.detail));
  $("toggle-sidebar").addEventListener("click", (e) => {
    const shown = document.body.classList.toggle("sidebar-hidden") === false;
    e.currentTarget.setAttribute("aria-expanded", String(shown));
  });
  if (matchMedia("(max-width: 700px)").matches) {
    document.body.classList.add("sidebar-hidden");
    $("toggle-sidebar").setAttribute("aria-expanded", "false");
  }
  $("model").addEventListener("change", () => chat.describeModel());
  $("settings-button").addEventListener("click", (e) => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    e.currentTarget.setAttribute("aria-expanded", String(!panel.hidden));
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    chat.submit();
  });
  $("composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      chat.submit();
    }
  });
  $("stop").addEventListener("click", () => chat.stop());
  $("new-chat").addEventListener("click", () => chat.newChat());
  let searching;
  $("search").addEventListener("input", () => {
    clearTimeout(searching);
    searching = setTimeout(() => chat.listConversations(), 200);
  });
  $("export").addEventListener("click", () => chat.exportCurrent());
  $("import-file").addEventListener("change", async (e) => {
    const [file] = e.target.files;
    if (file) await chat.importFile(file);
    e.target.value = "";
  });
  $("image-input").addEventListener("change", async (e) => {
    await chat.attach([...e.target.files]);
    e.target.value = "";
  });
  $("run-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    traces.show(null);
  });
  window.addEventListener("hashchange", route);
  await boot();
}

async function boot() {
  try {
    await chat.loadModels();
  } catch (error) {
    if (error.status === 401) return askKey(key() ? error.message : null);
    chat.notice(t("error", { message: error.message }));
    return;
  }
  await chat.listConversations();
  await route();
  document.body.dataset.ready = "true";
}

start();
