// demixer web page: only the public v1 API, no external requests, no build step.
"use strict";

import { downloadAll, downloadMix } from "./mixdown.js";
import { glide, mixer, say } from "./mixer.js";
import { forgetThumbnails, openResult, thumbnails } from "./stems.js";
import "./timeline.js"; // the transport's buttons and the mixer's keys
import { stop } from "./transport.js";
import { FINAL, PlainError, bytes, colour, day, fromBody, length, seconds, songName, stateWords, timeLeft } from "./words.js";

const $ = (sel, root = document) => root.querySelector(sel);
// A phone has nothing to drop from: it is asked to choose.
const DROP_TITLE = matchMedia("(pointer: coarse)").matches ? "Choose a song or a video" : "Drop a song or a video here";
const state = { key: "", fileId: null, fileName: null, downmix: false, file: null, upload: null, job: null, watch: null, models: null, busy: false };

// ---------- errors next to the control that caused them ----------
function errorFor(el) {
  if (el.matches("p.error")) return el; // a box of its own (the part of the song's)
  const section = el.closest("form, .drop, section");
  return $(":scope > [data-testid=error]", section) || $("[data-testid=error]", section);
}
// A field that names its error box in aria-describedby (the key, the file picker) is marked
// invalid while the box says something: a screen reader says so, with the error, whenever the
// focus comes back to the field, not only once when the error appears.
function markInvalid(box, invalid) {
  if (!box?.id) return;
  for (const field of document.querySelectorAll(`[aria-describedby~="${box.id}"]`)) {
    if (invalid) field.setAttribute("aria-invalid", "true");
    else field.removeAttribute("aria-invalid");
  }
}
function showError(el, err) {
  const box = errorFor(el);
  const text = err instanceof Error ? err.message : String(err);
  if (box) box.textContent = text;
  markInvalid(box, true);
  console.warn(err?.code || "", text);
}
function clearError(el) {
  const box = errorFor(el);
  if (box) box.textContent = "";
  markInvalid(box, false);
}
// Text set only when it changes: a live region says it again at every write, even the same words.
function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
// Whether the focus is in el; whether it is on nothing (the body: what had it went away).
const focusIn = (el) => el.contains(document.activeElement);
const focusLost = () => [document.body, document.documentElement, null].includes(document.activeElement);

// ---------- API ----------
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  const init = { method, headers };
  if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  let response;
  try { response = await fetch(path, init); } catch (e) { throw new PlainError("NETWORK"); }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    throw fromBody(body, response.status);
  }
  return response.status === 204 ? null : response.json();
}

// ---------- session / key ----------
async function startSession() {
  try {
    const response = await fetch("/v1/session");
    if (response.ok) {
      const session = await response.json();
      state.key = session.api_key;
      showSession(`On this computer · account ${session.account_id}`);
      return ready();
    }
  } catch (e) { /* fall through to the key field */ }
  const stored = localStorage.getItem("demixer.apiKey");
  $("#key-section").hidden = false;
  if (stored) { $("#api-key").value = stored; await useKey(stored); }
}
function showSession(text) {
  $("#session-info").textContent = text;
  $("#switch-key").hidden = false;
}
async function useKey(key) {
  const form = $("#key-form");
  clearError(form);
  const previous = state.key; // a mistyped key must not end the session that works
  state.key = key.trim();
  try {
    await api("GET", "/v1/models");
  } catch (e) { state.key = previous; showError(form, e); return; }
  localStorage.setItem("demixer.apiKey", state.key);
  showSession(`Signed in with key ${state.key.slice(0, 10)}…`);
  // The key field goes away: the focus moves on to what comes next, choosing a song.
  const wasIn = focusIn($("#key-section"));
  $("#key-section").hidden = true;
  if (wasIn) $("#upload-input").focus();
  await ready();
}
$("#key-form").addEventListener("submit", (ev) => { ev.preventDefault(); useKey($("#api-key").value); });
$("#switch-key").addEventListener("click", () => {
  $("#key-section").hidden = false;
  $("#key-cancel").hidden = !state.key; // signed in: this key goes on until another works
  $("#api-key").focus();
});
$("#key-cancel").addEventListener("click", () => {
  clearError($("#key-form"));
  $("#key-section").hidden = true;
  $("#switch-key").focus(); // back where it was opened
});
// Escape puts the key field away as "Keep the current key" does, where there is a key to keep.
$("#key-section").addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && !$("#key-cancel").hidden) { ev.preventDefault(); $("#key-cancel").click(); }
});

