// demixer web page: only the public v1 API, no external requests, no build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const state = { key: "", fileId: null, file: null, job: null, watch: null, models: null };

// ---------- errors next to the control that caused them ----------
function errorFor(el) {
  const section = el.closest("form, .drop, section");
  return $(":scope > [data-testid=error]", section) || $("[data-testid=error]", section);
}
function showError(el, err) {
  const box = errorFor(el);
  const text = err instanceof Error ? err.message : String(err);
  if (box) box.textContent = text;
  console.error(text);
}
function clearError(el) { const box = errorFor(el); if (box) box.textContent = ""; }

// ---------- API ----------
class ApiError extends Error {}
async function apiError(response) {
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) message = `${body.error.code}: ${body.error.message}`;
    else if (body && body.detail) message = JSON.stringify(body.detail);
  } catch (e) { /* not JSON */ }
  return new ApiError(message);
}
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  const init = { method, headers };
  if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  let response;
  try { response = await fetch(path, init); } catch (e) { throw new ApiError(`network error: ${e.message}`); }
  if (!response.ok) throw await apiError(response);
  return response.status === 204 ? null : response.json();
}

// ---------- session / key ----------
async function startSession() {
  try {
    const response = await fetch("/v1/session");
    if (response.ok) {
      state.key = (await response.json()).api_key;
      $("#session-info").textContent = "local session";
      return ready();
    }
  } catch (e) { /* fall through to the key field */ }
  const stored = localStorage.getItem("demixer.apiKey");
  $("#key-section").hidden = false;
  if (stored) { $("#api-key").value = stored; await useKey(stored); }
}
async function useKey(key) {
  const form = $("#key-form");
  clearError(form);
  state.key = key.trim();
  try {
    await api("GET", "/v1/models");
  } catch (e) { showError(form, e); return; }
  localStorage.setItem("demixer.apiKey", state.key);
  $("#session-info").textContent = "using your API key";
  $("#key-section").hidden = true;
  await ready();
}
$("#key-form").addEventListener("submit", (ev) => { ev.preventDefault(); useKey($("#api-key").value); });

async function ready() {
  await Promise.all([loadModels(), loadHistory()]);
}

// ---------- models ----------
async function loadModels() {
  const err = $("#models-error");
  try {
    state.models = await api("GET", "/v1/models");
  } catch (e) { err.textContent = `could not list models: ${e.message}`; return; }
  err.textContent = "";
  const select = $("#model-select");
  select.replaceChildren();
  for (const m of state.models.engine_models) {
    select.append(new Option(`${m.id} — ${m.stems.join(", ")}`, m.id));
  }
  const formats = state.models.engine_models[0]?.limits.output_formats || ["wav"];
  $("#format-select").replaceChildren(...formats.map((f) => new Option(f, f)));
  if (!state.models.engine_models.length) err.textContent = "no engine model is installed on this server";
  renderStems();
  updateSubmit();
}
function renderStems() {
  const model = state.models?.engine_models.find((m) => m.id === $("#model-select").value);
  const box = $("#stem-choices");
  box.replaceChildren();
  for (const stem of model ? model.stems : []) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), { type: "checkbox", value: stem, checked: true });
    label.append(input, ` ${stem}`);
    box.append(label);
  }
}
$("#model-select").addEventListener("change", renderStems);
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    const prompt = $("input[name=mode]:checked").value === "prompt";
    $("#prompt-options").hidden = !prompt;
    $("#stems-options").hidden = prompt;
  });
}

