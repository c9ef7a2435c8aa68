// Every visible string goes through t(); the page's static text carries data-i18n keys.
const LANGUAGES = ["en", "zh-CN"];
let strings = {};
let current = "en";

export function pick() {
  const saved = localStorage.getItem("kaiyuan.language");
  if (LANGUAGES.includes(saved)) return saved;
  for (const wanted of navigator.languages || [navigator.language]) {
    if (wanted.toLowerCase().startsWith("zh")) return "zh-CN";
    if (wanted.toLowerCase().startsWith("en")) return "en";
  }
  return "en";
}

// The frame's strings (i18n/LANG.json), then each page's own (i18n/PAGE.LANG.json).
const BUNDLES = ["assistant", "media", "evals", "usage"];

export async function use(language, base) {
  const files = [`${language}.json`, ...BUNDLES.map((b) => `${b}.${language}.json`)];
  const loaded = await Promise.all(files.map(async (f) => (await fetch(`${base}/i18n/${f}`)).json()));
  strings = Object.assign({}, ...loaded);
  current = language;
  document.documentElement.lang = language;
  localStorage.setItem("kaiyuan.language", language);
  apply(document);
}

// Translate a subtree's data-i18n, data-i18n-placeholder and data-i18n-label attributes (pages
// that build their markup call it on what they built).
export function apply(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
}

export function language() {
  return current;
}

export function t(key, values = {}) {
  const text = strings[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}
