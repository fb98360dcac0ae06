/**
 * <upload-widget>: direct-to-provider uploads through the upload broker API.
 *
 * Dependency-free ES module. The file bytes go straight from the browser to the storage provider
 * (S3 presigned POST/PUT or a signed Cloudinary upload); our server only presigns and confirms:
 *
 *   POST {apiBase}/uploads/               -> {id, upload: {method, url, fields, headers, expires_at}}
 *   <method> upload.url                   (XHR, so the browser reports real upload progress)
 *   POST {apiBase}/uploads/{id}/confirm/  ({} for S3; the provider's JSON answer for Cloudinary)
 *
 * Large files (file.size >= multipartThreshold) go up as a multipart upload instead when the
 * active provider has them (GET {apiBase}/config/ -> capabilities.large_uploads "multipart"):
 *
 *   POST   {apiBase}/uploads/multipart/                 -> {id, part_size, part_count, ...}
 *   POST   {apiBase}/uploads/{id}/multipart/parts/      {part_numbers} -> presigned PUT URLs
 *   PUT    each part (a Blob slice; XHR, progress summed over the parts) -> ETag header
 *   POST   {apiBase}/uploads/{id}/multipart/complete/   {parts: [{part_number, etag}]}
 *   GET    {apiBase}/uploads/{id}/multipart/parts/      (on retry: only missing parts are sent)
 *   DELETE {apiBase}/uploads/{id}/multipart/            (on cancel)
 *
 * Files above one request's limit at a provider with chunked uploads get `upload.protocol`
 * "chunked" in the create answer: the same signed request once per chunk (the chunk as `file`,
 * `upload.headers` plus `Content-Range: bytes start-end/total`), in order; each chunk is retried
 * with backoff; the last chunk's JSON answer is what confirm takes. What was acknowledged is kept
 * in localStorage, so picking the same file again after a reload resumes (docs/widget.md).
 *
 * Usage: <upload-widget api-base="/api/v1"></upload-widget>, or mount(element, options).
 * Events (bubbling CustomEvents on the widget element): upload:progress, upload:done,
 * upload:error, upload:cancel. See docs/widget.md.
 */

const DEFAULTS = Object.freeze({
  apiBase: "/api/v1",
  csrfToken: null,
  csrfCookieName: "csrftoken",
  token: null,
  accept: null,
  maxSize: null,
  loadConfig: true,
  credentials: "same-origin",
  concurrency: 3,
  multiple: true,
  multipartThreshold: 100 * 1024 * 1024,
  partConcurrency: 3,
  // Chunked uploads: attempts per chunk (first try included) and the first backoff delay.
  chunkAttempts: 5,
  chunkBackoffMs: 500,
  resume: true,
});

// Backoff between attempts of one chunk: chunkBackoffMs, doubled each time, at most this.
const MAX_CHUNK_BACKOFF_MS = 8_000;
const RESUME_PREFIX = "upload-widget:chunked:";

// Instructions this close to expiry are not reused for a retry: a fresh presign is cheaper
// than an upload the provider refuses at the end.
const INSTRUCTIONS_SAFETY_MS = 30_000;
const MILESTONES = [25, 50, 75];
// The API signs at most this many parts per request.
const SIGN_BATCH = 100;
// S3 refusals of a complete that a retry can fix by re-sending parts (the upload stays pending).
const RESUMABLE_COMPLETE_CODES = ["invalid_part", "part_too_small", "missing_parts"];

let instanceCounter = 0;

function readCookie(name) {
  for (const part of document.cookie ? document.cookie.split(";") : []) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  // textContent only: file names and server messages are never parsed as HTML.
  if (text !== null) node.textContent = text;
  return node;
}

/** An error with the pieces a user (and an event listener) can act on. */
export class UploadError extends Error {
  constructor(message, { stage, status = 0, code = "", retryable = false, restart = false } = {}) {
    super(message);
    this.name = "UploadError";
    this.stage = stage;
    this.status = status;
    this.code = code;
    this.retryable = retryable;
    // restart: a retry must start over with a new presign (the old row/instructions are dead).
    this.restart = restart;
  }
}

function isRetryableStatus(status) {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

async function apiErrorFrom(response, stage) {
  let message = `The server answered ${response.status} ${response.statusText}`.trim();
  let code = "";
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || "";
    } else if (body && typeof body.detail === "string") {
      message = body.detail;
    }
  } catch {
    // Not JSON (a proxy error page): the status line is the best we have.
  }
  const status = response.status;
  const retryAfter = response.headers.get("Retry-After");
  if (status === 503 && retryAfter) message = `${message} (try again in ${retryAfter} s)`;
  return new UploadError(message, {
    stage,
    status,
    code,
    retryable: isRetryableStatus(status) || (stage === "confirm" && (status === 409 || status === 410)),
    restart: status === 410,
  });
}

