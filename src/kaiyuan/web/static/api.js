// The app speaks only the public API, as any script would: OpenAI's envelope for errors.
const KEY = "kaiyuan.key";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function key() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  // The app's name in usage reports (the page sends no referrer, and the browser's user agent
  // would name it "Mozilla").
  const out = { "x-title": "kaiyuan web", ...extra };
  if (key()) out.authorization = `Bearer ${key()}`;
  return out;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    const error = body.error || {};
    message = typeof error === "string" ? error : error.message || message;
    code = error.code || null;
  } catch {
    /* not JSON: the status line says enough */
  }
  return new ApiError(response.status, message, code);
}

export async function call(method, path, body, { signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

// A raw body (a file) POSTed as is; the JSON answer.
export async function upload(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: headers({ "content-type": "application/octet-stream" }), body,
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// A file the browser would load by itself (<img>, <video>, a report), fetched with the key.
export async function blob(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

// A streamed chat completion: onChunk(parsed chunk) for each `data:` event, until [DONE].
export async function stream(path, body, onChunk, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "content-type": "application/json", accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(500, chunk.error.message || "error", chunk.error.code);
        onChunk(chunk);
      }
    }
  }
}

// A streamed NDJSON answer (Ollama's /api/pull): onObject(parsed line) for each line.
export async function lines(path, body, onObject, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "content-type": "application/json" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line) continue;
      const object = JSON.parse(line);
      if (object.error) throw new ApiError(500, object.error, null);
      onObject(object);
    }
    if (done) return;
  }
}