// ---------- upload ----------
function updateSubmit() { $("#submit").disabled = !(state.fileId && state.models); }
function upload(file) {
  const drop = $("#drop");
  clearError(drop);
  state.file = file;
  state.fileId = null;
  updateSubmit();
  const bar = $("#upload-progress");
  const text = $("#upload-text");
  bar.value = 0;
  text.textContent = `uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("purpose", "audio.separate.input");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/files");
  xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
  xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = ev.loaded / ev.total; };
  xhr.onerror = () => { text.textContent = ""; showError(drop, "upload failed: network error"); };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status !== 201 || !body) {
      text.textContent = "";
      const msg = body?.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${xhr.status}`;
      showError(drop, `upload failed: ${msg}`);
      return;
    }
    bar.value = 1;
    state.fileId = body.file_id;
    const secs = body.duration ? ` (${body.duration.toFixed(1)} s)` : "";
    text.textContent = `uploaded ${body.file_name}${secs}`;
    updateSubmit();
  };
  xhr.send(form);
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
  const format = $("#format-select").value;
  const prompt = $("input[name=mode]:checked").value === "prompt";
  let path, input;
  if (prompt) {
    path = "/v1/queue/audio/separate";
    input = { file_id: state.fileId, prompt: $("#prompt").value, output_format: format };
  } else {
    const stems = [...document.querySelectorAll("#stem-choices input:checked")].map((i) => i.value);
    path = "/v1/queue/audio/stems";
    input = { file_id: state.fileId, model: $("#model-select").value, stems, output_format: format };
  }
  const quality = $("#quality-select").value;  // "": the server's default
  if (quality) input.quality = quality;
  $("#submit").disabled = true;
  try {
    const job = await api("POST", path, { input });
    watch(job.request_id);
  } catch (e) { showError(form, e); }
  finally { updateSubmit(); }
  loadHistory();
});

function showStatus(s) {
  $("#job-status").textContent = s.status;
  const pct = s.status === "COMPLETED" ? 100 : Math.round((s.progress || 0) * 100);
  $("#job-progress").value = pct;
  $("#job-percent").textContent = `${pct}%`;
  $("#job-queue").textContent = s.status === "IN_QUEUE" && s.queue_position != null
    ? `(${s.queue_position} ahead in the queue)` : "";
  if (s.logs) $("#job-logs").textContent = s.logs.map((l) => `${l.timestamp}  ${l.message}`).join("\n");
  $("#cancel").disabled = FINAL.has(s.status);
  if (s.status === "FAILED" && s.error) showError($("#job-status"), `${s.error.code}: ${s.error.message}`);
}

async function watch(requestId) {
  if (state.watch) state.watch.abort();
  const ctrl = new AbortController();
  state.watch = ctrl;
  state.job = requestId;
  $("#job").hidden = false;
  $("#mixer").hidden = true;
  clearError($("#job-status"));
  $("#job-id").textContent = requestId;
  $("#job-logs").textContent = "";
  showStatus({ status: "IN_QUEUE", progress: 0 });
  let last = null;
  try {
    last = await streamStatus(requestId, ctrl.signal);
  } catch (e) {
    if (ctrl.signal.aborted) return;
    console.warn(`status stream failed (${e.message}); polling`);
  }
  // The stream can end early (a proxy, a network blip): poll until final.
  while (!ctrl.signal.aborted && !(last && FINAL.has(last.status))) {
    try {
      last = await api("GET", `/v1/queue/requests/${requestId}/status?logs=true`);
      showStatus(last);
    } catch (e) { showError($("#job-status"), e); return; }
    if (!FINAL.has(last.status)) await new Promise((r) => setTimeout(r, 1000));
  }
  if (ctrl.signal.aborted) return;
  loadHistory();
  if (last.status === "COMPLETED") loadResult(requestId);
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
async function streamStatus(requestId, signal) {
  const url = `/v1/queue/requests/${requestId}/status/stream?interval=1&logs=true`;
  const response = await fetch(url, { headers: { Authorization: `Bearer ${state.key}` }, signal });
  if (!response.ok) throw await apiError(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (event === "status") { last = JSON.parse(data); showStatus(last); }
      else if (event === "error") {
        const body = JSON.parse(data);
        throw new ApiError(`${body.error.code}: ${body.error.message}`);
      }
    }
  }
}

$("#cancel").addEventListener("click", async () => {
  const button = $("#cancel");
  clearError(button);
  try {
    const answer = await api("PUT", `/v1/queue/requests/${state.job}/cancel`);
    $("#job-status").textContent = answer.status;
  } catch (e) { showError(button, e); }
});

// ---------- mixer ----------
const mixer = {
  ctx: null, stems: [], original: null, playing: false, startedAt: 0, offset: 0,
  sources: [], ab: false, duration: 0,
};
window.demixerMixer = mixer;

