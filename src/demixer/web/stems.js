// The stems on screen: opening a result (a row per stem: its name, waveform, volume, mute,
// solo and download), the waveforms drawn in the theme's colours, and the history's thumbnails.
"use strict";

import { $, MIN_DB, ORIGINAL, applyGains, glide, mixer, setPressed, when } from "./mixer.js";
import { scrubber } from "./timeline.js";
import { stop, tick } from "./transport.js";
import { colour } from "./words.js";

const PEAKS = 1200; // waveform columns computed per stem (drawn scaled to the canvas)
const THUMB = 40; // columns kept per stem for the history's thumbnails

// ---------- opening a result ----------
// model: what made the stems, in words ("" where it is not known).
// outputs: [{name, label, url, fileName, type, rate, duration?, channels?, madeBy?}] (rate: the
// stem file's sample rate, Hz; duration: seconds; channels: its count; madeBy: the model or
// recipe, a tooltip); original: a File to compare with, or null.
// gain: the one gain the server scaled every stem by so that none clips (1: none); the original
// plays at it too, so that A/B compares the sound, not the level.
// focus: the keyboard's focus moves to the mixer's heading (the view the user asked for, or the
// one that replaced the view their focus was in).
// signal: aborted when another song replaces this one while its stems load: this one stops
// there and adds nothing to the mixer.
// A song whose stems would take more of this device's memory to play than it can spare (see
// memoryBudget) is shown as its files to download, with a button to open it in the mixer
// anyway (anyway: true; files: the stems' Blobs, fetched already).
export async function openResult(options) {
  const { title, model = "", song, outputs, original, originalLead = 0, originalNote, thumbsKey, gain = 1, focus = false, signal, anyway = false } = options;
  stop();
  mixer.offset = 0;
  mixer.duration = 0;
  mixer.loop = { on: false, start: 0, end: 0 };
  mixer.ab = false;
  mixer.song = song;
  mixer.stems = [];
  mixer.downloads = [];
  mixer.original = null; // decoded on the first A/B press (timeline.js)
  mixer.originalFile = original;
  mixer.originalLead = originalLead;
  mixer.originalLevel = gain;
  // The song before's download links and players each hold a copy of a stem: let them go with
  // it (a player taken off the page would play on unheard of).
  for (const link of document.querySelectorAll("#stems .download")) URL.revokeObjectURL(link.href);
  for (const player of document.querySelectorAll("#stems audio")) {
    player.pause();
    URL.revokeObjectURL(player.src);
  }
  $("#stems").replaceChildren();
  $("#mixer").classList.remove("files-only");
  $("#files-note").hidden = true;
  $("#mixer-title").textContent = title;
  $("#mixer-model").textContent = model;
  setPressed($("#loop"), false);
  setPressed($("#ab"), false);
  $("#loop-region").hidden = true;
  $("#ab").disabled = true;
  $("#ab").textContent = "Original"; // not still reading the song before's
  $("#ab").removeAttribute("aria-disabled");
  $("#ab-note").textContent = "";
  $("#mixer").hidden = false;
  $("#mixer").scrollIntoView({ behavior: glide(), block: "start" });
  if (focus) $("#mixer-title").focus({ preventScroll: true });
  tick();
  $("#time").textContent = "Loading the stems…";
  mixer.ctx = contextAt(outputs[0]?.rate);
  // A stem's file is fetched into a Blob, which the browser keeps out of the tab's memory (on
  // disk if it must): the download links and the zip use it as it is. The tab holds only what
  // playing needs, each stem decoded once, one file's bytes at a time while it is decoded: a
  // 10-minute song of 4 stems held 1.4 GB once open (the fetched files and their decodings)
  // and 2.2 GB while it opened (every file's bytes, a copy of each, and the decodings at once).
  const files = options.files || await Promise.all(outputs.map(async (out) => {
    const response = await fetch(out.url, { signal });
    if (!response.ok) throw new Error(`download failed (HTTP ${response.status})`);
    return response.blob();
  }));
  if (signal.aborted) return;
  mixer.downloads = outputs.map((out, i) => ({ name: out.fileName, blob: files[i] }));
  const need = decodedBytes(outputs, mixer.ctx.sampleRate), budget = memoryBudget();
  $("#mixer").classList.toggle("files-only", need > budget && !anyway);
  if (need > budget && !anyway) {
    showFiles(outputs, files, need, budget, () => openResult({ ...options, files, anyway: true, focus: true }));
    return;
  }
  const stems = [];
  for (const [i, out] of outputs.entries()) {
    if (signal.aborted) return;
    const buffer = await mixer.ctx.decodeAudioData(await files[i].arrayBuffer());
    stems.push({ ...out, file: files[i], buffer, colour: colour(out.name, i), muted: false, solo: false, db: 0, peaks: peaks(buffer) });
  }
  if (signal.aborted) return;
  mixer.stems = stems;
  mixer.duration = Math.max(...stems.map((s) => s.buffer.duration));
  stems.forEach(renderRow);
  applyGains();
  tick();
  if (thumbsKey) keepThumbnails(thumbsKey, stems);
  const note = $("#ab-note");
  note.textContent = original ? ORIGINAL : originalNote || "";
  $("#ab").disabled = !original;
  const db = (-20 * Math.log10(gain)).toFixed(1);
  if (gain < 1 && db !== "0.0") { // a gain that rounds to 0.0 dB is nothing to tell
    note.textContent += ` The stems were turned down together by ${db} dB so that none clips`
      + (original ? "; the original plays at the same level." : ".");
  }
}

