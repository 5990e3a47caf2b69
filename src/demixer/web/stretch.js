// Practice speed: the song slower (or faster) at the same pitch, by WSOLA (waveform-similarity
// overlap-add). Short windowed grains of the song are laid down one hop apart in the output;
// each is read a little further along the song than the one before (the hop times the speed),
// nudged by up to a few milliseconds to where it best continues what was already laid down,
// so that the grains join without the phase jumps a plain cut-and-splice makes.
//
// Every track (each stem, the original) is cut at the same places, chosen on the mix as it is
// heard: the stems stay aligned with each other, and still sum to the song.
"use strict";

// Hann windows, half overlapped, sum to exactly one: the output keeps the song's level.
function hann(n) {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / n);
  return w;
}

export class Stretcher {
  // tracks: one array per track of its channels' samples (Float32Array, all at `rate` Hz);
  // weights(): each track's gain now (what the grains are chosen by; all zero: all alike).
  // speed: song seconds per second played (0.5: half speed). offset: where to start, in song
  // seconds. loop: {on, start, end} in song seconds, as the mixer keeps it.
  constructor({ tracks, rate, weights, speed, offset, loop }) {
    this.tracks = tracks;
    this.weights = weights;
    this.speed = speed;
    this.length = Math.max(...tracks.map((channels) => channels[0].length));
    // A hop of about 23 ms (1024 samples at 44.1 or 48 kHz), grains of two hops, and a search
    // of half a hop either way: long enough for a bass note's period, short enough that a
    // drum hit is not heard twice.
    this.hop = 2 ** Math.round(Math.log2(0.023 * rate));
    this.window = hann(2 * this.hop);
    this.reach = this.hop / 2;
    this.loop = loop.on && loop.end > loop.start
      ? { start: loop.start * rate, end: loop.end * rate }
      : null;
    this.centre = offset * rate; // where in the song the next grain's middle belongs, in samples
    this.previous = null; // where the last grain was read from, in samples
    this.done = false;
  }

  // The mix as heard, mono, over [from, from + n) samples of the song (silence outside it).
  // Plain loops, not forEach: this runs twice a grain, and the callbacks cost more than the sums.
  guide(from, n) {
    const out = new Float32Array(n);
    let weights = this.weights();
    if (!weights.some((g) => g > 0)) weights = weights.map(() => 1);
    for (let t = 0; t < this.tracks.length; t++) {
      if (!weights[t]) continue;
      const channels = this.tracks[t];
      const scale = weights[t] / channels.length;
      for (const data of channels) {
        const a = Math.max(0, -from), b = Math.min(n, data.length - from);
        for (let i = a; i < b; i++) out[i] += scale * data[from + i];
      }
    }
    return out;
  }

  // Where the next grain is read from: near where it belongs, at the spot that best continues
  // the grain before it (normalised cross-correlation, searched coarsely, then to the sample).
  pick() {
    const hop = this.hop, reach = this.reach;
    const wanted = Math.round(this.centre) - hop;
    if (this.previous === null) return wanted;
    const model = this.guide(this.previous + hop, hop);
    const field = this.guide(wanted - reach, 2 * reach + hop);
    // Every 4th shift, on every 4th sample. Where it belongs wins a tie (silence): no nudge
    // without a reason.
    const coarse = scores(model, field, 0, 2 * reach, 4);
    let best = reach, bestScore = coarse[reach / 4];
    coarse.forEach((s, k) => { if (s > bestScore) [best, bestScore] = [4 * k, s]; });
    // Then to the sample, within 3 samples of the best of those.
    const first = Math.max(0, best - 3);
    const fine = scores(model, field, first, Math.min(2 * reach, best + 3), 1);
    bestScore = -Infinity;
    fine.forEach((s, k) => { if (s > bestScore) [best, bestScore] = [first + k, s]; });
    return wanted - reach + best;
  }

  // The next `grains` grains, overlap-added: per track, per channel, (grains + 1) hops of
  // samples, the first hop overlapping the block before and the last hop the block after
  // (scheduled one hop apart from the first grain's start, they sum to the whole).
  // Fewer grains, or none, once the song has ended (without a loop); `done` says so.
  block(grains) {
    const hop = this.hop, window = this.window, n = window.length;
    const out = this.tracks.map((channels) => channels.map(() => new Float32Array((grains + 1) * hop)));
    let made = 0;
    for (; made < grains && !this.done; made++) {
      const from = this.pick(), base = made * hop;
      for (let t = 0; t < this.tracks.length; t++) {
        const channels = this.tracks[t];
        for (let c = 0; c < channels.length; c++) {
          const data = channels[c], dest = out[t][c];
          const a = Math.max(0, -from), b = Math.min(n, data.length - from);
          for (let i = a; i < b; i++) dest[base + i] += window[i] * data[from + i];
        }
      }
      this.previous = from;
      this.centre += hop * this.speed;
      if (this.loop && this.centre >= this.loop.end) this.centre -= this.loop.end - this.loop.start;
      if (!this.loop && this.centre >= this.length) this.done = true;
    }
    return { grains: made, data: out };
  }
}