/** The provider's own words when it refuses an upload (Cloudinary JSON or S3 XML). */
function providerMessage(xhr) {
  const text = xhr.responseText || "";
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return body.error.message;
  } catch {
    // S3 answers XML
  }
  const match = /<Message>([\s\S]*?)<\/Message>/.exec(text);
  if (match) return match[1];
  return `The storage provider answered ${xhr.status}`;
}

function parseProviderJson(xhr) {
  const type = xhr.getResponseHeader("Content-Type") || "";
  if (!type.includes("json") || !xhr.responseText) return null;
  try {
    const body = JSON.parse(xhr.responseText);
    return body && typeof body === "object" && !Array.isArray(body) ? body : null;
  } catch {
    return null;
  }
}

/** One file's journey. States: queued, presigning, uploading, confirming, done, error, cancelled. */
class UploadItem {
  constructor(controller, file, index) {
    this.controller = controller;
    this.file = file;
    this.key = `${controller.uid}-${index}`;
    this.state = "queued";
    this.upload = null; // the presign answer (row + instructions)
    this.result = null; // the confirm answer
    this.error = null;
    this.loaded = 0;
    this.xhr = null;
    this.abort = null;
    this.announced = new Set();
    this.previewUrl = null;
    this.render();
  }

  get contentType() {
    return this.file.type || "application/octet-stream";
  }

  get percent() {
    return this.file.size ? Math.min(100, Math.floor((this.loaded / this.file.size) * 100)) : 0;
  }

  render() {
    const name = this.file.name;
    this.node = el("li", { className: "uw-item", "data-state": this.state, "data-key": this.key });
    const head = el("div", { className: "uw-item-head" });
    this.thumb = el("span", { className: "uw-thumb", "aria-hidden": "true" });
    head.append(
      this.thumb,
      el("span", { className: "uw-name", title: name }, name),
      el("span", { className: "uw-size" }, formatBytes(this.file.size)),
    );
    this.progress = el("progress", {
      className: "uw-progress",
      max: 100,
      value: 0,
      "aria-label": `Upload progress of ${name}`,
    });
    this.status = el("p", { className: "uw-status" }, "Waiting");
    this.actions = el("div", { className: "uw-actions" });
    this.cancelButton = this.button("Cancel", `Cancel upload of ${name}`, "uw-cancel", () =>
      this.cancel(),
    );
    this.retryButton = this.button("Retry", `Retry upload of ${name}`, "uw-retry", () =>
      this.retry(),
    );
    this.removeButton = this.button("Remove", `Remove ${name} from the list`, "uw-remove", () =>
      this.remove(),
    );
    this.actions.append(this.cancelButton, this.retryButton, this.removeButton);
    this.node.append(head, this.progress, this.status, this.actions);
    this.sync();
  }

  button(label, ariaLabel, className, onClick) {
    const node = el("button", { type: "button", className: `uw-button ${className}`, "aria-label": ariaLabel }, label);
    node.addEventListener("click", onClick);
    return node;
  }

  setState(state, statusText) {
    this.state = state;
    if (statusText !== undefined) this.statusText = statusText;
    this.sync();
  }

  sync() {
    this.node.dataset.state = this.state;
    this.progress.value = this.state === "done" ? 100 : this.percent;
    this.status.textContent = this.statusText || "Waiting";
    this.status.classList.toggle("uw-status--error", this.state === "error");
    const active = ["queued", "presigning", "uploading"].includes(this.state);
    this.cancelButton.hidden = !active;
    this.retryButton.hidden = !(
      this.state === "cancelled" ||
      (this.state === "error" && this.error && this.error.retryable)
    );
    this.removeButton.hidden = !["done", "error", "cancelled"].includes(this.state);
  }

  async run() {
    try {
      if (!this.upload) {
        this.setState("presigning", "Preparing upload…");
        this.multipart = await this.controller.wantsMultipart(this.file);
        if (this.state === "cancelled") return;
      }
      if (this.multipart) {
        await this.runMultipart();
        return;
      }
      if (!this.upload && this.controller.options.resume) this.restoreChunked();
      if (!this.upload || (!this.providerPayload && this.instructionsStale())) {
        this.forgetChunked();
        this.providerPayload = null;
        this.setState("presigning", "Preparing upload…");
        this.upload = await this.controller.presign(this);
        this.chunksDone = 0;
      }
      if (this.state === "cancelled") return;
      if (!this.providerPayload) {
        this.setState("uploading", this.chunksDone ? "Resuming upload…" : "Uploading 0 %");
        this.controller.announce(`${this.file.name}: uploading`);
        if (this.upload.upload.protocol === "chunked") {
          this.providerPayload = await this.sendChunks();
          this.saveChunked();
        } else {
          this.providerPayload = await this.sendToProvider();
        }
      }
      this.setState("confirming", "Verifying…");
      this.result = await this.controller.confirm(this);
      this.finish();
    } catch (error) {
      if (this.state === "cancelled") return;
      this.fail(error);
    }
  }