function effectiveGain(stem) {
  if (mixer.ab) return 0;
  const solo = mixer.stems.some((s) => s.solo);
  if (stem.muted || (solo && !stem.solo)) return 0;
  return stem.volume;
}
mixer.gains = () => Object.fromEntries(mixer.stems.map((s) => [s.name, effectiveGain(s)]));
function applyGains() {
  for (const s of mixer.stems) if (s.gainNode) s.gainNode.gain.value = effectiveGain(s);
  if (mixer.originalGain) mixer.originalGain.gain.value = mixer.ab ? 1 : 0;
}

async function loadResult(requestId) {
  const section = $("#mixer");
  section.hidden = false;
  clearError($("#download-all"));
  stop();
  $("#stems").replaceChildren();
  mixer.stems = [];
  try {
    const result = await api("GET", `/v1/queue/requests/${requestId}/result`);
    mixer.ctx = mixer.ctx || new AudioContext();
    const outputs = Object.entries(result.data).filter(([, v]) => v && typeof v === "object" && v.url);
    const stems = await Promise.all(outputs.map(async ([name, out]) => {
      const response = await fetch(out.url);
      if (!response.ok) throw await apiError(response);
      const bytes = await response.arrayBuffer();
      const buffer = await mixer.ctx.decodeAudioData(bytes.slice(0));
      return { name, fileName: out.file_name, type: out.content_type, bytes, buffer, muted: false, solo: false, volume: 1 };
    }));
    mixer.stems = stems;
    mixer.duration = Math.max(...stems.map((s) => s.buffer.duration));
    $("#seek").max = String(mixer.duration);
    stems.forEach(renderStemRow);
    mixer.original = null;
    if (state.file) {
      try {
        mixer.original = await mixer.ctx.decodeAudioData(await state.file.arrayBuffer());
      } catch (e) { showError($("#ab"), `the original cannot be played here: ${e.message}`); }
    }
    $("#ab").disabled = !mixer.original;
  } catch (e) { showError($("#download-all"), e); }
}

function renderStemRow(stem) {
  const row = document.createElement("div");
  row.className = "stem";
  row.dataset.testid = "stem-row";
  row.dataset.stem = stem.name;
  const id = `vol-${stem.name}`;
  row.innerHTML = `<strong></strong><canvas width="800" height="48" role="img"></canvas>
    <div class="controls">
      <button type="button" aria-pressed="false" data-testid="stem-mute">Mute</button>
      <button type="button" aria-pressed="false" data-testid="stem-solo">Solo</button>
      <label class="sr" for="${id}"></label>
      <input id="${id}" type="range" min="0" max="1.5" step="0.01" value="1" data-testid="stem-volume">
      <a href="#" data-testid="stem-download">Download</a>
    </div>`;
  $("strong", row).textContent = stem.name;
  $("label", row).textContent = `${stem.name} volume`;
  $("canvas", row).setAttribute("aria-label", `${stem.name} waveform`);
  const mute = $("[data-testid=stem-mute]", row);
  mute.addEventListener("click", () => {
    stem.muted = !stem.muted;
    mute.setAttribute("aria-pressed", String(stem.muted));
    applyGains();
  });
  const solo = $("[data-testid=stem-solo]", row);
  solo.addEventListener("click", () => {
    stem.solo = !stem.solo;
    solo.setAttribute("aria-pressed", String(stem.solo));
    applyGains();
  });
  $("[data-testid=stem-volume]", row).addEventListener("input", (ev) => {
    stem.volume = Number(ev.target.value);
    applyGains();
  });
  const link = $("[data-testid=stem-download]", row);
  link.href = URL.createObjectURL(new Blob([stem.bytes], { type: stem.type }));
  link.download = stem.fileName;
  const canvas = $("canvas", row);
  canvas.addEventListener("click", (ev) => {
    const rect = canvas.getBoundingClientRect();
    seek(((ev.clientX - rect.left) / rect.width) * mixer.duration);
  });
  drawWaveform(canvas, stem.buffer);
  $("#stems").append(row);
}

