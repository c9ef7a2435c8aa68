// The media page: images (POST /v1/images/generations with response_format "url", so the server
// keeps each one) in a gallery the server lists (GET /v1/kaiyuan/media, newest first, with the
// settings each was made with), and video jobs (POST /v1/videos, GET /v1/videos[/ID]) with a
// progress bar polled while the page is shown, cancel (DELETE /v1/videos/ID) and playback of the
// MP4 (GET /v1/videos/ID/content).
import { blob, call, key } from "./api.js";
import { apply, language, t } from "./i18n.js";
import { $, el } from "./dom.js";

const POLL_MS = 1000;
const ACTIVE = new Set(["queued", "in_progress"]);
const SIZES = ["512x512", "768x768", "1024x1024", "1024x768", "768x1024", "1280x720", "832x480"];
const state = {
  section: null, models: [], catalog: null, images: [], jobs: new Map(),
  generating: false, poll: null, polling: null, pollFailed: false, blobs: new Map(),
};

const FORM = (kind) => `
<form id="${kind}-form" class="media-form" novalidate>
  <p id="${kind}-none" class="notice" hidden><span id="${kind}-none-text"></span>
    <a href="#/models" data-i18n="media_open_models">Open the models page</a></p>
  <fieldset id="${kind}-fields">
    <label for="${kind}-model" data-i18n="media_model">Model</label>
    <select id="${kind}-model"></select>
    <label for="${kind}-prompt" data-i18n="media_prompt">Prompt</label>
    <textarea id="${kind}-prompt" rows="2" maxlength="10000" required></textarea>
    <label for="${kind}-negative" data-i18n="media_negative">Negative prompt</label>
    <input id="${kind}-negative" maxlength="10000" data-i18n-placeholder="media_negative_help">
    <div class="media-numbers">
      <span><label for="${kind}-size" data-i18n="media_size">Size</label>
        <input id="${kind}-size" list="media-sizes" pattern="\\d{1,5}x\\d{1,5}" size="10" data-i18n-placeholder="media_default"></span>
      ${kind === "video" ? `<span><label for="video-frames" data-i18n="media_frames">Frames</label>
        <input id="video-frames" type="number" min="1" max="1000" step="1" data-i18n-placeholder="media_default"></span>
      <span><label for="video-fps" data-i18n="media_fps">Frames a second</label>
        <input id="video-fps" type="number" min="1" max="60" step="1" placeholder="16"></span>` : ""}
      <span><label for="${kind}-steps" data-i18n="media_steps">Steps</label>
        <input id="${kind}-steps" type="number" min="1" max="1000" step="1" placeholder="30"></span>
      <span><label for="${kind}-seed" data-i18n="media_seed">Seed</label>
        <input id="${kind}-seed" type="number" min="0" max="4294967295" step="1" data-i18n-placeholder="media_random"></span>
    </div>
    <div class="row">
      <button type="submit" id="${kind}-submit" class="primary" data-i18n="${kind === "image" ? "media_generate" : "media_start_video"}"></button>
      <progress id="${kind}-working" hidden></progress>
      <span id="${kind}-status" role="status" aria-live="polite"></span>
    </div>
  </fieldset>
</form>`;

const MARKUP = `
<h1 id="media-title" data-i18n="media">Media</h1>
<datalist id="media-sizes">${SIZES.map((s) => `<option value="${s}">`).join("")}</datalist>
<div class="media-parts">
  <section class="media-part" aria-labelledby="images-title">
    <h2 id="images-title" data-i18n="media_images">Images</h2>
    ${FORM("image")}
    <h3 data-i18n="media_gallery">Gallery</h3>
    <p id="gallery-empty" class="muted" data-i18n="media_gallery_empty" hidden></p>
    <ul id="gallery" class="media-list" role="list"></ul>
  </section>
  <section class="media-part" aria-labelledby="videos-title">
    <h2 id="videos-title" data-i18n="media_videos">Videos</h2>
    ${FORM("video")}
    <h3 data-i18n="media_jobs">Jobs</h3>
    <p id="jobs-empty" class="muted" data-i18n="media_jobs_empty" hidden></p>
    <ul id="jobs" class="media-list" role="list"></ul>
  </section>
</div>`;

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString(language());
}