  /** Large files on S3: create (or resume), send the missing parts, complete. */
  async runMultipart() {
    this.abort = new AbortController();
    const { signal } = this.abort;
    try {
      if (this.upload && !this.partsDone) {
        this.setState("presigning", "Resuming upload…");
        try {
          // Resume: S3 tells which parts it already holds; only the others are sent again.
          const held = await this.controller.multipartCall(this, "GET", "parts/", null, "upload", signal);
          this.parts = new Map(
            held.parts
              .filter((part) => part.size === this.partLength(part.part_number))
              .map((part) => [part.part_number, part.etag]),
          );
        } catch (error) {
          if (!(error instanceof UploadError && error.status === 410)) throw error;
          this.upload = null; // expired or aborted meanwhile: start over
        }
      }
      if (this.state === "cancelled") return;
      if (!this.upload) {
        this.setState("presigning", "Preparing upload…");
        const created = await this.controller.createMultipart(this, signal);
        if (this.state === "cancelled") {
          this.controller.abortMultipart(created.id);
          return;
        }
        this.upload = created;
        this.parts = new Map();
        this.partsDone = false;
      }
      if (!this.partsDone) {
        await this.sendParts(signal);
        this.partsDone = true;
      }
      this.setState("confirming", "Verifying…");
      const parts = [...this.parts].map(([number, etag]) => ({ part_number: number, etag }));
      try {
        this.result = await this.controller.multipartCall(this, "POST", "complete/", { parts }, "confirm", signal);
      } catch (error) {
        if (error instanceof UploadError && RESUMABLE_COMPLETE_CODES.includes(error.code)) {
          this.partsDone = false; // S3 refused some part: a retry lists and re-sends
        }
        throw error;
      }
    } finally {
      this.abort = null;
    }
    this.finish();
  }

  partLength(number) {
    const size = this.upload.part_size;
    return Math.max(0, Math.min(size, this.file.size - (number - 1) * size));
  }

  /** Upload every part S3 does not hold yet, `partConcurrency` at a time. */
  async sendParts(signal) {
    const count = this.upload.part_count;
    const missing = [];
    for (let number = 1; number <= count; number += 1) {
      if (!this.parts.has(number)) missing.push(number);
    }
    this.partXhrs = new Set();
    this.partLoaded = new Map(); // part number -> bytes sent so far, for parts in flight
    this.heldBytes = 0;
    for (const number of this.parts.keys()) this.heldBytes += this.partLength(number);
    this.signed = new Map(); // part number -> Promise of its instructions
    this.loaded = this.heldBytes;
    this.lastReported = 0;
    this.setState("uploading", `Uploading ${this.percent} %`);
    this.controller.announce(`${this.file.name}: uploading`);
    this.progressed();

    const queue = missing.slice();
    let failure = null;
    const worker = async () => {
      while (queue.length && !failure && this.state === "uploading") {
        const number = queue.shift();
        try {
          const part = await this.partInstructions(number, missing, signal);
          if (failure || this.state !== "uploading") return;
          this.parts.set(number, await this.sendPart(number, part));
        } catch (error) {
          // Parts already in flight may finish (S3 keeps them for a retry); no new ones start.
          if (!failure) failure = error;
        }
      }
    };
    const workers = Math.max(1, Math.min(Number(this.controller.options.partConcurrency) || 1, missing.length));
    await Promise.all(Array.from({ length: workers }, worker));
    this.partXhrs.clear();
    if (failure) throw failure;
    if (this.state !== "uploading") throw new UploadError("Cancelled", { stage: "upload" });
  }

  /** A part's PUT instructions; signs it with the next unsigned missing parts (one request). */
  async partInstructions(number, missing, signal) {
    const pending = this.signed.get(number);
    if (pending) {
      const part = await pending;
      const expires = Date.parse(part.expires_at);
      if (Number.isFinite(expires) && expires - Date.now() >= INSTRUCTIONS_SAFETY_MS) return part;
    }
    const batch = [number];
    for (const other of missing.slice(missing.indexOf(number) + 1)) {
      if (batch.length >= SIGN_BATCH) break;
      if (!this.signed.has(other) && !this.parts.has(other)) batch.push(other);
    }
    const request = this.controller
      .multipartCall(this, "POST", "parts/", { part_numbers: batch }, "upload", signal)
      .then((body) => new Map(body.parts.map((part) => [part.part_number, part])));
    for (const other of batch) {
      const one = request.then((parts) => parts.get(other));
      one.catch(() => {}); // awaited (and reported) only by the worker that needs it
      this.signed.set(other, one);
    }
    return this.signed.get(number);
  }