function drawWaveform(canvas, buffer) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  const data = buffer.getChannelData(0);
  const step = Math.max(1, Math.floor(data.length / width));
  g.fillStyle = "#2556d8";
  for (let x = 0; x < width; x++) {
    let lo = 0, hi = 0;
    for (let i = x * step; i < Math.min(data.length, (x + 1) * step); i++) {
      if (data[i] < lo) lo = data[i];
      if (data[i] > hi) hi = data[i];
    }
    g.fillRect(x, ((1 - hi) * height) / 2, 1, Math.max(1, ((hi - lo) * height) / 2));
  }
}

function position() {
  return mixer.playing ? mixer.offset + mixer.ctx.currentTime - mixer.startedAt : mixer.offset;
}
function play() {
  const ctx = mixer.ctx;
  if (!ctx || !mixer.stems.length) return;
  ctx.resume();
  const when = ctx.currentTime + 0.05; // one start time for every stem: sample-accurate sync
  mixer.sources = [];
  for (const stem of mixer.stems) {
    stem.gainNode = ctx.createGain();
    stem.gainNode.connect(ctx.destination);
    const src = new AudioBufferSourceNode(ctx, { buffer: stem.buffer });
    src.connect(stem.gainNode);
    src.start(when, mixer.offset);
    mixer.sources.push(src);
  }
  if (mixer.original) {
    mixer.originalGain = ctx.createGain();
    mixer.originalGain.connect(ctx.destination);
    const src = new AudioBufferSourceNode(ctx, { buffer: mixer.original });
    src.connect(mixer.originalGain);
    src.start(when, mixer.offset);
    mixer.sources.push(src);
  }
  applyGains();
  mixer.sources[0].onended = () => { if (mixer.playing && position() >= mixer.duration - 0.1) { stop(); mixer.offset = 0; } };
  mixer.startedAt = when;
  mixer.playing = true;
  $("#play").textContent = "Pause";
  tick();
}
function stop() {
  if (mixer.playing) mixer.offset = Math.max(0, position());
  for (const s of mixer.sources) { s.onended = null; try { s.stop(); } catch (e) { /* not started */ } }
  mixer.sources = [];
  mixer.playing = false;
  $("#play").textContent = "Play";
}
function seek(t) {
  const wasPlaying = mixer.playing;
  stop();
  mixer.offset = Math.min(Math.max(0, t), mixer.duration);
  if (wasPlaying) play();
  tick();
}
function fmt(t) { const s = Math.floor(t); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; }
function tick() {
  const t = Math.min(position(), mixer.duration);
  $("#seek").value = String(t);
  $("#time").textContent = `${fmt(t)} / ${fmt(mixer.duration)}`;
  if (mixer.playing) requestAnimationFrame(tick);
}
$("#play").addEventListener("click", () => (mixer.playing ? stop() : play()));
$("#seek").addEventListener("input", (ev) => seek(Number(ev.target.value)));
$("#ab").addEventListener("click", () => {
  mixer.ab = !mixer.ab;
  $("#ab").setAttribute("aria-pressed", String(mixer.ab));
  $("#ab").textContent = mixer.ab ? "A/B: original" : "A/B: stems";
  applyGains();
});

// The current mix, rendered offline (same gains as playback).
mixer.render = async () => {
  const rate = mixer.stems[0].buffer.sampleRate;
  const length = Math.ceil(mixer.duration * rate);
  const off = new OfflineAudioContext(2, length, rate);
  const sources = mixer.ab && mixer.original ? [[mixer.original, 1]] : mixer.stems.map((s) => [s.buffer, effectiveGain(s)]);
  for (const [buffer, gain] of sources) {
    const g = off.createGain();
    g.gain.value = gain;
    g.connect(off.destination);
    const src = new AudioBufferSourceNode(off, { buffer });
    src.connect(g);
    src.start(0);
  }
  return off.startRendering();
};
mixer.energy = async () => {
  const out = await mixer.render();
  let sum = 0;
  for (let c = 0; c < out.numberOfChannels; c++) for (const v of out.getChannelData(c)) sum += v * v;
  return sum;
};

