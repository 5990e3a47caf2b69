// The stem mixer's state, which every part of it reads: the song's stems and their gains, the
// clock's offset, the loop, the practice speed and the key. Its parts, each in its own module:
// stems.js (opening a result: a row per stem, waveforms, thumbnails), transport.js (playback
// from one clock, at any speed), timeline.js (seeking, the loop, the buttons and keys) and
// mixdown.js (the files downloaded).
"use strict";

import { clock } from "./words.js";

export const $ = (sel, root = document) => root.querySelector(sel);
export const MIN_DB = -40; // the volume slider's bottom: silence
// What the note under the transport says of A/B where the song was chosen in this tab.
export const ORIGINAL = "Original: hear the song as it was, at the same spot.";

export const mixer = {
  ctx: null, stems: [], downloads: [], original: null, originalFile: null, originalLead: 0, originalLevel: 1, playing: false, startedAt: 0, offset: 0,
  sources: [], ab: false, duration: 0, song: "song", loop: { on: false, start: 0, end: 0 },
  speed: 1, // practice speed: song seconds per second heard, at the song's pitch
  pitch: 0, // key: semitones up (or down, negative) from the song's, at the same speed
};
window.demixerMixer = mixer; // the tests read the mix from here

// A time in this song: whole seconds, with tenths in a song under one second (a one-shot
// sample), as its length is said when it is chosen.
export const when = (t) => clock(t, mixer.duration < 1);

// Said to a screen reader (politely, after what it is saying): what changed on screen where its
// user's focus is not, e.g. the loop set by a key. Emptied first, so the same words are said again.
export function say(text) {
  const box = $("#announce");
  box.textContent = "";
  setTimeout(() => { box.textContent = text; }, 50);
}

// Scrolling that glides, unless the user asked their system for less motion.
export const glide = () => (matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth");

export function setPressed(button, on) { button.setAttribute("aria-pressed", String(on)); }

const dbToGain = (db) => (db <= MIN_DB ? 0 : 10 ** (db / 20));

export function effectiveGain(stem) {
  if (mixer.ab) return 0;
  const solo = mixer.stems.some((s) => s.solo);
  if (stem.muted || (solo && !stem.solo)) return 0;
  return dbToGain(stem.db);
}
mixer.gains = () => Object.fromEntries(mixer.stems.map((s) => [s.name, effectiveGain(s)]));

export function applyGains() {
  for (const s of mixer.stems) {
    const gain = effectiveGain(s);
    if (s.gainNode) s.gainNode.gain.value = gain;
    s.row.classList.toggle("silenced", gain === 0 && !mixer.ab);
  }
  if (mixer.originalGain) mixer.originalGain.gain.value = mixer.ab ? mixer.originalLevel : 0;
  $("#stems").classList.toggle("ab-original", mixer.ab);
}