  /** PUT one part (a slice of the file); resolves with S3's ETag. */
  sendPart(number, part) {
    const start = (number - 1) * this.upload.part_size;
    const length = this.partLength(number);
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.partXhrs.add(xhr);
      const settle = () => {
        this.partXhrs.delete(xhr);
        this.partLoaded.delete(number);
      };
      xhr.open((part.method || "PUT").toUpperCase(), part.url);
      for (const [name, value] of Object.entries(part.headers || {})) {
        xhr.setRequestHeader(name, value);
      }
      xhr.upload.onprogress = (event) => {
        this.partLoaded.set(number, Math.min(event.loaded, length));
        this.partsProgressed();
      };
      xhr.onload = () => {
        settle();
        if (xhr.status >= 200 && xhr.status < 300) {
          const etag = xhr.getResponseHeader("ETag");
          if (!etag) {
            this.partsProgressed();
            reject(
              new UploadError(
                "The storage provider's answer has no readable ETag (the bucket's CORS rule must expose ETag).",
                { stage: "upload", status: xhr.status },
              ),
            );
            return;
          }
          this.heldBytes += length;
          this.partsProgressed();
          resolve(etag);
        } else {
          this.partsProgressed();
          // A part refused (e.g. an expired URL) is signed again on retry; the upload stays.
          reject(
            new UploadError(`The storage provider refused the file: ${providerMessage(xhr)}`, {
              stage: "upload",
              status: xhr.status,
              retryable: true,
            }),
          );
        }
      };
      xhr.onerror = () => {
        settle();
        this.partsProgressed();
        reject(
          new UploadError("Could not reach the storage provider (network or CORS error).", {
            stage: "upload",
            retryable: true,
          }),
        );
      };
      xhr.onabort = () => {
        settle();
        reject(new UploadError("Cancelled", { stage: "upload" }));
      };
      xhr.send(this.file.slice(start, start + length));
    });
  }

  partsProgressed() {
    if (this.state !== "uploading") return;
    let loaded = this.heldBytes;
    for (const bytes of this.partLoaded.values()) loaded += bytes;
    this.loaded = Math.min(loaded, this.file.size);
    this.progressed();
  }

  // --- chunked uploads ----------------------------------------------------------------------

  /** Where this file's chunked progress is kept (same name, size and modification time). */
  get resumeKey() {
    const f = this.file;
    return `${RESUME_PREFIX}${f.name}:${f.size}:${f.lastModified || 0}`;
  }

  saveChunked() {
    if (!this.controller.options.resume) return;
    try {
      const record = { upload: this.upload, chunksDone: this.chunksDone, payload: this.providerPayload || null };
      localStorage.setItem(this.resumeKey, JSON.stringify(record));
    } catch {
      // Storage full or disabled: the upload goes on, it just cannot resume after a reload.
    }
  }

  restoreChunked() {
    try {
      const saved = JSON.parse(localStorage.getItem(this.resumeKey) || "null");
      if (saved && saved.upload && saved.upload.upload && saved.upload.upload.protocol === "chunked") {
        this.upload = saved.upload;
        this.chunksDone = Number(saved.chunksDone) || 0;
        // The last chunk was answered before the reload: only confirm is left.
        this.providerPayload = saved.payload || null;
      }
    } catch {
      this.forgetChunked();
    }
  }

  forgetChunked() {
    try {
      localStorage.removeItem(this.resumeKey);
    } catch {
      // nothing kept
    }
  }

  /**
   * Send the file chunk by chunk with the same instructions; resolves with the last chunk's
   * JSON answer (the provider's upload response). Chunks already acknowledged (`chunksDone`,
   * e.g. before a reload) are not sent again.
   */
  async sendChunks() {
    const instructions = this.upload.upload;
    const { chunk_size: size, content_range: template } = instructions.chunked;
    const total = this.file.size;
    const count = Math.max(1, Math.ceil(total / size));
    this.loaded = Math.min(total, (this.chunksDone || 0) * size);
    this.lastReported = -1;
    this.progressed();
    this.saveChunked();
    let answer = null;
    for (let index = this.chunksDone || 0; index < count; index += 1) {
      const start = index * size;
      const end = Math.min(total, start + size) - 1;
      const range = template.replace("{start}", start).replace("{end}", end).replace("{total}", total);
      answer = await this.sendChunkWithRetries(instructions, start, end, range);
      this.chunksDone = index + 1;
      if (index + 1 < count) this.saveChunked();
    }
    this.loaded = total;
    this.progressed();
    return answer || {};
  }

  async sendChunkWithRetries(instructions, start, end, range) {
    const attempts = Math.max(1, Number(this.controller.options.chunkAttempts) || 1);
    let delay = Math.max(0, Number(this.controller.options.chunkBackoffMs) || 0);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.sendChunk(instructions, start, end, range);
      } catch (error) {
        const transient = error instanceof UploadError && isRetryableStatus(error.status) && !error.cancelled;
        if (!transient || attempt >= attempts || this.state !== "uploading") throw error;
        this.statusText = `Retrying in ${Math.round(delay / 100) / 10} s (attempt ${attempt + 1} of ${attempts})…`;
        this.sync();
        await new Promise((resolve) => {
          this.backoffTimer = setTimeout(resolve, delay);
        });
        this.backoffTimer = null;
        if (this.state !== "uploading") throw new UploadError("Cancelled", { stage: "upload" });
        delay = Math.min(MAX_CHUNK_BACKOFF_MS, delay * 2);
      }
    }
  }

  /** One chunk: the instructions' POST with the chunk as `file` and its Content-Range. */
  sendChunk(instructions, start, end, range) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      const length = end - start + 1;
      xhr.open((instructions.method || "POST").toUpperCase(), instructions.url);
      for (const [name, value] of Object.entries(instructions.headers || {})) {
        xhr.setRequestHeader(name, value);
      }
      xhr.setRequestHeader("Content-Range", range);
      xhr.upload.onprogress = (event) => {
        if (!event.lengthComputable) return;
        // Never backwards: a retried chunk's bytes count once it passes what was shown.
        const sent = start + Math.round((event.loaded / event.total) * length);
        this.loaded = Math.max(this.loaded, Math.min(sent, end));
        this.progressed();
      };
      xhr.onload = () => {
        this.xhr = null;
        if (xhr.status >= 200 && xhr.status < 300) {
          this.loaded = Math.max(this.loaded, end + 1);
          this.progressed();
          resolve(parseProviderJson(xhr) || {});
          return;
        }
        reject(
          new UploadError(`The storage provider refused the file: ${providerMessage(xhr)}`, {
            stage: "upload",
            status: xhr.status,
            retryable: true,
            // Refused for the request's own reasons (signature expired, ranges): start over.
            restart: xhr.status === 400 || xhr.status === 401 || xhr.status === 403,
          }),
        );
      };
      xhr.onerror = () => {
        this.xhr = null;
        reject(
          new UploadError("Could not reach the storage provider (network or CORS error).", {
            stage: "upload",
            retryable: true,
          }),
        );
      };
      xhr.onabort = () => {
        this.xhr = null;
        const cancelled = new UploadError("Cancelled", { stage: "upload" });
        cancelled.cancelled = true;
        reject(cancelled);
      };
      const form = new FormData();
      for (const [name, value] of Object.entries(instructions.fields || {})) {
        form.append(name, value);
      }
      form.append("file", this.file.slice(start, end + 1), this.file.name);
      xhr.send(form);
    });
  }

  instructionsStale() {
    const expires = Date.parse(this.upload && this.upload.upload && this.upload.upload.expires_at);
    return !Number.isFinite(expires) || expires - Date.now() < INSTRUCTIONS_SAFETY_MS;
  }

  sendToProvider() {
    const instructions = this.upload.upload;
    const method = (instructions.method || "POST").toUpperCase();
    this.loaded = 0;
    this.lastReported = 0;
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open(method, instructions.url);
      for (const [name, value] of Object.entries(instructions.headers || {})) {
        xhr.setRequestHeader(name, value);
      }
      xhr.upload.onprogress = (event) => {
        if (!event.lengthComputable) return;
        // The multipart envelope makes event.total a little bigger than the file.
        this.loaded = Math.round((event.loaded / event.total) * this.file.size);
        this.progressed();
      };
      xhr.upload.onload = () => {
        this.loaded = this.file.size;
        this.progressed();
      };
      xhr.onload = () => {
        this.xhr = null;
        if (xhr.status >= 200 && xhr.status < 300) {
          this.loaded = this.file.size;
          this.progressed();
          // Cloudinary answers JSON that confirm must carry; S3 answers 204/201 without JSON.
          resolve(parseProviderJson(xhr) || {});
        } else {
          this.loaded = 0;
          reject(
            new UploadError(`The storage provider refused the file: ${providerMessage(xhr)}`, {
              stage: "upload",
              status: xhr.status,
              retryable: true,
              restart: xhr.status === 400 || xhr.status === 403,
            }),
          );
        }
      };
      xhr.onerror = () => {
        this.xhr = null;
        this.loaded = 0;
        reject(
          new UploadError("Could not reach the storage provider (network or CORS error).", {
            stage: "upload",
            retryable: true,
          }),
        );
      };
      xhr.onabort = () => {
        this.xhr = null;
        reject(new UploadError("Cancelled", { stage: "upload" }));
      };
      if (method === "PUT") {
        xhr.send(this.file);
      } else {
        const form = new FormData();
        // Order matters to S3: every policy field first, the file last.
        for (const [name, value] of Object.entries(instructions.fields || {})) {
          form.append(name, value);
        }
        form.append("file", this.file, this.file.name);
        xhr.send(form);
      }
    });
  }

  progressed() {
    // upload.onprogress, upload.onload and onload can all report the same final bytes.
    if (this.loaded === this.lastReported) return;
    this.lastReported = this.loaded;
    const percent = this.percent;
    if (this.state === "uploading") this.statusText = `Uploading ${percent} %`;
    this.sync();
    for (const milestone of MILESTONES) {
      if (percent >= milestone && !this.announced.has(milestone)) {
        this.announced.add(milestone);
        this.controller.announce(`${this.file.name}: ${milestone} percent uploaded`);
      }
    }
    this.controller.emit("upload:progress", {
      file: this.file,
      uploadId: this.upload ? this.upload.id : null,
      loaded: this.loaded,
      total: this.file.size,
      percent,
    });
  }

  finish() {
    this.forgetChunked();
    this.loaded = this.file.size;
    this.error = null;
    this.setState("done", "Uploaded");
    this.thumb.replaceChildren();
    if (this.contentType.startsWith("image/") && typeof URL.createObjectURL === "function") {
      // A local preview: the stored object may be private (S3) and need a signed URL.
      this.previewUrl = URL.createObjectURL(this.file);
      this.thumb.append(el("img", { src: this.previewUrl, alt: "", className: "uw-thumb-img" }));
    }
    if (this.result && this.result.url) {
      const link = el(
        "a",
        { className: "uw-link", href: this.result.url, target: "_blank", rel: "noopener noreferrer" },
        `Open ${this.file.name}`,
      );
      this.status.replaceChildren(document.createTextNode("Uploaded · "), link);
    }
    this.controller.announce(`${this.file.name} uploaded`);
    this.controller.emit("upload:done", { file: this.file, upload: this.result });
    this.controller.settled(this);
  }

  fail(error) {
    const err =
      error instanceof UploadError
        ? error
        : new UploadError(error && error.message ? error.message : String(error), {
            stage: this.state,
            retryable: true,
          });
    this.error = err;
    if (err.stage === "presign" || err.restart) {
      this.upload = null;
      this.providerPayload = null;
      this.chunksDone = 0;
      this.forgetChunked();
    }
    if (err.stage === "upload") this.providerPayload = null;
    this.setState("error", err.message);
    this.controller.announce(`${this.file.name}: ${err.message}`);
    this.controller.emit("upload:error", {
      file: this.file,
      uploadId: this.upload ? this.upload.id : null,
      stage: err.stage,
      status: err.status,
      code: err.code,
      message: err.message,
      retryable: err.retryable,
    });
    this.controller.settled(this);
  }

  cancel() {
    if (!["queued", "presigning", "uploading"].includes(this.state)) return;
    // A single upload's row stays pending; the cleanup job removes it once its instructions
    // expire. A multipart upload is aborted now (S3 frees the parts, the row becomes deleted).
    this.setState("cancelled", "Cancelled");
    if (this.abort) this.abort.abort();
    if (this.xhr) this.xhr.abort();
    for (const xhr of this.partXhrs || []) xhr.abort();
    let aborted = Promise.resolve();
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    if (this.multipart && this.upload) {
      aborted = this.controller.abortMultipart(this.upload.id);
      this.upload = null;
    }
    if (this.upload && this.upload.upload && this.upload.upload.protocol === "chunked") {
      // The chunks sent so far are no asset; the row is deleted now (its job removes whatever
      // the provider holds under the key) and a retry starts a new upload.
      aborted = this.controller.deleteUpload(this.upload.id);
      this.forgetChunked();
      this.upload = null;
      this.chunksDone = 0;
    }
    this.loaded = 0;
    this.providerPayload = null;
    this.sync();
    this.controller.announce(`${this.file.name}: upload cancelled`);
    this.controller.emit("upload:cancel", {
      file: this.file,
      uploadId: this.upload ? this.upload.id : null,
      // Settles once the server knows (a multipart abort or a chunked upload's delete finished).
      aborted,
    });
    this.controller.settled(this);
  }

  retry() {
    if (!["error", "cancelled"].includes(this.state)) return;
    this.error = null;
    this.loaded = 0;
    this.announced.clear();
    this.setState("queued", "Waiting");
    this.controller.pump();
  }

  remove() {
    if (this.multipart && this.upload && this.state === "error") {
      // Nobody will retry it: free the parts S3 holds instead of waiting for the cleanup job.
      this.controller.abortMultipart(this.upload.id);
      this.upload = null;
    }
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.node.remove();
    this.controller.forget(this);
  }
}