function encodeWav(buffer) {
  const channels = buffer.numberOfChannels, rate = buffer.sampleRate, n = buffer.length;
  const out = new DataView(new ArrayBuffer(44 + n * channels * 2));
  const text = (o, s) => { for (let i = 0; i < s.length; i++) out.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); out.setUint32(4, 36 + n * channels * 2, true); text(8, "WAVE");
  text(12, "fmt "); out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, channels, true);
  out.setUint32(24, rate, true); out.setUint32(28, rate * channels * 2, true);
  out.setUint16(32, channels * 2, true); out.setUint16(34, 16, true);
  text(36, "data"); out.setUint32(40, n * channels * 2, true);
  const data = [...Array(channels).keys()].map((c) => buffer.getChannelData(c));
  let o = 44;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < channels; c++) {
      const v = Math.max(-1, Math.min(1, data[c][i]));
      out.setInt16(o, v < 0 ? v * 0x8000 : v * 0x7fff, true);
      o += 2;
    }
  }
  return out.buffer;
}
mixer.encodeWav = encodeWav;

// ---------- zip (STORE, no compression) ----------
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[n] = c >>> 0; }
  return t;
})();
function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function zipStore(files) {
  const enc = new TextEncoder();
  const parts = [], central = [];
  let offset = 0;
  for (const { name, bytes } of files) {
    const nameBytes = enc.encode(name), data = new Uint8Array(bytes), crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true); local.setUint16(4, 20, true); local.setUint16(6, 0x0800, true);
    local.setUint32(14, crc, true); local.setUint32(18, data.length, true); local.setUint32(22, data.length, true);
    local.setUint16(26, nameBytes.length, true);
    const dir = new DataView(new ArrayBuffer(46));
    dir.setUint32(0, 0x02014b50, true); dir.setUint16(4, 20, true); dir.setUint16(6, 20, true); dir.setUint16(8, 0x0800, true);
    dir.setUint32(16, crc, true); dir.setUint32(20, data.length, true); dir.setUint32(24, data.length, true);
    dir.setUint16(28, nameBytes.length, true); dir.setUint32(42, offset, true);
    parts.push(local, nameBytes, data);
    central.push(dir, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const size = central.reduce((n, p) => n + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, size, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}
mixer.zip = zipStore;

function save(blob, name) {
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}
$("#download-all").addEventListener("click", () => {
  const button = $("#download-all");
  clearError(button);
  if (!mixer.stems.length) { showError(button, "no stems to download yet"); return; }
  save(zipStore(mixer.stems.map((s) => ({ name: s.fileName, bytes: s.bytes }))), `${state.job}.zip`);
});
$("#render-mix").addEventListener("click", async () => {
  const button = $("#render-mix");
  clearError(button);
  try {
    save(new Blob([encodeWav(await mixer.render())], { type: "audio/wav" }), `${state.job}-mix.wav`);
  } catch (e) { showError(button, `could not render the mix: ${e.message}`); }
});

// ---------- history ----------
async function loadHistory() {
  const list = $("#history-list");
  clearError(list);
  let page;
  try { page = await api("GET", "/v1/queue/requests?limit=50"); } catch (e) { showError(list, e); return; }
  list.replaceChildren();
  if (!page.data.length) { list.append(Object.assign(document.createElement("li"), { textContent: "no requests yet" })); return; }
  for (const job of page.data) {
    const li = document.createElement("li");
    li.dataset.testid = "history-item";
    const info = document.createElement("span");
    info.textContent = `${new Date(job.created_at).toLocaleString()} · ${job.engine_model} · ${job.status}`;
    const buttons = document.createElement("span");
    buttons.className = "row";
    const open = Object.assign(document.createElement("button"), { type: "button", className: "small", textContent: "Open" });
    open.addEventListener("click", () => { state.file = null; watch(job.request_id); });
    const del = Object.assign(document.createElement("button"), { type: "button", className: "small", textContent: "Delete" });
    del.setAttribute("aria-label", `Delete ${job.request_id}`);
    del.addEventListener("click", async () => {
      try { await api("DELETE", `/v1/queue/requests/${job.request_id}`); loadHistory(); } catch (e) { showError(list, e); }
    });
    buttons.append(open, del);
    li.append(info, buttons);
    list.append(li);
  }
}
$("#refresh").addEventListener("click", loadHistory);

startSession();
