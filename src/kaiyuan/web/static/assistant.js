// The assistant page (being built).
import { t } from "./i18n.js";

export function init(section) {
  section.replaceChildren(Object.assign(document.createElement("h1"), { id: "assistant-title", textContent: t("assistant") }));
}

export async function show() {}