/** The widget behaviour on any container element. Returned by mount(). */
export class UploadController {
  constructor(root, options = {}) {
    instanceCounter += 1;
    this.uid = `uw${instanceCounter}`;
    this.root = root;
    this.options = { ...DEFAULTS, ...options };
    this.options.apiBase = String(this.options.apiBase).replace(/\/+$/, "");
    this.items = [];
    this.counter = 0;
    this.config = null;
    this.build();
    if (this.options.loadConfig) this.ready = this.loadConfig();
    else this.ready = Promise.resolve(null);
    this.applyHints();
  }

  build() {
    const inputId = `${this.uid}-input`;
    const hintId = `${this.uid}-hint`;
    this.container = el("div", { className: "uw" });
    this.zone = el("div", { className: "uw-zone" });
    this.input = el("input", {
      type: "file",
      id: inputId,
      className: "uw-input",
      multiple: this.options.multiple,
      "aria-describedby": hintId,
    });
    const label = el("label", { for: inputId, className: "uw-label" });
    label.append(
      el("span", { className: "uw-label-main" }, "Drop files here or "),
      el("span", { className: "uw-label-action" }, "choose files"),
    );
    this.hint = el("p", { className: "uw-hint", id: hintId });
    this.zone.append(this.input, label, this.hint);
    this.list = el("ul", { className: "uw-list", "aria-label": "Uploads" });
    this.live = el("div", { className: "uw-live", role: "status", "aria-live": "polite" });
    this.container.append(this.zone, this.list, this.live);
    this.root.append(this.container);

    this.input.addEventListener("change", () => {
      this.addFiles(this.input.files);
      // Reset so picking the same file again fires change again.
      this.input.value = "";
    });
    const over = (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      this.zone.classList.add("uw-zone--over");
    };
    this.zone.addEventListener("dragenter", over);
    this.zone.addEventListener("dragover", over);
    this.zone.addEventListener("dragleave", (event) => {
      if (!this.zone.contains(event.relatedTarget)) this.zone.classList.remove("uw-zone--over");
    });
    this.zone.addEventListener("drop", (event) => {
      event.preventDefault();
      this.zone.classList.remove("uw-zone--over");
      if (event.dataTransfer && event.dataTransfer.files) this.addFiles(event.dataTransfer.files);
    });
  }