async function ready() {
  const [, jobs] = await Promise.all([loadModels(), loadHistory(), loadRecent()]);
  // Opened (or reloaded) while a song is being separated: follow it again, as before.
  const running = (jobs || []).find((j) => !FINAL.has(j.status));
  if (running && !state.job) watch(running.request_id, { name: running.file_name, job: running });
}

// ---------- models ----------
function isWeak(m) { return /\bweak\b/i.test(m.quality || "") || /not working great/i.test(m.quality || ""); }

async function loadModels() {
  const err = $("#models-error");
  try {
    state.models = await api("GET", "/v1/models");
  } catch (e) { err.textContent = `The list of models could not be loaded. ${e.message}`; return; }
  err.textContent = "";
  const select = $("#model-select");
  select.replaceChildren();
  const models = [...state.models.engine_models].sort((a, b) => isWeak(a) - isWeak(b));
  for (const m of models) {
    const label = `${m.id} — ${m.stems.join(", ")}${isWeak(m) ? " (weak)" : ""}`;
    select.append(new Option(label, m.id));
  }
  const formats = state.models.engine_models[0]?.limits.output_formats || ["wav"];
  $("#format-select").replaceChildren(...formats.map((f) => new Option(f.toUpperCase(), f)));
  if (!models.length) err.textContent = "No model is installed on this server yet.";
  const separable = state.models.data.find((q) => q.id === "audio/separate")?.separable || [];
  $("#prompt-hint").textContent = separable.length ? `This server can separate: ${separable.join(", ")}.` : "";
  renderAvailable((state.models.catalogue || []).filter((m) => !m.installed));
  renderModel();
  updateSubmit();
}

function renderModel() {
  const model = state.models?.engine_models.find((m) => m.id === $("#model-select").value);
  const info = $("#model-info");
  info.replaceChildren();
  if (model) {
    const what = document.createElement("p");
    what.textContent = model.description;
    const how = document.createElement("p");
    how.className = "muted small";
    how.textContent = `Quality: ${model.quality}`;
    if (isWeak(model)) {
      const badge = Object.assign(document.createElement("span"), { className: "badge weak", textContent: "weak" });
      what.prepend(badge, " ");
    }
    const licence = document.createElement("p");
    licence.className = "muted small";
    licence.textContent = `Licence: ${model.license}${model.license_class ? ` (${model.license_class})` : ""}`;
    info.append(what, how, licence);
  }
  const box = $("#stem-choices");
  box.replaceChildren();
  (model ? model.stems : []).forEach((stem, i) => {
    const label = document.createElement("label");
    label.className = "chip";
    label.style.setProperty("--c", colour(stem, i));
    const input = Object.assign(document.createElement("input"), { type: "checkbox", value: stem, checked: true });
    input.addEventListener("change", updateSubmit);
    label.append(input, document.createTextNode(stem));
    box.append(label);
  });
  updateSubmit();
}

function renderAvailable(models) {
  const list = $("#available-models");
  list.replaceChildren();
  $("#more-models").hidden = !models.length;
  for (const m of models) {
    const li = document.createElement("li");
    const name = Object.assign(document.createElement("strong"), { textContent: m.id });
    const what = Object.assign(document.createElement("span"), { textContent: ` — ${m.description} ${m.quality ? `(${m.quality})` : ""}` });
    if (m.license_class && m.license_class !== "permissive") { // say it before anyone installs it
      what.textContent += ` Licence: ${m.license_class}.`;
    }
    const how = document.createElement("code");
    how.textContent = m.install;
    li.append(name, what, document.createElement("br"), "To add it, whoever runs the server runs: ", how);
    list.append(li);
  }
}

$("#model-select").addEventListener("change", renderModel);
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    const prompt = mode() === "prompt";
    $("#prompt-options").hidden = !prompt;
    $("#stems-options").hidden = prompt;
    updateSubmit();
  });
}
const mode = () => $("input[name=mode]:checked").value;
$("#prompt").addEventListener("input", updateSubmit);

