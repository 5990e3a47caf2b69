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
  guide(from, n) {
    const out = new Float32Array(n);
    let weights = this.weights();
    if (!weights.some((g) => g > 0)) weights = weights.map(() => 1);
    this.tracks.forEach((channels, t) => {
      if (!weights[t]) return;
      const scale = weights[t] / channels.length;
      for (const data of channels) {
        const a = Math.max(0, -from), b = Math.min(n, data.length - from);
        for (let i = a; i < b; i++) out[i] += scale * data[from + i];
      }
    });
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
    const score = (shift, step) => {
      let dot = 0, energy = 1e-9;
      for (let i = 0; i < hop; i += step) {
        const v = field[shift + i];
        dot += model[i] * v;
        energy += v * v;
      }
      return dot / Math.sqrt(energy);
    };
    // Where it belongs wins a tie (silence): no nudge without a reason.
    let best = reach, bestScore = score(reach, 4);
    for (let shift = 0; shift <= 2 * reach; shift += 4) {
      const s = score(shift, 4);
      if (s > bestScore) [best, bestScore] = [shift, s];
    }
    const coarse = best;
    bestScore = -Infinity;
    for (let shift = Math.max(0, coarse - 3); shift <= Math.min(2 * reach, coarse + 3); shift++) {
      const s = score(shift, 1);
      if (s > bestScore) [best, bestScore] = [shift, s];
    }
    return wanted - reach + best;
  }

  // The next `grains` grains, overlap-added: per track, per channel, (grains + 1) hops of
  // samples, the first hop overlapping the block before and the last hop the block after
  // (scheduled one hop apart from the first grain's start, they sum to the whole).
  // Fewer grains, or none, once the song has ended (without a loop); `done` says so.
  block(grains) {
    const hop = this.hop, n = this.window.length;
    const out = this.tracks.map((channels) => channels.map(() => new Float32Array((grains + 1) * hop)));
    let made = 0;
    for (; made < grains && !this.done; made++) {
      const from = this.pick();
      this.tracks.forEach((channels, t) => {
        channels.forEach((data, c) => {
          const dest = out[t][c], base = made * hop;
          const a = Math.max(0, -from), b = Math.min(n, data.length - from);
          for (let i = a; i < b; i++) dest[base + i] += this.window[i] * data[from + i];
        });
      });
      this.previous = from;
      this.centre += hop * this.speed;
      if (this.loop && this.centre >= this.loop.end) this.centre -= this.loop.end - this.loop.start;
      if (!this.loop && this.centre >= this.length) this.done = true;
    }
    return { grains: made, data: out };
  }
}
