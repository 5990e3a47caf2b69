// The stem mixer: Web Audio playback of every stem from one clock, waveforms with a playhead,
// seeking by click or drag, a loop region, mute / solo / volume in dB, A/B with the original.
"use strict";

import { encodeWav, save, zipStore } from "./files.js";
import { Stretcher } from "./stretch.js";
import { clock, colour } from "./words.js";

// A time in this song: whole seconds, with tenths in a song under one second (a one-shot
// sample), as its length is said when it is chosen.
const when = (t) => clock(t, mixer.duration < 1);

const $ = (sel, root = document) => root.querySelector(sel);
export const MIN_DB = -40; // the volume slider's bottom: silence
const PEAKS = 1200; // waveform columns computed per stem (drawn scaled to the canvas)
const THUMB = 40; // columns kept per stem for the history's thumbnails

export const mixer = {
  ctx: null, stems: [], original: null, originalLevel: 1, playing: false, startedAt: 0, offset: 0,
  sources: [], ab: false, duration: 0, song: "song", loop: { on: false, start: 0, end: 0 },
  speed: 1, // practice speed: song seconds per second heard, at the song's pitch
};
window.demixerMixer = mixer; // the tests read the mix from here

// Said to a screen reader (politely, after what it is saying): what changed on screen where its
// user's focus is not, e.g. the loop set by a key. Emptied first, so the same words are said again.
export function say(text) {
  const box = $("#announce");
  box.textContent = "";
  setTimeout(() => { box.textContent = text; }, 50);
}