// ---------- only in part of the song (the API's spans) ----------
// The times show once a part is chosen; "the whole song" sends no spans.
$("#part-mode").addEventListener("change", () => {
  const whole = !$("#part-mode").value;
  $("#part-times").hidden = whole;
  $("#part-hint").hidden = whole;
  clearError($("#part-error"));
});
// The spans to send ([] for the whole song), or an error in words for times that are not times.
// Whether the part fits the song (an end after its start, a start before the song's end) is the
// server's to say, in its words, as for any client of the API.
function partSpans() {
  const how = $("#part-mode").value;
  if (!how) return [];
  const start = seconds($("#part-start").value), end = seconds($("#part-end").value);
  if (start === null || end === null) {
    throw new Error("Write where the part starts and ends as minutes and seconds (1:05) or as seconds (65).");
  }
  return [{ start, end, include: how === "keep" }];
}

// ---------- what Separate can do now, and why not ----------
function updateSubmit() {
  const stems = document.querySelectorAll("#stem-choices input:checked").length;
  let why = "";
  if (state.busy) why = "A song is being separated. Wait for it, or cancel it.";
  else if (!state.models) why = "";
  else if (!state.fileId) why = state.upload ? "Wait for the upload to finish." : "First choose a song.";
  else if (mode() === "stems" && !stems) why = "Pick at least one stem.";
  else if (mode() === "prompt" && !$("#prompt").value.trim()) why = "Say which sound you want, e.g. “the singer”.";
  $("#submit").disabled = Boolean(why) || !state.models;
  $("#submit-hint").textContent = why;
}

// ---------- upload ----------
function upload(file) {
  const drop = $("#drop");
  clearError(drop);
  clearError($("#job-form"));
  if (state.upload) state.upload.abort();
  state.file = file;
  state.fileId = null;
  state.fileName = file.name;
  state.downmix = false;
  const bar = $("#upload-progress");
  const text = $("#upload-text");
  const failed = (err) => {
    state.upload = null;
    bar.value = 0;
    bar.hidden = true;
    text.textContent = "";
    $("#drop-title").textContent = DROP_TITLE;
    showError(drop, err);
    updateSubmit();
  };
  // A file over the server's limit is said at once, with the limit, not after it all went up.
  const most = state.models?.engine_models[0]?.limits.max_file_size;
  if (most && file.size > most) {
    failed(new PlainError("FILE_TOO_LARGE", `the most it takes is ${bytes(most)}`));
    return;
  }
  $("#upload-row").hidden = false;
  bar.hidden = false;
  bar.value = 0;
  text.textContent = `Uploading ${file.name}…`;
  $("#drop-title").textContent = file.name;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("purpose", "audio.separate.input");
  const xhr = new XMLHttpRequest();
  state.upload = xhr;
  updateSubmit();
  xhr.open("POST", "/v1/files");
  xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
  xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = ev.loaded / ev.total; };
  xhr.onerror = () => failed(new PlainError("NETWORK"));
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status !== 201 || !body) { failed(fromBody(body, xhr.status)); return; }
    state.upload = null;
    bar.value = 1;
    text.textContent = useUpload(body);
    updateSubmit();
    loadRecent();
  };
  xhr.send(form);
}
// The form separates this upload now (POST /v1/files' or GET /v1/files/{id}'s answer); returns
// the line that says it is ready. Surround sound (a film's 5.1) is folded to stereo, as it says.
function useUpload(body) {
  state.fileId = body.file_id;
  state.downmix = body.channels > 2;
  const long = body.duration ? ` · ${length(body.duration)}` : "";
  const folded = state.downmix ? ` · ${body.channels} channels, folded to stereo` : "";
  return `Ready: ${body.file_name}${long}${folded}`;
}
$("#upload-input").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); });
const drop = $("#drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const file = ev.dataTransfer.files[0];
  if (file) upload(file);
});

