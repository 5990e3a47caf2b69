// The files the mixer downloads: the stems as a zip, and the mix as heard, rendered offline.
"use strict";

import { effectiveGain, mixer } from "./mixer.js";
import { encodeWav, save, zipStore } from "./files.js";
import { Stretcher } from "./stretch.js";

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