  headers(json = true) {
    const headers = { Accept: "application/json" };
    if (json) headers["Content-Type"] = "application/json";
    if (this.options.token) {
      headers.Authorization = `Token ${this.options.token}`;
    } else {
      const csrf = this.options.csrfToken || readCookie(this.options.csrfCookieName);
      if (csrf) headers["X-CSRFToken"] = csrf;
    }
    return headers;
  }

  async loadConfig() {
    try {
      const response = await fetch(`${this.options.apiBase}/config/`, {
        headers: this.headers(false),
        credentials: this.options.credentials,
      });
      if (!response.ok) return null;
      this.config = await response.json();
      this.applyHints();
      return this.config;
    } catch {
      return null; // hints are optional; the server still decides at presign time
    }
  }

  /** accept/maxSize are hints for the picker and the text; the server is the authority. */
  applyHints() {
    const config = this.config || {};
    const accept = this.options.accept || (config.allowed_content_types || []).join(",");
    const maxSize = this.options.maxSize || config.max_upload_size || null;
    if (accept) this.input.setAttribute("accept", accept);
    const parts = [];
    if (maxSize) parts.push(`Up to ${formatBytes(Number(maxSize))} per file`);
    if (accept) parts.push(accept.split(",").map((t) => t.trim()).join(", "));
    this.hint.textContent = parts.join(" · ");
    this.hint.hidden = parts.length === 0;
  }