// ---------- submit, watch, cancel ----------
$("#job-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  clearError(form);
  clearError($("#part-error"));
  if (state.busy || $("#submit").disabled) return;
  const format = $("#format-select").value;
  let path, input;
  if (mode() === "prompt") {
    path = "/v1/queue/audio/separate";
    input = { file_id: state.fileId, prompt: $("#prompt").value, output_format: format };
    let spans;
    try { spans = partSpans(); } catch (e) { showError($("#part-error"), e); return; }
    if (spans.length) input.spans = spans;
  } else {
    const stems = [...document.querySelectorAll("#stem-choices input:checked")].map((i) => i.value);
    path = "/v1/queue/audio/stems";
    input = { file_id: state.fileId, model: $("#model-select").value, stems, output_format: format };
  }
  const quality = $("#quality-select").value;  // "": the server's default
  if (quality) input.quality = quality;
  if (state.downmix) input.downmix = true;
  // Stems to listen to, mix and download: where one would peak above full scale (a loud
  // master, an mp3 decoded past 0 dBFS, a folded 5.1), all are turned down by one gain
  // instead of clipping, so they keep their balance and still add up to the song.
  input.rescale = true;
  state.busy = true;
  updateSubmit();
  try {
    const job = await api("POST", path, { input });
    watch(job.request_id, { file: state.file, name: state.fileName });
  } catch (e) {
    state.busy = false;
    updateSubmit();
    showError(e.param?.startsWith("input.spans") ? $("#part-error") : form, e);
  }
  loadHistory();
});

function showStatus(s, progress) {
  setText($("#job-status"), stateWords(s));
  const pct = s.status === "COMPLETED" ? 100 : Math.round((s.progress || 0) * 100);
  $("#job-progress").value = pct;
  let detail = "";
  if (s.status === "IN_QUEUE") {
    detail = s.queue_position ? `${s.queue_position} ahead of it` : "next in line";
    if (s.waiting_reason) detail += " · no computer can run this model right now";
  } else if (s.status === "IN_PROGRESS" && !s.cancel_requested) {
    detail = `${pct} %`;
    const left = progress.estimate(s);
    if (left) detail += ` · ${left}`;
  } else if (s.status === "COMPLETED" && s.cancel_requested) {
    detail = "It finished before it could stop.";
  }
  $("#job-detail").textContent = detail;
  const cancel = $("#cancel");
  const had = document.activeElement === cancel;
  cancel.disabled = FINAL.has(s.status) || s.cancel_requested;
  if (had && cancel.disabled) $("#job-title").focus({ preventScroll: true }); // not lost with it
  if (s.status === "FAILED" && s.error) showError($("#job-status"), new PlainError(s.error.code));
  // Failed or cancelled: the same song can go back in the form, for another model.
  $("#job-again").hidden = !(FINAL.has(s.status) && s.file_id);
}

// Time left from the real progress while separating: the pace so far, not a guess.
function estimator() {
  let first = null;
  return {
    estimate(s) {
      const p = s.progress || 0;
      if (s.stage !== "separating" || p <= 0) return "";
      const now = performance.now() / 1000;
      if (!first) { first = { t: now, p }; return ""; }
      const done = p - first.p, spent = now - first.t;
      if (done < 0.02 || spent < 2) return "";
      return timeLeft((spent * (1 - p)) / done);
    },
  };
}

// focus: opened by the user (from the history): the focus goes to the view opened, the job's
// heading or, for a finished song, the mixer's.
async function watch(requestId, { file = null, name = null, job = null, focus = false } = {}) {
  if (state.watch) state.watch.abort();
  const ctrl = new AbortController();
  state.watch = ctrl;
  state.job = { id: requestId, file, name: name || job?.file_name || "song", info: job };
  const section = $("#job");
  section.hidden = false;
  stop(); // the song leaves the screen: it stops playing, too
  $("#mixer").hidden = true;
  clearError($("#job-status"));
  $("#job-title").textContent = state.job.name;
  section.scrollIntoView({ behavior: glide(), block: "start" });
  let last = job && FINAL.has(job.status) ? job : null;
  // Separate is disabled while the job runs: the keyboard's focus moves on to the job, not
  // back to the top of the page.
  const opened = focus && last?.status !== "COMPLETED"; // a finished song opens in the mixer
  if (opened || [$("#submit"), document.body].includes(document.activeElement)) $("#job-title").focus({ preventScroll: true });
  const progress = estimator();
  showStatus(job || { status: "IN_QUEUE", progress: 0 }, progress);
  state.busy = !last; // Separate waits for the song being watched
  updateSubmit();
  if (!last) {
    try {
      last = await streamStatus(requestId, ctrl.signal, (s) => { state.job.info = s; showStatus(s, progress); });
    } catch (e) {
      if (ctrl.signal.aborted) return;
      console.warn(`status stream failed (${e.message}); polling`);
    }
  }
  // The stream can end early (a proxy, a network blip): poll until final.
  while (!ctrl.signal.aborted && !(last && FINAL.has(last.status))) {
    try {
      last = await api("GET", `/v1/queue/requests/${requestId}/status`);
      state.job.info = last;
      showStatus(last, progress);
    } catch (e) { showError($("#job-status"), e); break; }
    if (!FINAL.has(last.status)) await new Promise((r) => setTimeout(r, 1000));
  }
  if (ctrl.signal.aborted) return;
  state.busy = false;
  updateSubmit();
  loadHistory();
  if (last?.status === "COMPLETED") showResult(requestId, last, focus, ctrl.signal);
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
async function streamStatus(requestId, signal, onStatus) {
  const url = `/v1/queue/requests/${requestId}/status/stream?interval=1`;
  const response = await fetch(url, { headers: { Authorization: `Bearer ${state.key}` }, signal });
  if (!response.ok) throw fromBody(null, response.status);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (event === "status") { last = JSON.parse(data); onStatus(last); }
      else if (event === "error") throw fromBody(JSON.parse(data));
    }
  }
}

