// The usage page (being built).
import { t } from "./i18n.js";

export function init(section) {
  section.replaceChildren(Object.assign(document.createElement("h1"), { id: "usage-title", textContent: t("usage") }));
}

export async function show() {}