  addFiles(fileList) {
    const files = Array.from(fileList || []);
    const added = [];
    for (const file of this.options.multiple ? files : files.slice(0, 1)) {
      this.counter += 1;
      const item = new UploadItem(this, file, this.counter);
      this.items.push(item);
      this.list.append(item.node);
      added.push(item);
    }
    if (added.length) this.announce(`${added.length} file${added.length > 1 ? "s" : ""} added`);
    this.pump();
    return added;
  }

  pump() {
    let active = this.items.filter((i) => ["presigning", "uploading", "confirming"].includes(i.state)).length;
    for (const item of this.items) {
      if (active >= this.options.concurrency) break;
      if (item.state === "queued") {
        active += 1;
        item.run();
      }
    }
  }

  settled() {
    this.pump();
  }

  forget(item) {
    this.items = this.items.filter((i) => i !== item);
  }

  async presign(item) {
    item.abort = new AbortController();
    let response;
    try {
      response = await fetch(`${this.options.apiBase}/uploads/`, {
        method: "POST",
        headers: this.headers(),
        credentials: this.options.credentials,
        signal: item.abort.signal,
        body: JSON.stringify({
          filename: item.file.name,
          content_type: item.contentType,
          size: item.file.size,
        }),
      });
    } catch (error) {
      if (error && error.name === "AbortError") throw new UploadError("Cancelled", { stage: "presign" });
      throw new UploadError("Could not reach the upload server.", { stage: "presign", retryable: true });
    } finally {
      item.abort = null;
    }
    if (!response.ok) throw await apiErrorFrom(response, "presign");
    return response.json();
  }

  /**
   * Multipart for this file? Only when the active provider has multipart uploads
   * (`capabilities.large_uploads` from GET /config/), and from multipartThreshold up.
   */
  async wantsMultipart(file) {
    await this.ready;
    const threshold = Number(this.options.multipartThreshold);
    const capabilities = (this.config && this.config.capabilities) || {};
    return Boolean(
      capabilities.large_uploads === "multipart" && threshold > 0 && file.size >= threshold,
    );
  }

  async createMultipart(item, signal) {
    return this.apiCall("POST", "/uploads/multipart/", {
      body: { filename: item.file.name, content_type: item.contentType, size: item.file.size },
      stage: "presign",
      signal,
    });
  }

