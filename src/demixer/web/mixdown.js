// The files the mixer downloads: the stems as a zip, and the mix as heard, at the practice
// speed and key.
"use strict";

import { effectiveGain, mixer } from "./mixer.js";
import { save, wavHeader, wavSamples, zipStore } from "./files.js";
import { Resampler, Stretcher, keyRatio } from "./stretch.js";

// ---------- the mix, summed a block at a time with the same gains ----------
// From the very buffers the player plays: the mixer's AudioContext runs at the song's rate
// (stems.js), so they hold the stems' own samples, and the mix comes out at the song's rate,
// length and channels, lined up with the song and its stems in a DAW. Summed here a block at a
// time, never rendered whole: an OfflineAudioContext held the whole mix as floats beside a
// second decoding of every stem (at the song's rate, kept for the next mix), which for a
// 10-minute song took the tab from 1.4 GB to 3 GB, past what a phone gives a tab.
const FRAMES = 1 << 16; // frames summed per block: about 1.5 s at 44.1 kHz

// What the mix is made of: [AudioBuffer, gain] of each track heard (the original alone while
// A/B is on; else the stems not silenced), the length in frames and the channels.
function heard() {
  const tracks = mixer.ab && mixer.original
    ? [[mixer.original, mixer.originalLevel]]
    : mixer.stems.map((s) => [s.buffer, effectiveGain(s)]).filter(([, gain]) => gain > 0);
  const all = mixer.ab && mixer.original ? [mixer.original] : mixer.stems.map((s) => s.buffer);
  return {
    tracks,
    rate: mixer.stems[0].buffer.sampleRate,
    length: Math.max(...all.map((b) => b.length)),
    channels: Math.max(...mixer.stems.map((s) => s.buffer.numberOfChannels)),
  };
}

// Channel c of `samples` (one array per channel) for a mix of `channels`: as Web Audio mixes
// ("speakers"): mono goes to every channel, stereo into mono is the two averaged.
function channelFor(samples, c, channels) {
  if (channels === 1 && samples.length === 2) return [samples[0], samples[1], 0.5];
  return [samples[Math.min(c, samples.length - 1)], null, 1];
}

// Adds gain times frames [from, from + n) of `samples` (one array per channel) into `block`.
function addInto(block, samples, gain, from, n) {
  block.forEach((out, c) => {
    const [a, b, scale] = channelFor(samples, c, block.length);
    const g = gain * scale;
    const end = Math.min(n, a.length - from);
    for (let i = 0; i < end; i++) out[i] += g * (b ? a[from + i] + b[from + i] : a[from + i]);
  });
}

// The mix at 100 %, block by block: onBlock(one Float32Array per channel) for each, in order.
async function eachBlock(mix, onBlock) {
  const sources = mix.tracks.map(([buffer, gain]) => [channelsOf(buffer), gain]);
  for (let at = 0; at < mix.length; at += FRAMES) {
    const n = Math.min(FRAMES, mix.length - at);
    const block = Array.from({ length: mix.channels }, () => new Float32Array(n));
    for (const [samples, gain] of sources) addInto(block, samples, gain, at, n);
    onBlock(block);
    if (at % (16 * FRAMES) === 0) await new Promise((resolve) => setTimeout(resolve)); // let the page breathe
  }
}
const channelsOf = (buffer) => Array.from({ length: buffer.numberOfChannels }, (_, c) => buffer.getChannelData(c));

// A WAV made of parts: the parts of a long mix go into a Blob every few MB, so that the tab
// does not hold the whole file as array buffers until the end.
function wavParts(header) {
  let parts = [header], held = 0;
  return {
    add(part) {
      parts.push(part);
      held += part.byteLength;
      if (held > 32 * 1024 * 1024) { parts = [new Blob(parts)]; held = 0; }
    },
    blob: () => new Blob(parts, { type: "audio/wav" }),
  };
}