// What playing the stems takes: each decoded whole, 4 bytes a sample per channel at the mixer's
// rate (bytes; a stem of unknown length or channels counts as none or as stereo).
function decodedBytes(outputs, rate) {
  return outputs.reduce((n, out) => n + 4 * rate * (out.duration || 0) * (out.channels || 2), 0);
}

const GIB = 2 ** 30;
// The most the decoded stems may take of this device's memory (bytes). A phone's browser gives a
// tab a fraction of the phone's memory (iOS Safari about 1.5 GB): there 1 GB at most, less on
// a phone that says it has under 4 GB, so that a 10-minute song of 4 stems (848 MB) opens and a
// 30-minute one (2.5 GB), which would kill the tab, does not. A computer that says it has under
// 8 GB (Chrome's navigator.deviceMemory; 8 is the most it says): a quarter of it. Else no limit:
// a 60-minute song of 4 stems plays in a tab of 5 GB (benchmarks/RESULTS.md, Page memory).
function memoryBudget() {
  const gb = navigator.deviceMemory;
  if (matchMedia("(pointer: coarse)").matches) return (Math.min(gb || 4, 4) / 4) * GIB;
  return gb && gb < 8 ? (gb / 4) * GIB : Infinity;
}

const size = (bytes) => (bytes >= GIB ? `${(bytes / GIB).toFixed(1)} GB` : `${Math.ceil(bytes / 2 ** 20)} MB`);

