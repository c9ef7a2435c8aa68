// The traces page (the audit view): agent runs with filters, and one run as a timeline of its
// steps, with the ways it went wrong flagged on the steps that show them.
import { call } from "./api.js";
import { language, t } from "./i18n.js";
import { $, el } from "./dom.js";

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString(language());
}

function json(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function flagBadges(flags) {
  return flags.map((f) => el("span", { className: "badge flag", textContent: t(`flag_${f.kind}`), title: f.message }));
}

export async function show(id) {
  $("run").hidden = !id;
  $("runs-list").hidden = Boolean(id);
  if (id) return showRun(id);
  const query = new URLSearchParams({ limit: "200" });
  for (const name of ["model", "tool", "status", "since", "until"]) {
    const value = $(`filter-${name}`).value.trim();
    if (value) query.set(name, value);
  }
  if ($("filter-flagged").checked) query.set("flagged", "true");
  const runs = await call("GET", `/v1/kaiyuan/runs?${query}`);
  $("runs").replaceChildren(...runs.data.map((r) => {
    const open = el("a", { href: `#/traces/${r.id}`, textContent: r.task.slice(0, 80) || r.id });
    return el("tr", { className: r.flags.length ? "flagged" : "" },
      el("td", { textContent: when(r.created) }), el("th", { scope: "row" }, open),
      el("td", { textContent: r.model }), el("td", { textContent: t(`status_${r.status}`) }),
      el("td", { textContent: String(r.steps) }),
      el("td", { textContent: `${r.usage.prompt_tokens} / ${r.usage.completion_tokens}` }),
      el("td", { textContent: r.seconds.toFixed(1) }), el("td", { textContent: r.tools.join(", ") }),
      el("td", {}, ...flagBadges(r.flags)));
  }));
  $("runs-empty").hidden = runs.data.length > 0;
}

async function showRun(id) {
  const run = await call("GET", `/v1/kaiyuan/runs/${encodeURIComponent(id)}`);
  const byStep = new Map();
  for (const flag of run.flags) for (const index of flag.steps) byStep.set(index, [...(byStep.get(index) || []), flag]);
  $("run-title").textContent = run.task.slice(0, 120) || run.id;
  $("run-summary").textContent = t("run_summary", {
    model: run.model, status: t(`status_${run.status}`), steps: run.steps, seconds: run.seconds.toFixed(1),
    prompt: run.usage.prompt_tokens, completion: run.usage.completion_tokens, when: when(run.created),
  });
  $("run-flags").replaceChildren(...run.flags.map((f) => el("li", { className: "flag" },
    el("strong", { textContent: t(`flag_${f.kind}`) }), ` — ${f.message} `,
    el("span", { className: "muted", textContent: t("flag_steps", { steps: f.steps.join(", ") }) }))));
  $("run-export").onclick = () => {
    const link = el("a", { href: URL.createObjectURL(new Blob([JSON.stringify(run, null, 2)], { type: "application/json" })), download: `run-${run.id}.json` });
    document.body.append(link);
    link.click();
    link.remove();
  };
  $("timeline").replaceChildren(...run.trace.map((s) => {
    const flags = byStep.get(s.index) || [];
    const item = el("li", { className: `step ${s.kind}${flags.length ? " flagged" : ""}${s.error ? " failed" : ""}` });
    item.id = `step-${s.index}`;
    item.append(el("div", { className: "step-head" },
      el("strong", { textContent: `${s.index}. ${t(`kind_${s.kind}`)} · ${s.name}` }), " ",
      el("span", { className: "muted", textContent: t("step_figures", { seconds: s.seconds.toFixed(2), prompt: s.usage.prompt_tokens, completion: s.usage.completion_tokens }) }),
      " ", ...flagBadges(flags)));
    item.append(el("details", {}, el("summary", { textContent: t(s.kind === "model" ? "model_input" : "arguments") }), el("pre", { textContent: json(s.input) })));
    if (s.output !== null && s.output !== undefined) {
      item.append(el("details", { open: s.kind === "model" }, el("summary", { textContent: t(s.kind === "model" ? "model_output" : "result") }), el("pre", { textContent: json(s.output) })));
    }
    if (s.error) item.append(el("p", { className: "error", textContent: t("error", { message: s.error }) }));
    return item;
  }));
  if (run.answer) $("timeline").append(el("li", { className: "step answer" }, el("strong", { textContent: t("answer") }), el("p", { textContent: run.answer })));
}
