// The models page: what this server has (loaded or idle, memory), the catalogue with what fits
// this machine, pull with live progress, remove.
import { call, lines } from "./api.js";
import { t } from "./i18n.js";
import { $, el } from "./dom.js";

const GB = 1e9;

function cell(text) {
  return el("td", { textContent: text ?? "—" });
}

function badges(capabilities) {
  const td = el("td");
  for (const cap of capabilities) td.append(el("span", { className: `badge ${cap}`, textContent: t(`cap_${cap}`) }), " ");
  return td;
}

function size(bytes) {
  return bytes ? `${(bytes / GB).toFixed(bytes < GB ? 2 : 1)} GB` : "—";
}

function params(n) {
  if (!n) return "—";
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : `${Math.round(n / 1e6)}M`;
}

export async function show() {
  const [models, running, catalog] = await Promise.all([
    call("GET", "/v1/models"),
    call("GET", "/api/ps").catch(() => ({ models: [] })),
    call("GET", "/v1/kaiyuan/catalog"),
  ]);
  const memory = new Map(running.models.map((m) => [m.model.replace(/:latest$/, ""), m.size]));
  $("installed").replaceChildren(...models.data.filter((m) => !m.alias_of).map((m) => {
    const remove = el("button", { type: "button", textContent: t("remove"), className: "remove" });
    remove.setAttribute("aria-label", `${t("remove")}: ${m.id}`);
    remove.addEventListener("click", () => removeModel(m.id));
    const state = m.loaded ? t("loaded") : t("idle");
    return el("tr", {}, el("th", { scope: "row", textContent: m.id }), cell(m.format), cell(params(m.parameters)),
      cell(m.quantisation), cell(size(m.size_bytes)), badges(m.capabilities || []),
      cell([m.publisher, m.origin, m.licence].filter(Boolean).join(" · ")),
      cell(m.loaded && memory.get(m.id) ? `${state}, ${size(memory.get(m.id))}` : state), el("td", {}, remove));
  }));
  const memoryGb = (catalog.machine.memory_bytes / GB).toFixed(1);
  $("machine").textContent = t("machine", { cpus: catalog.machine.cpus, memory: memoryGb, gpus: catalog.machine.gpus });
  $("catalog").replaceChildren(...catalog.data.map((m) => {
    const action = el("td");
    if (m.installed) action.textContent = t("installed");
    else if (!m.fit) action.textContent = t("too_large");
    else {
      const pull = el("button", { type: "button", textContent: t("pull"), className: "pull" });
      pull.setAttribute("aria-label", `${t("pull")}: ${m.id}`);
      pull.addEventListener("click", () => pullModel(m.fit.pull, action));
      action.append(pull);
    }
    const fit = m.fit ? `${m.fit.size_gb} GB${m.fit.quantisation ? ` ${m.fit.quantisation}` : ""}${m.fit.tokens_per_second ? `, ~${m.fit.tokens_per_second} tok/s` : ""}` : t("too_large");
    return el("tr", { className: m.fit ? "fits" : "too-large" }, el("th", { scope: "row", textContent: m.id, title: m.title }),
      cell(m.parameters_b ? `${m.parameters_b}B` : null), badges(m.capabilities),
      cell(`${m.publisher} · ${m.origin} · ${m.licence}`), cell(fit), action);
  }));
}

async function pullModel(name, where) {
  const bar = el("progress", { max: 1, value: 0 });
  bar.setAttribute("aria-label", `${t("pull")}: ${name}`);
  const status = el("span", { className: "muted", textContent: t("pulling") });
  where.replaceChildren(bar, " ", status);
  const files = new Map();
  try {
    await lines("/api/pull", { model: name, stream: true }, (p) => {
      if (p.total) {
        files.set(p.digest, [p.completed || 0, p.total]);
        const done = [...files.values()].reduce((a, [c]) => a + c, 0);
        const total = [...files.values()].reduce((a, [, n]) => a + n, 0);
        bar.max = total;
        bar.value = done;
        status.textContent = `${size(done)} / ${size(total)}`;
      }
      if (p.status === "success") status.textContent = t("pulled");
    });
    await show();
  } catch (error) {
    status.textContent = t("error", { message: error.message });
    status.className = "error";
  }
}

async function removeModel(id) {
  if (!confirm(t("remove_confirm", { model: id }))) return;
  try {
    await call("DELETE", "/api/delete", { model: id });
    await show();
  } catch (error) {
    $("models-notice").textContent = t("error", { message: error.message });
  }
}