function say(kind, text, error = false) {
  const status = $(`${kind}-status`);
  status.textContent = text;
  status.className = error ? "error" : "muted";
}

// --- start and show ------------------------------------------------------------------------
export function init(section) {
  state.section = section;
  section.innerHTML = MARKUP;
  apply(section);
  $("image-form").addEventListener("submit", (e) => {
    e.preventDefault();
    generate();
  });
  $("video-form").addEventListener("submit", (e) => {
    e.preventDefault();
    startVideo();
  });
  for (const kind of ["image", "video"]) {
    $(`${kind}-model`).addEventListener("change", (e) => localStorage.setItem(`kaiyuan.media.${kind}`, e.target.value));
  }
  // Poll only while the page is shown and the tab is visible.
  new MutationObserver(() => (section.hidden ? stopPolling() : schedule())).observe(section, { attributes: true, attributeFilter: ["hidden"] });
  document.addEventListener("visibilitychange", () => (document.hidden ? stopPolling() : schedule()));
}

export async function show(id) {
  // Either half may fail alone (a server without the diffusion extra has no video jobs): it
  // says why on its own status line, and the other half still works.
  const [models, gallery, jobs] = await Promise.allSettled([call("GET", "/v1/models"), loadGallery(), loadJobs()]);
  if (models.status === "rejected") throw models.reason;
  if (gallery.status === "rejected") say("image", t("media_error", { message: gallery.reason.message }), true);
  if (jobs.status === "rejected") say("video", t("media_error", { message: jobs.reason.message }), true);
  state.models = models.value.data.filter((m) => !m.alias_of);
  await Promise.all([pickModels("image"), pickModels("video")]);
  schedule();
  if (id) document.getElementById(id.startsWith("video_") ? `job-${id}` : `image-${id}`)?.scrollIntoView({ block: "center" });
}

async function pickModels(kind) {
  const found = state.models.filter((m) => (m.capabilities || []).includes(kind));
  const select = $(`${kind}-model`);
  const chosen = select.value || localStorage.getItem(`kaiyuan.media.${kind}`);
  select.replaceChildren(...found.map((m) => el("option", { value: m.id, textContent: m.id })));
  if (found.some((m) => m.id === chosen)) select.value = chosen;
  $(`${kind}-fields`).disabled = !found.length;
  $(`${kind}-none`).hidden = found.length > 0;
  if (found.length) return;
  // None here: name one from the catalogue that fits this machine, if it has one.
  state.catalog ??= await call("GET", "/v1/kaiyuan/catalog").catch(() => ({ data: [] }));
  const known = state.catalog.data.filter((m) => m.capabilities.includes(kind) && !m.installed);
  const example = known.find((m) => m.fit)?.fit.pull || known[0]?.id || "NAME";
  $(`${kind}-none-text`).textContent = t(`media_no_${kind}_model`, { example });
}

function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

// The settings both forms share; only what the user set is sent (the server's defaults fit).
function settings(kind) {
  const body = { model: $(`${kind}-model`).value, prompt: $(`${kind}-prompt`).value.trim() };
  const negative = $(`${kind}-negative`).value.trim();
  if (negative) body.negative_prompt = negative;
  const size = $(`${kind}-size`).value.trim();
  if (size) body.size = size;
  for (const name of ["steps", "seed"]) {
    const value = numberOf(`${kind}-${name}`);
    if (value !== undefined) body[name] = value;
  }
  return body;
}