$("#cancel").addEventListener("click", async () => {
  const button = $("#cancel");
  clearError(button);
  $("#job-title").focus({ preventScroll: true }); // Cancel is disabled now: not a lost focus
  button.disabled = true;
  try {
    const answer = await api("PUT", `/v1/queue/requests/${state.job.id}/cancel`);
    setText($("#job-status"), answer.status === "CANCELLED" ? "Cancelled" : "Stopping");
  } catch (e) { showError(button, e); button.disabled = false; }
});

// ---------- the result, in the mixer ----------
// signal: aborted when another song is opened (or this one deleted) before this one's stems
// have loaded: this one then leaves the screen to it.
async function showResult(requestId, info, opened, signal) {
  const err = $("#download-all");
  clearError(err);
  const song = songName(state.job.name);
  try {
    const result = await api("GET", `/v1/queue/requests/${requestId}/result`);
    if (signal.aborted) return;
    const prompt = info?.prompt;
    // The residual is the rest of the song in both modes; its file keeps the API's name.
    const labelOf = (name) => (name === "residual" ? "everything else" : prompt && name === "target" ? `“${prompt}”` : name);
    const outputs = Object.entries(result.data)
      .filter(([, v]) => v && typeof v === "object" && v.url)
      .map(([name, v]) => ({
        name, label: labelOf(name), url: v.url, fileName: v.file_name, type: v.content_type, rate: v.sample_rate,
        madeBy: result.made_by?.[name] || "",
      }))
      // What was asked for first, the rest of the song last: the outputs come in the model's
      // order, where "everything but the vocals" followed its residual (the vocals).
      .sort((a, b) => (a.name === "residual") - (b.name === "residual"));
    const original = state.job.file;
    $("#again").hidden = !state.job.info?.file_id; // from a URL: no upload to use again
    // The job's card goes: a focus in it (or on nothing) moves to the mixer's heading.
    const focus = opened || focusIn($("#job")) || focusLost();
    $("#job").hidden = true; // the mixer says the rest
    if (!opened) say(`${state.job.name}: ready. The stems are in the mixer.`);
    await openResult({
      title: state.job.name,
      song,
      outputs,
      original,
      originalNote: original ? "" : "Original: not here, because this song was not uploaded in this tab.",
      thumbsKey: requestId,
      gain: Object.values(result.data).find((v) => v && typeof v === "object" && v.url)?.gain ?? 1,
      focus,
      signal,
    });
  } catch (e) { if (!signal.aborted) showError(err, e); }
  loadHistory();
}
// ---------- the same song again, with another model ----------
// A separated (or failed) song goes back in the form by its upload, which the server keeps for
// a while: the musician picks another model or other stems and presses Separate, and nothing is
// sent again. file: the song's File where it was chosen in this tab (the mixer's A/B plays it).
async function separateAgain(fileId, name, file = null) {
  const drop = $("#drop");
  clearError(drop);
  clearError($("#job-form"));
  if (state.upload) { state.upload.abort(); state.upload = null; }
  let kept = null;
  try {
    kept = await api("GET", `/v1/files/${encodeURIComponent(fileId)}`);
  } catch (e) {
    if (!UPLOAD_GONE.has(e.code)) { showError(drop, e); return; }
  }
  $("#new-job").scrollIntoView({ behavior: glide(), block: "start" });
  if (kept?.status !== "uploaded") { // expired, deleted (with its song, in another tab): gone
    forgetChosenFile();
    showError(drop, `${name} is no longer on the server: its upload expired or was deleted. Choose the file again to separate it.`);
    $("#upload-input").focus({ preventScroll: true });
    return;
  }
  state.file = file || (state.fileId === fileId ? state.file : null);
  state.fileName = kept.file_name;
  $("#upload-input").value = ""; // choosing a file next uploads it, even the same one
  $("#upload-row").hidden = false;
  $("#upload-progress").hidden = true;
  $("#drop-title").textContent = kept.file_name;
  $("#upload-text").textContent = `${useUpload(kept)} · already on the server, not sent again. Pick another model or other stems.`;
  updateSubmit();
  // The focus goes where the next choice is made.
  (mode() === "prompt" ? $("#prompt") : $("#model-select")).focus({ preventScroll: true });
}
// The account's uploads still on the server, newest first, to choose one again; the picker
// shows only where there is one. A failed list leaves it hidden: the file can still be chosen.
async function loadRecent() {
  const select = $("#recent-uploads");
  let page;
  try {
    page = await api("GET", "/v1/files?status=uploaded&limit=20");
  } catch (e) { console.warn(e.code, e.message); return; }
  const options = page.data.map((f) => {
    const option = new Option(`${f.file_name} · ${day(f.created_at)}`, f.file_id);
    option.dataset.name = f.file_name;
    return option;
  });
  select.replaceChildren(new Option("Choose one…", ""), ...options);
  select.closest("label").hidden = !options.length;
}
$("#recent-uploads").addEventListener("change", async (ev) => {
  const select = ev.target;
  if (!select.value) return;
  await separateAgain(select.value, select.selectedOptions[0].dataset.name);
  select.value = ""; // the form says what was chosen; the picker is ready for another
  loadRecent();
});