// A song too long to play here: its stems as files to download, what playing them would take,
// and a button to open them in the mixer all the same (open).
function showFiles(outputs, files, need, budget, open) {
  mixer.duration = Math.max(...outputs.map((out) => out.duration || 0));
  $("#time").textContent = "";
  const note = $("#files-note");
  note.querySelector("span").textContent = `This song is ${when(mixer.duration)} long: playing its ${outputs.length} stems here `
    + `would take about ${size(need)} of memory, more than this device can spare for it (about ${size(budget)}), `
    + "and the page could close. Listen to the stems one at a time here (the browser plays a "
    + "file as it reads it), download them, or open them in the mixer anyway.";
  note.hidden = false;
  for (const [i, out] of outputs.entries()) {
    const row = document.createElement("div");
    row.className = "stem file";
    row.dataset.testid = "stem-file";
    row.dataset.stem = out.name;
    row.style.setProperty("--c", colour(out.name, i));
    row.innerHTML = '<span class="name"></span><a class="download" data-testid="stem-download">⤓</a><span class="muted small"></span>'
      + '<audio controls preload="metadata" data-testid="stem-listen"></audio>';
    $(".name", row).textContent = out.label;
    linkTo($(".download", row), files[i], out);
    $(".small", row).textContent = `${out.fileName}, ${size(files[i].size)}`;
    // The browser's own player reads the file a little at a time, never decoding it whole.
    const player = $("audio", row);
    player.src = URL.createObjectURL(files[i]);
    player.setAttribute("aria-label", `Listen to ${out.label}`);
    player.addEventListener("play", () => { // one stem at a time: the others stop
      for (const other of document.querySelectorAll("#stems audio")) if (other !== player) other.pause();
    });
    $("#stems").append(row);
  }
  const button = $("#open-anyway");
  button.onclick = () => { note.hidden = true; open(); };
}

// The mixer's audio runs at the song's rate (rate: Hz; unknown: the sound card's): the stems
// decode to their own samples, not resampled to the sound card's rate (the browser resamples
// once, on the way out), and the mix downloaded is summed from the very buffers played, at
// the song's rate, with no second decoding of every stem. A song at another rate gets a new
// context; the one before is closed.
function contextAt(rate) {
  if (mixer.ctx && (!rate || mixer.ctx.sampleRate === rate)) return mixer.ctx;
  mixer.ctx?.close();
  try {
    return new AudioContext(rate ? { sampleRate: rate } : {});
  } catch (e) { // a browser without contexts at a chosen rate: the sound card's
    return new AudioContext();
  }
}

function renderRow(stem) {
  const row = document.createElement("div");
  row.className = "stem";
  row.dataset.testid = "stem-row";
  row.dataset.stem = stem.name;
  row.style.setProperty("--c", stem.colour);
  row.innerHTML = `<span class="name"></span>
    <div class="wave" aria-hidden="true"><canvas></canvas><div class="loop-shade" hidden></div><div class="playhead"></div></div>
    <div class="volume">
      <input type="range" min="${MIN_DB}" max="6" step="0.5" value="0" data-testid="stem-volume">
      <output data-testid="stem-db" aria-hidden="true">0.0 dB</output></div>
    <div class="controls">
      <button type="button" class="toggle mute" aria-pressed="false" data-testid="stem-mute">M</button>
      <button type="button" class="toggle solo" aria-pressed="false" data-testid="stem-solo">S</button>
      <a class="download" data-testid="stem-download">⤓</a>
    </div>`;
  $(".name", row).textContent = stem.label;
  $(".name", row).title = stem.madeBy ? `${stem.label}: made by ${stem.madeBy}` : stem.label;
  const mute = $(".mute", row), solo = $(".solo", row);
  // The name starts with the letter shown, so that "click M" (voice control) finds it.
  mute.setAttribute("aria-label", `M: mute ${stem.label}`);
  solo.setAttribute("aria-label", `S: solo ${stem.label}`);
  mute.addEventListener("click", () => { stem.muted = !stem.muted; setPressed(mute, stem.muted); applyGains(); });
  solo.addEventListener("click", () => { stem.solo = !stem.solo; setPressed(solo, stem.solo); applyGains(); });
  // The slider is named by its stem and read out in dB (a screen reader says "vocals volume,
  // -6.0 dB"); the readout beside it shows the same words and is not read twice.
  const volume = $("input", row), readout = $("output", row);
  volume.setAttribute("aria-label", `${stem.label} volume`);
  volume.setAttribute("aria-valuetext", readout.textContent);
  volume.addEventListener("input", () => {
    stem.db = Number(volume.value);
    readout.textContent = stem.db <= MIN_DB ? "−∞ dB" : `${stem.db > 0 ? "+" : ""}${stem.db.toFixed(1)} dB`;
    volume.setAttribute("aria-valuetext", readout.textContent);
    applyGains();
  });
  linkTo($(".download", row), stem.file, stem);
  stem.row = row;
  $("#stems").append(row);
  scrubber($(".wave", row));
  drawWave($("canvas", row), stem);
}