function valid(kind) {
  const form = $(`${kind}-form`);
  if (!$(`${kind}-prompt`).value.trim()) $(`${kind}-prompt`).value = "";
  if (form.checkValidity()) return true;
  const bad = form.querySelector(":invalid");
  say(kind, `${bad.labels?.[0]?.textContent || ""}: ${bad.validationMessage}`, true);
  bad.focus();
  return false;
}

// --- images --------------------------------------------------------------------------------
async function generate() {
  if (state.generating || !valid("image")) return;
  const body = { ...settings("image"), n: 1, response_format: "url" };
  state.generating = true;
  $("image-submit").disabled = true;
  $("image-working").hidden = false;
  const began = performance.now();
  const seconds = () => ((performance.now() - began) / 1000).toFixed(0);
  say("image", t("media_generating", { seconds: 0 }));
  const ticking = setInterval(() => say("image", t("media_generating", { seconds: seconds() })), 1000);
  try {
    await call("POST", "/v1/images/generations", body);
    say("image", t("media_generated", { seconds: ((performance.now() - began) / 1000).toFixed(1) }));
    await loadGallery();
  } catch (error) {
    say("image", t("media_error", { message: error.message }), true);
  } finally {
    clearInterval(ticking);
    state.generating = false;
    $("image-submit").disabled = false;
    $("image-working").hidden = true;
  }
}

async function loadGallery() {
  const list = await call("GET", "/v1/kaiyuan/media?limit=100");
  state.images = list.data;
  const keep = new Set(state.images.map((i) => `/v1/media/${i.id}`));
  for (const [path, url] of state.blobs) {
    if (path.startsWith("/v1/media/") && !keep.has(path)) forget(path, url);
  }
  $("gallery").replaceChildren(...state.images.map(imageCard));
  $("gallery-empty").hidden = state.images.length > 0;
}

function imageCard(item) {
  const path = `/v1/media/${encodeURIComponent(item.id)}`;
  const [width, height] = item.size.split("x").map(Number);
  const image = el("img", { alt: item.prompt, width, height, decoding: "async" });
  const open = el("a", { target: "_blank", rel: "noopener" }, image);
  const download = el("a", { className: "button", download: item.id, textContent: t("media_download") });
  source(path).then((url) => {
    image.src = url;
    open.href = url;
    download.href = url;
  }, () => (image.alt = t("media_unavailable")));
  const reuse = el("button", { type: "button", textContent: t("media_reuse") });
  reuse.addEventListener("click", () => reuseSettings(item));
  const remove = el("button", { type: "button", className: "remove", textContent: t("media_delete") });
  remove.setAttribute("aria-label", `${t("media_delete")}: ${item.prompt.slice(0, 60)}`);
  remove.addEventListener("click", () => removeImage(item));
  const details = [item.model, item.size, t("media_n_steps", { steps: item.steps }), t("media_seed_is", { seed: item.seed })];
  if (item.guidance_scale !== null && item.guidance_scale !== undefined) details.push(t("media_guidance_is", { value: item.guidance_scale }));
  const card = el("li", { className: "media-card", id: `image-${item.id}` },
    open, el("p", { className: "media-prompt", textContent: item.prompt }),
    el("p", { className: "muted media-settings", textContent: details.join(" · ") }));
  if (item.negative_prompt) card.append(el("p", { className: "muted", textContent: t("media_negative_is", { text: item.negative_prompt }) }));
  card.append(el("p", { className: "muted", textContent: when(item.created) }), el("div", { className: "actions" }, reuse, download, remove));
  return card;
}

function reuseSettings(item) {
  if ([...$("image-model").options].some((o) => o.value === item.model)) $("image-model").value = item.model;
  $("image-prompt").value = item.prompt;
  $("image-negative").value = item.negative_prompt || "";
  $("image-size").value = item.size;
  $("image-steps").value = item.steps;
  $("image-seed").value = item.seed;
  $("image-prompt").focus();
}