async function plainWav(mix) {
  const file = wavParts(wavHeader(mix.channels, mix.rate, mix.length));
  await eachBlock(mix, (block) => file.add(wavSamples(block, 0, block[0].length)));
  return file.blob();
}
mixer.energy = async () => {
  let sum = 0;
  await eachBlock(heard(), (block) => { for (const data of block) for (const v of data) sum += v * v; });
  return sum;
};
mixer.Stretcher = Stretcher;
mixer.Resampler = Resampler;
mixer.zip = zipStore;

// ---------- the mix at a practice speed ----------
// The mix at 100 % (summed as above into one track, the only copy of the song this adds),
// stretched by the player's WSOLA (stretch.js), its cut points chosen on the mix as heard, as
// the player chooses them: the stems stretched each at the same cuts and summed would be the
// same samples (the stretch is a sum of windowed copies), made once instead of once per stem
// (stretching the stems each took 1.6 times as long with 4 stems). Made a block at a time, each
// block written as 16-bit samples, so a long song is never held whole as floats at its slowed
// length; the page is let breathe between blocks. The length is the song's over the speed, to
// the sample: 1 s at 50 % lasts 2 s. In another key it is stretched to 1/r of the speed and
// resampled r times as fast (stretch.js's Resampler, as the player's blocks are played), a
// block at a time too.
const BLOCK = 256; // grains per block: about 6 s at 44.1 kHz

async function stretchedWav(mix, speed, semitones, onProgress) {
  const { rate } = mix;
  const r = keyRatio(semitones);
  const channels = Array.from({ length: mix.channels }, () => new Float32Array(mix.length));
  let filled = 0;
  await eachBlock(mix, (block) => {
    block.forEach((samples, c) => channels[c].set(samples, filled));
    filled += block[0].length;
  });
  const stretcher = new Stretcher({
    tracks: [channels], rate, weights: () => [1], speed: speed / r, offset: 0, loop: { on: false },
  });
  const hop = stretcher.hop, frames = Math.round(mix.length / speed);
  const stretched = Math.round((mix.length * r) / speed); // frames before the resampling
  const file = wavParts(wavHeader(channels.length, rate, frames));
  const pitch = r === 1 ? null : new Resampler(r, channels.length);
  let at = -hop; // where this block's first sample belongs: the first hop is a fade-in before 0
  let tail = channels.map(() => new Float32Array(hop)); // the block before's last hop
  const write = (data, from, to) => {
    // Only what belongs inside [0, stretched): the first fade-in and the last grain's overrun go.
    const a = Math.max(from, -at), b = Math.min(to, stretched - at);
    if (b <= a) return;
    if (!pitch) { file.add(wavSamples(data, a, b)); return; }
    const out = pitch.push(data.map((samples) => samples.subarray(a, b)));
    if (out[0].length) file.add(wavSamples(out, 0, out[0].length));
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
  if (pitch) { // the last samples, the song's end read as silence after it, to `frames` in all
    const out = pitch.push(null, { last: true, total: frames });
    if (out[0].length) file.add(wavSamples(out, 0, out[0].length));
    return file.blob();
  }
  // The grains reach the song's end, so this never pads in practice; the header's length holds.
  if (at < frames) file.add(new ArrayBuffer((frames - at) * channels.length * 2));
  return file.blob();
}

export async function downloadAll() {
  save(await zipStore(mixer.downloads), `${mixer.song}_stems.zip`);
}
// At the practice speed and key, named so ("song_mix_70%.wav", "song_mix_key-2.wav",
// "song_mix_70%_key+3.wav"); at 100 % in the song's key the mix as it always was.
// onProgress(fraction made, 0-1) is told after each block of a stretched mix.
export async function downloadMix(onProgress = () => {}) {
  // As they were when asked for, whatever they are changed to meanwhile; the gains too.
  const speed = mixer.speed, semitones = mixer.pitch;
  const mix = heard();
  if (speed === 1 && semitones === 0) { save(await plainWav(mix), `${mixer.song}_mix.wav`); return; }
  const tempo = speed === 1 ? "" : `_${Math.round(speed * 100)}%`;
  const key = semitones === 0 ? "" : `_key${semitones > 0 ? "+" : ""}${semitones}`;
  save(await stretchedWav(mix, speed, semitones, onProgress), `${mixer.song}_mix${tempo}${key}.wav`);
}
