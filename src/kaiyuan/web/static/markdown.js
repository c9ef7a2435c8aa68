// Model output to safe HTML: Markdown (marked), math (KaTeX), then DOMPurify over all of it,
// and only then into the DOM. Code blocks are highlighted afterwards, as text.
import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";
import hljs from "./vendor/highlight.min.js";
import { t } from "./i18n.js";

function math(source, display) {
  if (!window.katex) return null;
  try {
    return window.katex.renderToString(source, { displayMode: display, throwOnError: false, output: "html", trust: false, maxSize: 50, maxExpand: 200 });
  } catch {
    return null;
  }
}

const marked = new Marked({ gfm: true, breaks: false });
marked.use({
  extensions: [
    {
      name: "blockMath",
      level: "block",
      start: (src) => src.match(/\$\$|\\\[/)?.index,
      tokenizer(src) {
        const m = /^(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\])/.exec(src);
        if (m) return { type: "blockMath", raw: m[0], text: (m[1] ?? m[2]).trim() };
      },
      renderer: (token) => math(token.text, true) ?? `<pre>${escape(token.raw)}</pre>`,
    },
    {
      name: "inlineMath",
      level: "inline",
      start: (src) => src.match(/\$|\\\(/)?.index,
      tokenizer(src) {
        const m = /^(?:\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)|\\\((.+?)\\\))/.exec(src);
        if (m) return { type: "inlineMath", raw: m[0], text: m[1] ?? m[2] };
      },
      renderer: (token) => math(token.text, false) ?? escape(token.raw),
    },
  ],
});

function escape(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Links from a model open in a new tab and tell the target nothing about this page.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

export function render(element, source) {
  const html = DOMPurify.sanitize(marked.parse(source), { USE_PROFILES: { html: true, mathMl: true }, FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"] });
  element.innerHTML = html;
  for (const block of element.querySelectorAll("pre > code")) {
    hljs.highlightElement(block);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = t("copy_code");
    copy.addEventListener("click", async () => {
      await navigator.clipboard?.writeText(block.textContent);
      copy.textContent = t("copied");
    });
    block.parentElement.prepend(copy);
  }
}