  /** `path` is relative to /uploads/{id}/multipart/. */
  async multipartCall(item, method, path, body, stage, signal) {
    const base = `/uploads/${encodeURIComponent(item.upload.id)}/multipart/`;
    try {
      return await this.apiCall(method, base + path, { body, stage, signal });
    } catch (error) {
      // Gone (expired, aborted): a retry starts a new upload.
      if (error instanceof UploadError && error.status === 410) error.retryable = true;
      throw error;
    }
  }

  async apiCall(method, path, { body = null, stage, signal } = {}) {
    let response;
    try {
      response = await fetch(`${this.options.apiBase}${path}`, {
        method,
        headers: this.headers(body !== null),
        credentials: this.options.credentials,
        signal,
        body: body === null ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (error && error.name === "AbortError") throw new UploadError("Cancelled", { stage });
      throw new UploadError("Could not reach the upload server.", { stage, retryable: true });
    }
    if (!response.ok) throw await apiErrorFrom(response, stage);
    return response.json();
  }

  /** Cancel/remove: S3 frees the parts, the row becomes deleted. Best effort (else cleanup). */
  abortMultipart(uploadId) {
    return fetch(`${this.options.apiBase}/uploads/${encodeURIComponent(uploadId)}/multipart/`, {
      method: "DELETE",
      headers: this.headers(false),
      credentials: this.options.credentials,
    }).catch(() => null);
  }

  /** Cancel of a chunked upload: DELETE the row (best effort; else the cleanup job expires it). */
  deleteUpload(uploadId) {
    return fetch(`${this.options.apiBase}/uploads/${encodeURIComponent(uploadId)}/`, {
      method: "DELETE",
      headers: this.headers(false),
      credentials: this.options.credentials,
    }).catch(() => null);
  }

  async confirm(item) {
    let response;
    try {
      response = await fetch(`${this.options.apiBase}/uploads/${encodeURIComponent(item.upload.id)}/confirm/`, {
        method: "POST",
        headers: this.headers(),
        credentials: this.options.credentials,
        body: JSON.stringify(item.providerPayload || {}),
      });
    } catch {
      throw new UploadError("Could not reach the upload server to confirm.", {
        stage: "confirm",
        retryable: true,
      });
    }
    if (!response.ok) throw await apiErrorFrom(response, "confirm");
    return response.json();
  }

  announce(message) {
    // Replace, not append: screen readers read the new text; a growing log would be re-read.
    this.live.textContent = message;
  }

  emit(type, detail) {
    this.root.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  destroy() {
    for (const item of this.items) item.cancel();
    this.container.remove();
  }
}

/** Mount the widget into `element`; returns the UploadController. */
export function mount(element, options = {}) {
  if (!element) throw new Error("mount(): no element given");
  return new UploadController(element, options);
}

function numberOrNull(value) {
  if (value === null || value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

/**
 * <upload-widget api-base csrf-token accept max-size concurrency multipart-threshold
 *  part-concurrency no-config single>.
 */
export class UploadWidget extends HTMLElement {
  connectedCallback() {
    if (this.controller) return;
    if (Object.prototype.hasOwnProperty.call(this, "options")) {
      // Set before this module upgraded the element: an own property shadows the setter.
      const early = this.options;
      delete this.options;
      this.options = early;
    }
    const options = {
      ...(this.pendingOptions || {}),
    };
    const attr = (name) => this.getAttribute(name);
    if (attr("api-base")) options.apiBase = attr("api-base");
    if (attr("csrf-token")) options.csrfToken = attr("csrf-token");
    if (attr("token")) options.token = attr("token");
    if (attr("accept")) options.accept = attr("accept");
    if (numberOrNull(attr("max-size"))) options.maxSize = numberOrNull(attr("max-size"));
    if (numberOrNull(attr("concurrency"))) options.concurrency = numberOrNull(attr("concurrency"));
    if (numberOrNull(attr("multipart-threshold")) !== null) {
      options.multipartThreshold = numberOrNull(attr("multipart-threshold")); // 0: never
    }
    if (numberOrNull(attr("part-concurrency"))) {
      options.partConcurrency = numberOrNull(attr("part-concurrency"));
    }
    if (this.hasAttribute("no-config")) options.loadConfig = false;
    if (this.hasAttribute("single")) options.multiple = false;
    this.controller = mount(this, options);
  }

  /** Options that cannot go in markup (e.g. a token): set before the element is connected. */
  set options(value) {
    this.pendingOptions = { ...value };
    if (this.controller) Object.assign(this.controller.options, value);
  }

  get options() {
    return this.controller ? this.controller.options : { ...(this.pendingOptions || {}) };
  }

  addFiles(files) {
    return this.controller ? this.controller.addFiles(files) : [];
  }
}

if (typeof customElements !== "undefined" && !customElements.get("upload-widget")) {
  customElements.define("upload-widget", UploadWidget);
}
