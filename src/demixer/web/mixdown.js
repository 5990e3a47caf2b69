// The files the mixer downloads: the stems as a zip, and the mix as heard, rendered offline at
// the practice speed.
"use strict";

import { effectiveGain, mixer } from "./mixer.js";
import { encodeWav, save, wavHeader, wavSamples, zipStore } from "./files.js";
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

// ---------- the mix at a practice speed ----------
// The mix as rendered at 100 %, stretched by the player's WSOLA (stretch.js), its cut points
// chosen on the mix as heard, as the player chooses them: the stems stretched each at the same
// cuts and summed would be the same samples (the stretch is a sum of windowed copies), made once
// instead of once per stem. Made a block at a time, each block written as 16-bit samples, so a
// long song is never held whole as floats at its slowed length; the page is let breathe between
// blocks. The length is the song's over the speed, to the sample: 1 s at 50 % lasts 2 s.
const BLOCK = 256; // grains per block: about 6 s at 44.1 kHz

async function stretchedWav(mix, speed, onProgress) {
  const rate = mix.sampleRate;
  const channels = Array.from({ length: mix.numberOfChannels }, (_, c) => mix.getChannelData(c));
  const stretcher = new Stretcher({
    tracks: [channels], rate, weights: () => [1], speed, offset: 0, loop: { on: false },
  });
  const hop = stretcher.hop, frames = Math.round(mix.length / speed);
  const parts = [wavHeader(channels.length, rate, frames)];
  let at = -hop; // where this block's first sample belongs: the first hop is a fade-in before 0
  let tail = channels.map(() => new Float32Array(hop)); // the block before's last hop
  const write = (data, from, to) => {
    // Only what belongs inside [0, frames): the first fade-in and the last grain's overrun go.
    const a = Math.max(from, -at), b = Math.min(to, frames - at);
    if (b > a) parts.push(wavSamples(data, a, b));
  };
  while (!stretcher.done) {
    const { grains, data: [block] } = stretcher.block(BLOCK);
    if (!grains) break;
    // A block's first hop overlaps the last hop of the block before: their sum is the sound.
    block.forEach((samples, c) => { for (let i = 0; i < hop; i++) samples[i] += tail[c][i]; });
    write(block, 0, grains * hop);
    tail = block.map((samples) => samples.slice(grains * hop, (grains + 1) * hop));
    at += grains * hop;
    onProgress(Math.min(1, stretcher.centre / mix.length));
    await new Promise((resolve) => setTimeout(resolve));
  }
  write(tail, 0, hop);
  at += hop;
  // The grains reach the song's end, so this never pads in practice; the header's length holds.
  if (at < frames) parts.push(new ArrayBuffer((frames - at) * channels.length * 2));
  return new Blob(parts, { type: "audio/wav" });
}

export function downloadAll() {
  save(zipStore(mixer.stems.map((s) => ({ name: s.fileName, bytes: s.bytes }))), `${mixer.song}_stems.zip`);
}
// At the practice speed, named so ("song_mix_70%.wav"); at 100 % the mix as it always was.
// onProgress(fraction made, 0-1) is told after each block of a stretched mix.
export async function downloadMix(onProgress = () => {}) {
  const speed = mixer.speed; // as it was when asked for, whatever it is changed to meanwhile
  const mix = await mixer.render();
  if (speed === 1) save(new Blob([encodeWav(mix)], { type: "audio/wav" }), `${mixer.song}_mix.wav`);
  else save(await stretchedWav(mix, speed, onProgress), `${mixer.song}_mix_${Math.round(speed * 100)}%.wav`);
}