async function removeImage(item) {
  if (!confirm(t("media_delete_image_confirm", { prompt: item.prompt.slice(0, 80) }))) return;
  try {
    await call("DELETE", `/v1/kaiyuan/media/${encodeURIComponent(item.id)}`);
  } catch (error) {
    if (error.status !== 404) return say("image", t("media_error", { message: error.message }), true);
  }
  await loadGallery();
}

// A file the browser loads by itself (<img>, <video>) carries no API key: with keys it is
// fetched here and shown from a blob: URL (the page's CSP allows those).
function source(path) {
  if (!key()) return Promise.resolve(path);
  if (!state.blobs.has(path)) {
    const loaded = blob(path).then((file) => URL.createObjectURL(file));
    loaded.catch(() => state.blobs.delete(path));
    state.blobs.set(path, loaded);
  }
  return state.blobs.get(path);
}

function forget(path, url = state.blobs.get(path)) {
  state.blobs.delete(path);
  url?.then((u) => URL.revokeObjectURL(u), () => {});
}

// --- videos --------------------------------------------------------------------------------
async function startVideo() {
  if (!valid("video")) return;
  const body = settings("video");
  const frames = numberOf("video-frames");
  const fps = numberOf("video-fps");
  if (frames !== undefined) body.frames = frames;
  if (fps !== undefined) body.fps = fps;
  $("video-submit").disabled = true;
  say("video", t("media_starting"));
  try {
    const job = await call("POST", "/v1/videos", body);
    say("video", "");
    state.jobs = new Map([[job.id, job], ...state.jobs]);
    renderJobs();
    schedule();
  } catch (error) {
    say("video", t("media_error", { message: error.message }), true);
  } finally {
    $("video-submit").disabled = false;
  }
}

async function loadJobs() {
  const list = await call("GET", "/v1/videos");
  state.jobs = new Map(list.data.map((job) => [job.id, job]));
  renderJobs();
}

function renderJobs() {
  const list = $("jobs");
  const cards = [...state.jobs.values()].map((job) => {
    const old = document.getElementById(`job-${job.id}`);
    // A finished card keeps its <video> (and where it was in the playback) across refreshes.
    return old && old.dataset.status === job.status && !ACTIVE.has(job.status) && old.dataset.lang === language() ? old : jobCard(job);
  });
  list.replaceChildren(...cards);
  $("jobs-empty").hidden = cards.length > 0;
  for (const path of state.blobs.keys()) {
    const id = path.match(/^\/v1\/videos\/([^/]+)\/content$/)?.[1];
    if (id && !state.jobs.has(decodeURIComponent(id))) forget(path);
  }
}

function jobCard(job) {
  const card = el("li", { className: `media-card job ${job.status}`, id: `job-${job.id}` });
  card.dataset.status = job.status;
  card.dataset.lang = language();
  const about = t("media_video_settings", { model: job.model, size: job.size, frames: job.frames, fps: job.fps, seconds: job.seconds });
  card.append(el("p", { className: "media-prompt", textContent: job.prompt }), el("p", { className: "muted media-settings", textContent: about }));
  const label = `${job.prompt.slice(0, 60)}`;
  const status = el("p", { className: "job-status" });
  const actions = el("div", { className: "actions" });
  if (ACTIVE.has(job.status)) {
    const bar = el("progress", { max: 100, value: job.progress });
    bar.setAttribute("aria-label", `${t("media_progress")}: ${label}`);
    status.textContent = job.status === "queued" ? t("media_status_queued") : t("media_status_in_progress", { progress: job.progress });
    const cancel = el("button", { type: "button", className: "cancel", textContent: t("media_cancel") });
    cancel.setAttribute("aria-label", `${t("media_cancel")}: ${label}`);
    cancel.addEventListener("click", () => removeJob(job, cancel));
    card.append(status, bar);
    actions.append(cancel);
  } else if (job.status === "completed") {
    const path = `/v1/videos/${encodeURIComponent(job.id)}/content`;
    const video = el("video", { controls: true, preload: "metadata", loop: true, playsInline: true });
    video.setAttribute("aria-label", `${t("media_video")}: ${label}`);
    const download = el("a", { className: "button", download: `${job.id}.mp4`, textContent: t("media_download") });
    source(path).then((url) => {
      video.src = url;
      download.href = url;
    }, () => (status.textContent = t("media_unavailable")));
    status.textContent = t("media_status_completed", { when: when(job.completed_at || job.created_at) });
    card.append(video, status);
    actions.append(download);
  } else {
    status.textContent = t(`media_status_${job.status}`, { message: job.error?.message || "" });
    status.classList.add("error");
    card.append(status);
  }
  if (!ACTIVE.has(job.status)) {
    const remove = el("button", { type: "button", className: "remove", textContent: t("media_delete") });
    remove.setAttribute("aria-label", `${t("media_delete")}: ${label}`);
    remove.addEventListener("click", () => removeJob(job, remove));
    actions.append(remove);
  }
  card.append(actions);
  return card;
}

