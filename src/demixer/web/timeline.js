// Moving in the song: seeking by click or drag on a waveform, the loop region (the ruler, the
// loop buttons), the transport's buttons and the mixer's keys.
"use strict";

import { $, ORIGINAL, applyGains, mixer, say, setPressed, when } from "./mixer.js";
import { play, position, seek, setPitch, setSpeed, stop, tick, toggle } from "./transport.js";

// ---------- seeking and the loop region ----------
function timeAt(el, ev) {
  const rect = el.getBoundingClientRect();
  return (Math.min(Math.max(0, ev.clientX - rect.left), rect.width) / rect.width) * mixer.duration;
}

// Click or drag on a waveform: the playhead follows; the sound picks up where it is let go.
export function scrubber(el) {
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
$("#pitch").addEventListener("change", (ev) => setPitch(Number(ev.target.value)));
$("#ab").addEventListener("click", async () => {
  const button = $("#ab");
  if (button.getAttribute("aria-disabled") === "true") return; // still reading the original
  if (!mixer.original && !(await readOriginal(button))) return;
  mixer.ab = !mixer.ab;
  setPressed(button, mixer.ab);
  applyGains();
});

// The original song is decoded on the first A/B press, not with the stems: a song never
// compared takes no memory for it (as much as one more stem: 21 MB a minute of 44.1 kHz
// stereo). Meanwhile the button says so; aria-disabled, not disabled, keeps the keyboard's
// focus on it. Playing, the sound starts again at the same spot with the original in it, so
// that it plays in step with the stems. Answers whether there is an original to play.
async function readOriginal(button) {
  const file = mixer.originalFile;
  if (!file) return false;
  button.setAttribute("aria-disabled", "true");
  button.textContent = "Reading the original…";
  let decoded = null;
  try {
    decoded = await mixer.ctx.decodeAudioData(await file.arrayBuffer());
  } catch (e) { console.warn("the original cannot be decoded", e); }
  if (mixer.originalFile !== file) return false; // another song opened meanwhile
  button.textContent = "Original";
  button.removeAttribute("aria-disabled");
  if (!decoded) {
    mixer.originalFile = null;
    const note = $("#ab-note");
    note.textContent = note.textContent.replace(ORIGINAL, "This browser can't play the original file, so there is nothing to compare with.");
    if (document.activeElement === button) $("#play").focus({ preventScroll: true }); // not lost with it
    button.disabled = true;
    return false;
  }
  mixer.original = withLead(decoded, mixer.originalLead);
  if (mixer.playing) seek(position());
  return true;
}

// A video's sound that starts after its picture: its stems start at the file's start, silent
// until the sound does (the upload's audio_start), where the browser decodes the sound alone.
// So much silence before it keeps the original in step with the stems.
function withLead(buffer, seconds) {
  const lead = Math.round(seconds * buffer.sampleRate);
  if (lead <= 0) return buffer;
  const { numberOfChannels, sampleRate } = buffer;
  const out = new AudioBuffer({ numberOfChannels, sampleRate, length: buffer.length + lead });
  for (let c = 0; c < numberOfChannels; c++) out.copyToChannel(buffer.getChannelData(c), c, lead);
  return out;
}

// Space plays and pauses while the mixer is on screen and the focus is on no control of its
// own (a focused button, link or summary keeps its space-to-click: Mute toggles mute, the play
// button plays); arrows move; L loops; [ and ] set where the loop starts and ends; - and + (or =,
// + without Shift) step the practice speed down and up by 5 %; < and > (or , and ., without
// Shift) the key by a semitone. Only with the
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
  else if (["<", ">", ",", "."].includes(ev.key)) { ev.preventDefault(); stepKey(["<", ","].includes(ev.key) ? -1 : 1); }
});

// The value one step down or up a list (Speed, Key), none past either end.
function stepped(list, direction) {
  const i = Math.min(Math.max(0, list.selectedIndex + direction), list.options.length - 1);
  return Number(list.options[i].value);
}

// One step of the Speed list down or up, said to a screen reader.
function stepSpeed(direction) {
  const percent = stepped($("#speed"), direction);
  setSpeed(percent / 100);
  say(`Speed ${percent} %`);
}

// One semitone down or up (the Key list's ends: -6 and +6), said to a screen reader.
function stepKey(direction) {
  const semitones = stepped($("#pitch"), direction);
  setPitch(semitones);
  say(`Key ${semitones > 0 ? "+" : ""}${semitones}`);
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
