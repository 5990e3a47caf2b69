// Playback: every stem (and the original) from one clock, at 100 % or at a practice speed and
// in another key, the time shown, and where the song is heard now.
"use strict";

import { $, applyGains, mixer, when } from "./mixer.js";
import { Stretcher, keyRatio, resampled } from "./stretch.js";

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
  if (mixer.speed === 1 && mixer.pitch === 0) {
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
// In another key the song is stretched to 1/r of the speed and its blocks played r times as
// fast (r = 2 ** (semitones / 12); stretch.js says why): each block is resampled by r there, so
// its hops last 1/r as long on the clock.
const GRAINS = 16; // grains per block: about 0.37 s at 44.1 kHz
const AHEAD = 1.5; // seconds of sound made ahead of the clock (a busy page, a background tab)
const FEED_MS = 200;

const channelsOf = (buffer) => Array.from({ length: buffer.numberOfChannels }, (_, c) => buffer.getChannelData(c));

function startStretched(tracks, when) {
  const ctx = mixer.ctx;
  const rate = keyRatio(mixer.pitch); // how much faster than recorded the blocks are played
  const stretcher = new Stretcher({
    tracks: tracks.map(([buffer]) => channelsOf(buffer)),
    rate: ctx.sampleRate,
    weights: () => tracks.map(([, gainNode]) => gainNode.gain.value),
    speed: mixer.speed / rate,
    offset: mixer.offset,
    loop: mixer.loop,
  });
  const channels = tracks.map(([buffer]) => buffer.numberOfChannels);
  const hopSeconds = stretcher.hop / ctx.sampleRate / rate; // on the clock
  let grain = 0; // grains laid down so far; grain k's middle sounds k hops after `when`
  const feed = () => {
    while (!stretcher.done && when + (grain - 1) * hopSeconds < ctx.currentTime + AHEAD) {
      const { grains, data } = stretcher.block(GRAINS);
      if (!grains) break;
      const at = when + (grain - 1) * hopSeconds;
      const length = (grains + 1) * stretcher.hop;
      data.forEach((samples, t) => {
        const block = samples.map((s) => s.subarray(0, length));
        const sound = rate === 1 ? block : resampled(block, rate);
        const buffer = new AudioBuffer({ numberOfChannels: channels[t], length: sound[0].length, sampleRate: ctx.sampleRate });
        sound.forEach((s, c) => buffer.copyToChannel(s, c));
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

// The key, in semitones from the song's (-6 to +6), at the same speed.
export function setPitch(semitones) {
  if (semitones === mixer.pitch) return;
  const wasPlaying = mixer.playing;
  if (wasPlaying) stop();
  mixer.pitch = semitones;
  $("#pitch").value = String(semitones);
  if (wasPlaying) play();
}
mixer.setPitch = setPitch;

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
export function tick() {
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