// DELETE cancels a job that is still running and removes a finished one with its file.
async function removeJob(job, button) {
  if (!ACTIVE.has(job.status) && !confirm(t("media_delete_video_confirm", { prompt: job.prompt.slice(0, 80) }))) return;
  button.disabled = true;
  try {
    await call("DELETE", `/v1/videos/${encodeURIComponent(job.id)}`);
  } catch (error) {
    if (error.status !== 404) {
      button.disabled = false;
      return say("video", t("media_error", { message: error.message }), true);
    }
  }
  state.jobs.delete(job.id);
  renderJobs();
}

// --- polling: one timer, while the page is shown and a job is unfinished --------------------
function schedule() {
  const wanted = state.section && !state.section.hidden && !document.hidden && [...state.jobs.values()].some((j) => ACTIVE.has(j.status));
  if (!wanted) return stopPolling();
  if (state.poll === null && state.polling === null) state.poll = setTimeout(poll, POLL_MS);
  state.section.dataset.polling = "true";
}

function stopPolling() {
  clearTimeout(state.poll);
  state.poll = null;
  state.polling?.abort();
  state.polling = null;
  if (state.section) state.section.dataset.polling = "false";
}

async function poll() {
  state.poll = null;
  const controller = new AbortController();
  state.polling = controller;
  const active = [...state.jobs.values()].filter((j) => ACTIVE.has(j.status));
  const answers = await Promise.allSettled(active.map((j) => call("GET", `/v1/videos/${encodeURIComponent(j.id)}`, undefined, { signal: controller.signal })));
  if (controller.signal.aborted) return;
  state.polling = null;
  answers.forEach((answer, i) => {
    const id = active[i].id;
    if (answer.status === "fulfilled") {
      if (state.jobs.has(id)) state.jobs.set(id, answer.value);
    } else if (answer.reason?.status === 404) state.jobs.delete(id); // deleted elsewhere
  });
  // A poll that failed says so once; the next one that works clears what it said.
  const failed = answers.find((a) => a.status === "rejected" && a.reason?.status !== 404);
  if (failed) say("video", t("media_error", { message: failed.reason.message }), true);
  else if (state.pollFailed) say("video", "");
  state.pollFailed = Boolean(failed);
  updateJobs();
  schedule();
}

// Refresh the unfinished jobs' cards in place: a bar's value and text change, focus stays.
function updateJobs() {
  let rebuilt = false;
  for (const job of state.jobs.values()) {
    const card = document.getElementById(`job-${job.id}`);
    if (!card || card.dataset.status !== job.status) {
      rebuilt = true;
      continue;
    }
    if (!ACTIVE.has(job.status)) continue;
    card.querySelector("progress").value = job.progress;
    card.querySelector(".job-status").textContent = job.status === "queued" ? t("media_status_queued") : t("media_status_in_progress", { progress: job.progress });
  }
  const shown = $("jobs").children.length;
  if (rebuilt || shown !== state.jobs.size) renderJobs();
}