// Scrolling that glides, unless the user asked their system for less motion.
export const glide = () => (matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth");

const dbToGain = (db) => (db <= MIN_DB ? 0 : 10 ** (db / 20));

function effectiveGain(stem) {
  if (mixer.ab) return 0;
  const solo = mixer.stems.some((s) => s.solo);
  if (stem.muted || (solo && !stem.solo)) return 0;
  return dbToGain(stem.db);
}
mixer.gains = () => Object.fromEntries(mixer.stems.map((s) => [s.name, effectiveGain(s)]));

function applyGains() {
  for (const s of mixer.stems) {
    const gain = effectiveGain(s);
    if (s.gainNode) s.gainNode.gain.value = gain;
    s.row.classList.toggle("silenced", gain === 0 && !mixer.ab);
  }
  if (mixer.originalGain) mixer.originalGain.gain.value = mixer.ab ? mixer.originalLevel : 0;
  $("#stems").classList.toggle("ab-original", mixer.ab);
}

// ---------- opening a result ----------
// outputs: [{name, label, url, fileName, type, rate, madeBy?}] (rate: the stem file's sample rate, Hz;
// madeBy: the model or recipe, a tooltip); original: a File to compare with, or null.
// gain: the one gain the server scaled every stem by so that none clips (1: none); the original
// plays at it too, so that A/B compares the sound, not the level.
// focus: the keyboard's focus moves to the mixer's heading (the view the user asked for, or the
// one that replaced the view their focus was in).
// signal: aborted when another song replaces this one while its stems load: this one stops
// there and adds nothing to the mixer.
export async function openResult({ title, song, outputs, original, originalNote, thumbsKey, gain = 1, focus = false, signal }) {
  stop();
  mixer.offset = 0;
  mixer.duration = 0;
  mixer.loop = { on: false, start: 0, end: 0 };
  mixer.ab = false;
  mixer.song = song;
  mixer.stems = [];
  mixer.original = null;
  mixer.originalBytes = null;
  mixer.originalExact = null;
  mixer.originalLevel = gain;
  // The song before's download links each hold a copy of a stem: let them go with it.
  for (const link of document.querySelectorAll("#stems .download")) URL.revokeObjectURL(link.href);
  $("#stems").replaceChildren();
  $("#mixer-title").textContent = title;
  setPressed($("#loop"), false);
  setPressed($("#ab"), false);
  $("#loop-region").hidden = true;
  $("#ab").disabled = true;
  $("#ab-note").textContent = "";
  $("#mixer").hidden = false;
  $("#mixer").scrollIntoView({ behavior: glide(), block: "start" });
  if (focus) $("#mixer-title").focus({ preventScroll: true });
  tick();
  $("#time").textContent = "Loading the stems…";
  mixer.ctx = mixer.ctx || new AudioContext();
  const stems = await Promise.all(outputs.map(async (out, i) => {
    const response = await fetch(out.url, { signal });
    if (!response.ok) throw new Error(`download failed (HTTP ${response.status})`);
    const bytes = await response.arrayBuffer();
    const buffer = await mixer.ctx.decodeAudioData(bytes.slice(0));
    return { ...out, bytes, buffer, colour: colour(out.name, i), muted: false, solo: false, db: 0, peaks: peaks(buffer) };
  }));
  if (signal.aborted) return;
  mixer.stems = stems;
  mixer.duration = Math.max(...stems.map((s) => s.buffer.duration));
  stems.forEach(renderRow);
  applyGains();
  tick();
  if (thumbsKey) keepThumbnails(thumbsKey, stems);
  const note = $("#ab-note");
  note.textContent = originalNote || "";
  if (original) {
    try {
      const bytes = await original.arrayBuffer();
      const decoded = await mixer.ctx.decodeAudioData(bytes.slice(0));
      if (signal.aborted) return;
      mixer.original = decoded;
      mixer.originalBytes = bytes;
    } catch (e) {
      note.textContent = "This browser can't play the original file, so there is nothing to compare with.";
    }
  }
  $("#ab").disabled = !mixer.original;
  if (mixer.original) note.textContent = "Original: hear the song as it was, at the same spot.";
  const db = (-20 * Math.log10(gain)).toFixed(1);
  if (gain < 1 && db !== "0.0") { // a gain that rounds to 0.0 dB is nothing to tell
    note.textContent += ` The stems were turned down together by ${db} dB so that none clips`
      + (mixer.original ? "; the original plays at the same level." : ".");
  }
}

function setPressed(button, on) { button.setAttribute("aria-pressed", String(on)); }

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
  const link = $(".download", row);
  link.href = URL.createObjectURL(new Blob([stem.bytes], { type: stem.type }));
  link.download = stem.fileName;
  link.setAttribute("aria-label", `Download ${stem.label} (${stem.fileName})`);
  link.title = stem.fileName;
  stem.row = row;
  $("#stems").append(row);
  scrubber($(".wave", row));
  drawWave($("canvas", row), stem);
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

// ---------- the clock ----------
// Song time: at a practice speed the song moves `speed` seconds for each second of the clock.
export function position() {
  if (!mixer.playing) return mixer.offset;
  let t = mixer.offset + Math.max(0, mixer.ctx.currentTime - mixer.startedAt) * mixer.speed;
  const { on, start, end } = mixer.loop;
  if (on && end > start && t >= end) t = start + ((t - start) % (end - start));
  return Math.min(t, mixer.duration);
}

export function play() {
  const ctx = mixer.ctx;
  if (!ctx || !mixer.stems.length) return;
  ctx.resume();
  const { on, start, end } = mixer.loop;
  if (on && (mixer.offset < start || mixer.offset >= end)) mixer.offset = start;
  if (!on && mixer.offset >= mixer.duration - 0.05) mixer.offset = 0; // at the end: again
  const when = ctx.currentTime + 0.05; // one start time for every stem: sample-accurate sync
  mixer.sources = [];
  const tracks = []; // [buffer, gain node]: every stem, then the original
  for (const stem of mixer.stems) {
    stem.gainNode = ctx.createGain();
    stem.gainNode.connect(ctx.destination);
    tracks.push([stem.buffer, stem.gainNode]);
  }
  if (mixer.original) {
    mixer.originalGain = ctx.createGain();
    mixer.originalGain.connect(ctx.destination);
    tracks.push([mixer.original, mixer.originalGain]);
  }
  applyGains();
  if (mixer.speed === 1) {
    for (const [buffer, gainNode] of tracks) {
      const src = new AudioBufferSourceNode(ctx, { buffer });
      if (on) Object.assign(src, { loop: true, loopStart: start, loopEnd: end });
      src.connect(gainNode);
      src.start(when, mixer.offset);
      mixer.sources.push(src);
    }
    mixer.sources[0].onended = ended;
  } else {
    startStretched(tracks, when);
  }
  mixer.startedAt = when;
  mixer.playing = true;
  $("#play").textContent = "❚❚";
  $("#play").setAttribute("aria-label", "Pause");
  tick();
}

// The song played to its end (not looping): the playhead goes back to its start.
function ended() {
  if (mixer.playing && !mixer.loop.on) { stop(); mixer.offset = 0; tick(); }
}

// ---------- practice speed ----------
// The stretched song is made a block at a time, a little ahead of the clock, and each block
// of each track is played by its own source node, all tracks' at the same instant: the stems
// stay sample-aligned, and solo, mute, volume and A/B act on the same gain nodes as at 100 %.
// Blocks overlap by one grain's fade, so their seams are crossfades, never clicks.
const GRAINS = 16; // grains per block: about 0.37 s at 44.1 kHz
const AHEAD = 1.5; // seconds of sound made ahead of the clock (a busy page, a background tab)
const FEED_MS = 200;

const channelsOf = (buffer) => Array.from({ length: buffer.numberOfChannels }, (_, c) => buffer.getChannelData(c));

function startStretched(tracks, when) {
  const ctx = mixer.ctx;
  const stretcher = new Stretcher({
    tracks: tracks.map(([buffer]) => channelsOf(buffer)),
    rate: ctx.sampleRate,
    weights: () => tracks.map(([, gainNode]) => gainNode.gain.value),
    speed: mixer.speed,
    offset: mixer.offset,
    loop: mixer.loop,
  });
  const channels = tracks.map(([buffer]) => buffer.numberOfChannels);
  let grain = 0; // grains laid down so far; grain k's middle sounds k hops after `when`
  const feed = () => {
    while (!stretcher.done && when + ((grain - 1) * stretcher.hop) / ctx.sampleRate < ctx.currentTime + AHEAD) {
      const { grains, data } = stretcher.block(GRAINS);
      if (!grains) break;
      const at = when + ((grain - 1) * stretcher.hop) / ctx.sampleRate;
      const length = (grains + 1) * stretcher.hop;
      data.forEach((samples, t) => {
        const buffer = new AudioBuffer({ numberOfChannels: channels[t], length, sampleRate: ctx.sampleRate });
        samples.forEach((s, c) => buffer.copyToChannel(s.subarray(0, length), c));
        const src = new AudioBufferSourceNode(ctx, { buffer });
        src.connect(tracks[t][1]);
        // The first block's first hop is before the start: it is the fade into the first grain.
        if (at < when) src.start(when, when - at);
        else src.start(at);
        // A played block lets go of its samples.
        src.addEventListener("ended", () => { mixer.sources = mixer.sources.filter((s) => s !== src); });
        mixer.sources.push(src);
        if (stretcher.done && t === 0) src.onended = ended;
      });
      grain += grains;
    }
  };
  feed();
  mixer.feeder = setInterval(feed, FEED_MS);
}

export function setSpeed(speed) {
  if (speed === mixer.speed) return;
  // Where it is heard now is counted at the old speed; it goes on from there at the new one.
  const wasPlaying = mixer.playing;
  if (wasPlaying) stop();
  mixer.speed = speed;
  $("#speed").value = String(Math.round(speed * 100));
  if (wasPlaying) play();
}
mixer.setSpeed = setSpeed;

export function stop() {
  if (mixer.playing) mixer.offset = position();
  clearInterval(mixer.feeder);
  for (const s of mixer.sources) { s.onended = null; try { s.stop(); } catch (e) { /* not started */ } }
  mixer.sources = [];
  mixer.playing = false;
  $("#play").textContent = "▶";
  $("#play").setAttribute("aria-label", "Play");
}

export function seek(t) {
  const wasPlaying = mixer.playing;
  stop();
  mixer.offset = Math.min(Math.max(0, t), mixer.duration);
  // Playing on from the very end would start the song again: it stops there instead.
  if (wasPlaying && mixer.offset < mixer.duration - 0.05) play();
  tick();
}

export function toggle() { if (mixer.playing) stop(); else play(); }

// One frame loop at most: every seek while playing calls play() and tick() again, and each
// call would otherwise start one more loop that runs until pause.
let frame = 0;
function tick() {
  cancelAnimationFrame(frame);
  const t = position();
  $("#time").textContent = `${when(t)} / ${when(mixer.duration)}`;
  // The Position slider follows the playhead; its words change once a second, not every frame.
  const slider = $("#position");
  slider.max = mixer.duration;
  slider.value = t;
  const words = `${when(t)} of ${when(mixer.duration)}`;
  if (slider.getAttribute("aria-valuetext") !== words) slider.setAttribute("aria-valuetext", words);
  const pct = mixer.duration ? (100 * t) / mixer.duration : 0;
  for (const head of document.querySelectorAll("#mixer .playhead")) head.style.left = `${pct}%`;
  if (mixer.playing) frame = requestAnimationFrame(tick);
}
mixer.position = position;

// ---------- seeking and the loop region ----------
function timeAt(el, ev) {
  const rect = el.getBoundingClientRect();
  return (Math.min(Math.max(0, ev.clientX - rect.left), rect.width) / rect.width) * mixer.duration;
}

// Click or drag on a waveform: the playhead follows; the sound picks up where it is let go.
function scrubber(el) {
  let resume = false;
  let before = 0;
  el.addEventListener("pointerdown", (ev) => {
    if (!mixer.duration) return;
    el.setPointerCapture(ev.pointerId);
    resume = mixer.playing;
    before = position();
    stop();
    mixer.offset = timeAt(el, ev);
    tick();
  });
  // A finger swiping up or down scrolls the page (touch-action: pan-y): the browser cancels
  // the pointer, and the song goes on from where it was, as if it had not been touched.
  el.addEventListener("pointercancel", () => {
    mixer.offset = before;
    if (resume) play();
    resume = false;
    tick();
  });
  el.addEventListener("pointermove", (ev) => {
    if (!el.hasPointerCapture(ev.pointerId)) return;
    mixer.offset = timeAt(el, ev);
    tick();
  });
  el.addEventListener("pointerup", () => { if (resume) play(); resume = false; });
}

// Drag along the ruler: that stretch loops. A click there just moves the playhead.
function ruler() {
  const el = $("#ruler");
  let from = null;
  el.addEventListener("pointerdown", (ev) => {
    if (!mixer.duration) return;
    el.setPointerCapture(ev.pointerId);
    from = timeAt(el, ev);
  });
  el.addEventListener("pointermove", (ev) => {
    if (from === null) return;
    const to = timeAt(el, ev);
    showRegion(Math.min(from, to), Math.max(from, to));
  });
  el.addEventListener("pointercancel", () => { // a vertical swipe: the page scrolled
    from = null;
    showRegion(mixer.loop.start, mixer.loop.end);
  });
  el.addEventListener("pointerup", (ev) => {
    if (from === null) return;
    const to = timeAt(el, ev);
    const [a, b] = [Math.min(from, to), Math.max(from, to)];
    from = null;
    if (b - a < Math.max(0.25, mixer.duration / 200)) { showRegion(mixer.loop.start, mixer.loop.end); seek(a); return; }
    setLoop(a, b, true);
  });
}
ruler();

export function setLoop(start, end, on) {
  // Where it is heard now is counted by the loop it was playing (once round a loop, the time
  // since play counts the loop's turns): stopped before the loop changes, it goes on from there.
  const wasPlaying = mixer.playing;
  if (wasPlaying) stop();
  mixer.loop = { on, start, end };
  setPressed($("#loop"), on);
  showRegion(start, end);
  say(on ? `Loop ${when(start)} to ${when(end)}` : "Loop off");
  if (wasPlaying) play();
}
mixer.setLoop = setLoop;

function showRegion(start, end) {
  const shown = mixer.loop.on || end > start;
  const left = mixer.duration ? (100 * start) / mixer.duration : 0;
  const width = mixer.duration ? (100 * (end - start)) / mixer.duration : 0;
  for (const shade of [$("#loop-region"), ...document.querySelectorAll("#stems .loop-shade")]) {
    shade.hidden = !shown || end <= start;
    shade.style.left = `${left}%`;
    shade.style.width = `${width}%`;
  }
}

$("#loop").addEventListener("click", () => {
  const { on, start, end } = mixer.loop;
  if (on) setLoop(start, end, false);
  else if (end > start) setLoop(start, end, true);
  else setLoop(0, mixer.duration, true); // no region yet: the whole song
});
$("#play").addEventListener("click", toggle);
$("#loop-from").addEventListener("click", () => loopFromKey(true));
$("#loop-to").addEventListener("click", () => loopFromKey(false));
// The Position slider: the keyboard's and a screen reader's way to seek (arrows move 1 % of the
// song, Page Up / Down 10 %, Home / End to either end).
$("#position").addEventListener("input", (ev) => { if (mixer.duration) seek(Number(ev.target.value)); });
$("#speed").addEventListener("change", (ev) => setSpeed(Number(ev.target.value) / 100));
$("#ab").addEventListener("click", () => {
  mixer.ab = !mixer.ab;
  setPressed($("#ab"), mixer.ab);
  applyGains();
});

// Space plays and pauses while the mixer is on screen and the focus is on no control of its
// own (a focused button, link or summary keeps its space-to-click: Mute toggles mute, the play
// button plays); arrows move; L loops; [ and ] set where the loop starts and ends; - and + (or =,
// + without Shift) step the practice speed down and up by 5 %. Only with the
// focus in the mixer (or on nothing): keys pressed on the history, the form or the header are
// theirs (WCAG 2.1.4), and an arrow there never moves the song.
const typing = (ev) => {
  const tag = ev.target.tagName;
  return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && ev.target.type !== "range");
};
const control = (ev) => ["BUTTON", "A", "SUMMARY"].includes(ev.target.tagName) || typing(ev);
const listening = () => mixer.stems.length > 0 && !$("#mixer").hidden;
const inMixer = (ev) => [document.body, document.documentElement].includes(ev.target) || $("#mixer").contains(ev.target);
document.addEventListener("keydown", (ev) => {
  if (!listening() || !inMixer(ev) || ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev)) return;
  if (ev.key === " " && control(ev)) return;
  // A held key repeats. Space and L toggle once per press, as a button does: each repeat
  // toggled again, so a key held a moment too long (a tremor, a slow release) left the song
  // playing or the loop on by chance. A held arrow goes on seeking.
  if (ev.repeat && [" ", "l", "L"].includes(ev.key)) { ev.preventDefault(); return; }
  const tag = ev.target.tagName;
  if (ev.key === " ") { ev.preventDefault(); toggle(); }
  else if (ev.key === "ArrowRight" && tag !== "INPUT") { ev.preventDefault(); seek(position() + 5); }
  else if (ev.key === "ArrowLeft" && tag !== "INPUT") { ev.preventDefault(); seek(position() - 5); }
  else if (ev.key === "l" || ev.key === "L") $("#loop").click();
  else if (ev.key === "[" || ev.key === "]") loopFromKey(ev.key === "[");
  else if (["-", "+", "="].includes(ev.key)) { ev.preventDefault(); stepSpeed(ev.key === "-" ? -1 : 1); }
});