// How well the field, from each shift first, first + step, ..., last on, continues the model:
// the sum over every step-th sample i of model[i] * field[shift + i], over the square root of
// (1e-9 + the sum of those field samples squared). Returns one score per shift, in that order.
//
// Four shifts are summed at once: one sum's additions wait on each other, four sums' do not,
// and the processor can overlap them. Each sum still adds the same numbers in the same order
// as a sum alone, so every score, and so every pick, is the same to the bit.
function scores(model, field, first, last, step) {
  const count = (last - first) / step + 1, n = model.length;
  const out = new Float64Array(count);
  let k = 0;
  for (; k + 4 <= count; k += 4) {
    const s0 = first + k * step, s1 = s0 + step, s2 = s1 + step, s3 = s2 + step;
    let d0 = 0, d1 = 0, d2 = 0, d3 = 0, e0 = 1e-9, e1 = 1e-9, e2 = 1e-9, e3 = 1e-9;
    for (let i = 0; i < n; i += step) {
      const m = model[i], v0 = field[s0 + i], v1 = field[s1 + i], v2 = field[s2 + i], v3 = field[s3 + i];
      d0 += m * v0; e0 += v0 * v0;
      d1 += m * v1; e1 += v1 * v1;
      d2 += m * v2; e2 += v2 * v2;
      d3 += m * v3; e3 += v3 * v3;
    }
    out[k] = d0 / Math.sqrt(e0);
    out[k + 1] = d1 / Math.sqrt(e1);
    out[k + 2] = d2 / Math.sqrt(e2);
    out[k + 3] = d3 / Math.sqrt(e3);
  }
  for (; k < count; k++) {
    const s = first + k * step;
    let dot = 0, energy = 1e-9;
    for (let i = 0; i < n; i += step) {
      const v = field[s + i];
      dot += model[i] * v;
      energy += v * v;
    }
    out[k] = dot / Math.sqrt(energy);
  }
  return out;
}

// ---------- a change of key ----------
// The key is changed as a tape played faster changes it: the song stretched to 1/r of its
// speed, then played r times as fast (r = 2 ** (semitones / 12)), which raises every frequency
// by r and gives back the speed. The player's blocks and the downloaded mix are resampled here
// (the browser's own playbackRate interpolates linearly, and folds a raised song's top octave
// back down): input sample j * r makes output sample j, by a windowed sinc (a Hann window over
// 16 zero crossings each side, read from a table at 1/256 of a sample, linearly between).
// Raised in key, the sinc's cutoff is lowered to the output's Nyquist over r, so the song's top
// octave is filtered away, not folded back down.
const ZEROS = 16, STEPS = 256;

// How much faster than recorded a song `semitones` up (down: negative) is played.
export const keyRatio = (semitones) => 2 ** (semitones / 12);

// The kernel for `ratio`, made once per ratio (the player makes a resampler per block):
// [input samples either side of an output's position, the kernel at distance k / STEPS].
const kernels = new Map();
function kernel(ratio) {
  if (!kernels.has(ratio)) {
    const cutoff = Math.min(1, 1 / ratio);
    const width = Math.ceil(ZEROS / cutoff), n = width * STEPS;
    const table = new Float32Array(n + 2); // k = 0 .. n, and a zero past it for the lerp
    for (let k = 0; k <= n; k++) {
      const t = k / STEPS, x = Math.PI * cutoff * t;
      const sinc = k === 0 ? 1 : Math.sin(x) / x;
      table[k] = cutoff * sinc * (0.5 + 0.5 * Math.cos((Math.PI * t) / width));
    }
    kernels.set(ratio, [width, table]);
  }
  return kernels.get(ratio);
}

export class Resampler {
  // ratio: input samples per output sample (r). channels: the count of every block pushed.
  constructor(ratio, channels) {
    this.ratio = ratio;
    [this.width, this.table] = kernel(ratio);
    this.held = Array.from({ length: channels }, () => new Float32Array(0));
    this.first = 0; // the input index of held[c][0]
    this.made = 0; // output samples made so far
  }

  // The output samples that the input pushed so far settles (the input before position 0 is
  // silence); with `last`, every output up to `total` samples in all, the input after its end
  // silence. Returns one Float32Array per channel.
  push(blocks, { last = false, total = 0 } = {}) {
    const w = this.width, ratio = this.ratio, table = this.table;
    this.held = this.held.map((h, c) => {
      const joined = new Float32Array(h.length + (blocks ? blocks[c].length : 0));
      joined.set(h);
      if (blocks) joined.set(blocks[c], h.length);
      return joined;
    });
    const end = this.first + this.held[0].length; // input samples received
    let count = 0;
    if (last) count = Math.max(0, total - this.made);
    else count = Math.max(0, Math.ceil((end - w) / ratio) - this.made); // reads up to end - 1
    const out = this.held.map(() => new Float32Array(count));
    const taps = new Float32Array(2 * w);
    for (let j = 0; j < count; j++) {
      const p = (this.made + j) * ratio, base = Math.floor(p);
      const lo = Math.max(base - w + 1, this.first), hi = Math.min(base + w, end - 1);
      for (let k = lo; k <= hi; k++) { // each tap once, for every channel
        const at = Math.abs(k - p) * STEPS, a = Math.floor(at);
        taps[k - lo] = table[a] + (at - a) * (table[a + 1] - table[a]);
      }
      for (let c = 0; c < out.length; c++) {
        const data = this.held[c], from = lo - this.first;
        let sum = 0;
        for (let k = 0; k <= hi - lo; k++) sum += taps[k] * data[from + k];
        out[c][j] = sum;
      }
    }
    this.made += count;
    // What no later output reads goes.
    const keep = Math.max(0, Math.floor(this.made * ratio) - w - this.first);
    if (keep > 0) { this.held = this.held.map((h) => h.slice(keep)); this.first += keep; }
    return out;
  }
}

// One block resampled by `ratio` on its own (one Float32Array per channel in and out): the
// player's blocks start and end in a grain's fade, whose first and last samples are near
// silence, so the kernel's reach past a block's edges misses next to nothing.
export function resampled(block, ratio) {
  const total = Math.round(block[0].length / ratio);
  return new Resampler(ratio, block.length).push(block, { last: true, total });
}