for (const id of ["#again", "#job-again"]) {
  $(id).addEventListener("click", () => {
    const job = state.job;
    if (job?.info?.file_id) separateAgain(job.info.file_id, job.name, job.file);
  });
}

$("#download-all").addEventListener("click", () => {
  const button = $("#download-all");
  clearError(button);
  if (!mixer.stems.length) { showError(button, "There are no stems to download yet."); return; }
  downloadAll();
});
$("#render-mix").addEventListener("click", async () => {
  const button = $("#render-mix");
  if (button.getAttribute("aria-disabled") === "true") return; // one mix at a time
  clearError(button);
  // At a practice speed the mix is stretched here, which takes a while for a long song (seconds
  // to tens of seconds): the button says how far it is instead of looking as if nothing
  // happened. aria-disabled, not disabled: a disabled button would drop the keyboard's focus.
  const words = button.textContent;
  button.setAttribute("aria-disabled", "true");
  try {
    await downloadMix((done) => { button.textContent = `Making the mix… ${Math.floor(100 * done)} %`; });
  } catch (e) {
    showError(button, `The mix could not be made: ${e.message}`);
  } finally {
    button.textContent = words;
    button.removeAttribute("aria-disabled");
  }
});

// ---------- history ----------
function thumbnail(job, kept) {
  const box = document.createElement("span");
  box.className = "thumbs";
  const stems = kept || (job.stems || (job.prompt ? ["target"] : [])).map((s, i) => [s, colour(s, i), null]);
  for (const [name, c, cols] of stems.slice(0, 6)) {
    const t = document.createElement("span");
    t.className = "thumb";
    t.title = name;
    t.style.setProperty("--c", c);
    // No waveform kept in this browser (opened elsewhere, or not yet): a flat line, which no
    // one takes for the song's shape.
    if (!cols) t.title = `${name}: its waveform shows here once it is opened in this browser`;
    for (const h of cols || Array(12).fill(0)) {
      const bar = document.createElement("i");
      bar.style.height = `${Math.max(6, h)}%`;
      t.append(bar);
    }
    box.append(t);
  }
  return box;
}

