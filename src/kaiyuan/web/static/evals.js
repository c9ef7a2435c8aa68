// The evals page (being built).
import { t } from "./i18n.js";

export function init(section) {
  section.replaceChildren(Object.assign(document.createElement("h1"), { id: "evals-title", textContent: t("evals") }));
}

export async function show() {}
