// The media page (being built).
import { t } from "./i18n.js";

export function init(section) {
  section.replaceChildren(Object.assign(document.createElement("h1"), { id: "media-title", textContent: t("media") }));
}

export async function show() {}