// The list of the account's songs; it keeps itself fresh (every few seconds) while one of them
// is still waiting or separating. Answers the jobs listed. A refresh changes only the songs
// whose row would read differently: the rest, and a focus on one of their buttons, stay.
let historyTimer = null;
async function loadHistory() {
  const list = $("#history-list");
  clearError(list);
  clearTimeout(historyTimer);
  list.setAttribute("aria-busy", "true");
  let page;
  try {
    page = await api("GET", "/v1/queue/requests?limit=50");
  } catch (e) { showError(list, e); list.removeAttribute("aria-busy"); return []; }
  if (page.data.some((j) => !FINAL.has(j.status))) historyTimer = setTimeout(loadHistory, 3000);
  renderHistory(list, page.data);
  list.removeAttribute("aria-busy");
  return page.data;
}

function renderHistory(list, jobs) {
  const focused = focusIn(list) ? document.activeElement.id : "";
  const shown = new Map([...list.children].map((li) => [li.dataset.id || "", li]));
  const kept = thumbnails();
  const items = jobs.map((job) => {
    // What the row shows, as one string: the same string, the same row.
    const looks = JSON.stringify([job.status, stateWords(job), job.file_name, job.duration, job.prompt,
      job.stems, job.engine_model, day(job.created_at), kept[job.request_id] || null]);
    const li = shown.get(job.request_id);
    return li && li.dataset.looks === looks ? li : historyItem(job, looks, kept[job.request_id]);
  });
  if (!items.length) {
    items.push(shown.get("") || Object.assign(document.createElement("li"), {
      className: "muted", textContent: "Nothing yet: your separated songs will be listed here.",
    }));
  }
  // In place: a row is moved only when it is out of order (a moved row loses its focus).
  items.forEach((li, i) => { if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null); });
  while (list.children.length > items.length) list.lastElementChild.remove();
  if (focused && !focusIn(list)) document.getElementById(focused)?.focus({ preventScroll: true });
}

function historyItem(job, looks, kept) {
  const list = $("#history-list");
  const song = job.file_name || "a song";
  const li = document.createElement("li");
  li.dataset.testid = "history-item";
  li.dataset.id = job.request_id;
  li.dataset.looks = looks;
  const text = document.createElement("span");
  text.className = "what";
  // A long name is cut short on screen where a pointer hovers: the whole of it shows on hover
  // (where nothing hovers, app.css lets it wrap). Its own direction (dir=auto): an Arabic or
  // Hebrew name is cut at its end, not shown from the middle on.
  const name = Object.assign(document.createElement("strong"), { className: "song", textContent: song, title: song, dir: "auto" });
  const what = job.prompt ? `“${job.prompt}”` : (job.stems || []).join(", ") || job.engine_model;
  const facts = [job.duration ? length(job.duration) : null, what, day(job.created_at)].filter(Boolean).join(" · ");
  const meta = Object.assign(document.createElement("span"), { className: "muted small", textContent: facts });
  const badge = Object.assign(document.createElement("span"), { className: `state ${job.status.toLowerCase()}`, textContent: stateWords(job) });
  badge.dataset.testid = "history-state";
  text.append(name, meta);
  const buttons = document.createElement("span");
  buttons.className = "row";
  const open = Object.assign(document.createElement("button"), { type: "button", textContent: "Open", id: `open-${job.request_id}` });
  open.setAttribute("aria-label", `Open ${song}`);
  open.addEventListener("click", () => watch(job.request_id, { name: job.file_name, job, focus: true }));
  const del = Object.assign(document.createElement("button"), { type: "button", id: `delete-${job.request_id}` });
  // Delete asks once more (WCAG 3.3.4): the first press turns the button into "Confirm delete",
  // the second deletes. Leaving it (focus elsewhere, Escape, or 8 s) takes the question back.
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    del.className = "quiet";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${song}`);
  };
  disarm();
  del.addEventListener("blur", () => { if (armed) disarm(); });
  del.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && armed) { disarm(); say(`${song} is kept.`); } });
  del.addEventListener("click", async () => {
    if (!armed) {
      armed = setTimeout(disarm, 8000);
      del.className = "confirm";
      del.textContent = "Confirm delete";
      del.setAttribute("aria-label", `Confirm delete ${song}`);
      say(`Press again to delete ${song}.`);
      return;
    }
    disarm();
    setText($("#history-note"), "");
    try { await api("DELETE", `/v1/queue/requests/${job.request_id}`); } catch (e) { showError(list, e); return; }
    forgetThumbnails(job.request_id);
    if (state.job?.id === job.request_id) { // the song on screen is gone: so is its player
      if (state.watch) state.watch.abort();
      state.busy = false;
      updateSubmit();
      stop();
      $("#mixer").hidden = true;
      $("#job").hidden = true;
      state.job = null;
    }
    // The focus goes to the next song's Delete (else the one before, else the list's heading).
    const near = [li.nextElementSibling, li.previousElementSibling].find((el) => el?.dataset.id);
    const refocus = focusIn(li) || focusLost();
    li.remove();
    if (refocus) (near ? $(`#${CSS.escape(`delete-${near.dataset.id}`)}`) : $("#history-title")).focus();
    let words = "", failed = null;
    try { words = await deleteUpload(job, song); } catch (e) { failed = e; }
    loadHistory(); // first: it empties the list's error box
    if (failed) {
      showError(list, `${song}: its stems are deleted, but not the uploaded song. ${failed.message}`);
      return;
    }
    $("#history-note").textContent = words;
    say(words);
  });
  // The song back in the form for another model: a finished (or failed) song that was uploaded.
  if (FINAL.has(job.status) && job.file_id) {
    const again = Object.assign(document.createElement("button"), { type: "button", textContent: "Separate again", id: `again-${job.request_id}` });
    again.setAttribute("aria-label", `Separate again ${song}`);
    again.title = "Try another model or other stems on this song, without uploading it again";
    again.addEventListener("click", () => separateAgain(job.file_id, song, state.job?.id === job.request_id ? state.job.file : null));
    buttons.append(open, again, del);
  } else {
    buttons.append(open, del);
  }
  li.append(thumbnail(job, kept), text, badge, buttons);
  return li;
}
$("#refresh").addEventListener("click", loadHistory);