// A stem's download link: its file (a Blob), saved under its name.
function linkTo(link, file, { label, fileName }) {
  link.href = URL.createObjectURL(file);
  link.download = fileName;
  link.setAttribute("aria-label", `Download ${label} (${fileName})`);
  link.title = fileName;
}

// Min/max per column, computed once; drawn at whatever width the canvas has.
function peaks(buffer) {
  const data = buffer.getChannelData(0);
  const other = buffer.numberOfChannels > 1 ? buffer.getChannelData(1) : data;
  const out = new Float32Array(PEAKS * 2);
  const step = data.length / PEAKS;
  for (let x = 0; x < PEAKS; x++) {
    let lo = 0, hi = 0;
    for (let i = Math.floor(x * step); i < Math.min(data.length, Math.floor((x + 1) * step)); i++) {
      const v = (data[i] + other[i]) / 2;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    out[2 * x] = lo; out[2 * x + 1] = hi;
  }
  return out;
}

function drawWave(canvas, stem) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  canvas.width = width; canvas.height = height;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  g.fillStyle = getComputedStyle(canvas).color; // the stem's hue as the theme draws it (app.css)
  const cols = stem.peaks.length / 2;
  for (let x = 0; x < width; x++) {
    const a = Math.floor((x / width) * cols), b = Math.max(a + 1, Math.floor(((x + 1) / width) * cols));
    let lo = 0, hi = 0;
    for (let c = a; c < b; c++) { lo = Math.min(lo, stem.peaks[2 * c]); hi = Math.max(hi, stem.peaks[2 * c + 1]); }
    const top = ((1 - Math.min(1, hi)) * height) / 2, bottom = ((1 - Math.max(-1, lo)) * height) / 2;
    g.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
}
function redraw() { for (const s of mixer.stems) drawWave($("canvas", s.row), s); }
window.addEventListener("resize", redraw);
// The system turned to light or dark, or to a contrast theme: the waveforms take its colours.
for (const query of ["(prefers-color-scheme: light)", "(forced-colors: active)"]) {
  matchMedia(query).addEventListener("change", redraw);
}

// ---------- history thumbnails (kept in this browser) ----------
function keepThumbnails(key, stems) {
  const all = JSON.parse(localStorage.getItem("demixer.thumbs") || "{}");
  all[key] = stems.map((s) => {
    const cols = [];
    for (let x = 0; x < THUMB; x++) {
      let hi = 0;
      for (let c = Math.floor((x * PEAKS) / THUMB); c < Math.floor(((x + 1) * PEAKS) / THUMB); c++) {
        hi = Math.max(hi, s.peaks[2 * c + 1], -s.peaks[2 * c]);
      }
      cols.push(Math.round(Math.min(1, hi) * 100));
    }
    return [s.label, s.colour, cols];
  });
  const keys = Object.keys(all);
  for (const old of keys.slice(0, Math.max(0, keys.length - 100))) delete all[old];
  localStorage.setItem("demixer.thumbs", JSON.stringify(all));
}
// A deleted song's thumbnails go with it: its waveform is a trace of the song, which this
// browser would otherwise keep after the page said it was deleted.
export function forgetThumbnails(key) {
  const all = JSON.parse(localStorage.getItem("demixer.thumbs") || "{}");
  if (!(key in all)) return;
  delete all[key];
  localStorage.setItem("demixer.thumbs", JSON.stringify(all));
}
// Every song's kept thumbnails: {request id: [[label, colour, columns], …]}.
export function thumbnails() {
  return JSON.parse(localStorage.getItem("demixer.thumbs") || "{}");
}