// One step of the Speed list down or up (none past either end), said to a screen reader.
function stepSpeed(direction) {
  const list = $("#speed");
  const i = Math.min(Math.max(0, list.selectedIndex + direction), list.options.length - 1);
  setSpeed(Number(list.options[i].value) / 100);
  say(`Speed ${list.options[i].value} %`);
}

// [ starts the loop at the playhead and ] ends it there, as a DAW's in and out points: the
// other end stays where it was while it is still on its side, else it is the song's edge.
function loopFromKey(isStart) {
  const at = position();
  const { start, end } = mixer.loop;
  const had = end > start;
  const [a, b] = isStart
    ? [at, had && end > at ? end : mixer.duration]
    : [had && start < at ? start : 0, at];
  if (b - a >= 0.05) setLoop(a, b, true);
  else say(`No loop: it would ${isStart ? "start" : "end"} at ${when(at)}, where it ${isStart ? "ends" : "starts"}. Move the playhead first.`);
}

// ---------- the mix, rendered offline with the same gains ----------
// At the stems' own rate and channels (the song's), not the player's: the AudioContext runs at
// the sound card's rate and decodeAudioData resamples to it, so on a 48 kHz laptop a 44.1 kHz
// song's mix came out resampled to 48 kHz, and no longer lined up with the song and its stems
// in a DAW. Each file is decoded once more, in a context at that rate (kept for the next mix).
const atSongRate = async (holder, key, bytes, rate) => {
  if (!holder[key]) holder[key] = await new OfflineAudioContext(1, 1, rate).decodeAudioData(bytes.slice(0));
  return holder[key];
};
mixer.render = async () => {
  const first = mixer.stems[0];
  const rate = first.rate || first.buffer.sampleRate;
  const original = mixer.ab && mixer.original;
  const sources = original
    ? [[await atSongRate(mixer, "originalExact", mixer.originalBytes, rate), mixer.originalLevel]]
    : await Promise.all(mixer.stems.map(async (s) => [await atSongRate(s, "exact", s.bytes, rate), effectiveGain(s)]));
  const length = Math.max(...sources.map(([buffer]) => buffer.length));
  const channels = Math.max(...mixer.stems.map((s) => s.buffer.numberOfChannels));
  const off = new OfflineAudioContext(channels, length, rate);
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
mixer.encodeWav = encodeWav;
mixer.Stretcher = Stretcher;
mixer.zip = zipStore;

export function downloadAll() {
  save(zipStore(mixer.stems.map((s) => ({ name: s.fileName, bytes: s.bytes }))), `${mixer.song}_stems.zip`);
}
export async function downloadMix() {
  save(new Blob([encodeWav(await mixer.render())], { type: "audio/wav" }), `${mixer.song}_mix.wav`);
}