// Delete removes the song: the request's stems, and the upload they were made from once no
// other request of the account was made from it (the form keeps an upload for the next
// separation, so several may share one). Else the song stayed on the server for 72 h after the
// page said it was deleted. Answers what went, in words.
const UPLOAD_GONE = new Set(["NOT_FOUND", "FILE_NOT_FOUND", "FILE_EXPIRED", "GONE"]);
async function deleteUpload(job, song) {
  const fileId = job.file_id;
  if (!fileId) return `${song} deleted.`; // from a URL: nothing of it was uploaded
  let file;
  try {
    file = await api("GET", `/v1/files/${encodeURIComponent(fileId)}`);
  } catch (e) {
    if (UPLOAD_GONE.has(e.code)) return `${song} deleted.`; // the upload is gone already
    throw e;
  }
  // Every request made from the upload came after it: the list (newest first) is read back to
  // the upload's time, not further.
  const since = Date.parse(file.created_at);
  let others = 0;
  for (let cursor = null; ;) {
    const query = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const page = await api("GET", `/v1/queue/requests?limit=100${query}`);
    others += page.data.filter((j) => j.file_id === fileId && j.request_id !== job.request_id).length;
    const oldest = page.data[page.data.length - 1];
    if (!page.next_cursor || !oldest || Date.parse(oldest.created_at) < since) break;
    cursor = page.next_cursor;
  }
  if (others) {
    const which = others === 1 ? "another separation in your list was" : `${others} other separations in your list were`;
    return `${song}: these stems are deleted. The uploaded song stays: ${which} made from it.`;
  }
  try {
    await api("DELETE", `/v1/files/${encodeURIComponent(fileId)}`);
  } catch (e) {
    if (!UPLOAD_GONE.has(e.code)) throw e; // gone meanwhile (another tab, its retention): done
  }
  if (state.fileId === fileId) forgetChosenFile();
  loadRecent();
  return `${song} deleted: its stems and the uploaded song.`;
}

// The song chosen above was deleted: Separate asks for a song again.
function forgetChosenFile() {
  state.fileId = null;
  state.fileName = null;
  state.file = null;
  state.downmix = false;
  $("#upload-input").value = "";
  $("#upload-text").textContent = "";
  $("#upload-row").hidden = true;
  $("#drop-title").textContent = DROP_TITLE;
  updateSubmit();
}

$("#drop-title").textContent = DROP_TITLE;
updateSubmit();
startSession();
