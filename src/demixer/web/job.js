// A song sent to be separated: the request, its status as it goes (a stream, else polling),
// Cancel, and the finished stems opened in the mixer with their download buttons.
"use strict";

import { chosenModel, mode, modelRefused, partSpans, separateAgain, updateSubmit } from "./form.js";
import { downloadAll, downloadMix } from "./mixdown.js";
import { glide, mixer, say } from "./mixer.js";
import { $, api, at, clearError, focusIn, focusLost, jobsChanged, setText, showError, state } from "./page.js";
import { openResult } from "./stems.js";
import { stop } from "./transport.js";
import { FINAL, PlainError, fromBody, modelWords, songName, stateWords, stemWords, timeLeft } from "./words.js";

// ---------- submit, watch, cancel ----------
$("#job-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  clearError(form);
  clearError($("#part-error"));
  clearError($("#model-error"));
  if (state.busy || $("#submit").disabled) return;
  const format = $("#format-select").value;
  let path, input;
  if (mode() === "prompt") {
    path = "/v1/queue/audio/separate";
    input = { file_id: state.fileId, prompt: $("#prompt").value, output_format: format };
    let spans;
    try { spans = partSpans(); } catch (e) { showError($("#part-error"), e); return; }
    if (spans.length) input.spans = spans;
  } else {
    const stems = [...document.querySelectorAll("#stem-choices input:checked")].map((i) => i.value);
    path = "/v1/queue/audio/stems";
    input = { file_id: state.fileId, model: chosenModel().id, stems, output_format: format };
  }
  const quality = $("#quality-select").value;  // "": the server's default
  if (quality) input.quality = quality;
  if (state.downmix) input.downmix = true;
  const track = $("#track-select").value;  // "": the one players play
  if (track) input.audio_track = Number(track);
  // Stems to listen to, mix and download: where one would peak above full scale (a loud
  // master, an mp3 decoded past 0 dBFS, a folded 5.1), all are turned down by one gain
  // instead of clipping, so they keep their balance and still add up to the song.
  input.rescale = true;
  state.busy = true;
  updateSubmit();
  try {
    const job = await api("POST", path, { input });
    watch(job.request_id, { file: state.file, name: state.fileName, audio: state.audio });
  } catch (e) {
    state.busy = false;
    updateSubmit();
    // A refused model, ensemble or stem is said beside the picker; a part of the song beside
    // its times.
    if (/^input\.(model|stems)/.test(e.param || "")) await modelRefused(e);
    else showError(e.param?.startsWith("input.spans") ? $("#part-error") : form, e);
  }
  jobsChanged();
});

function showStatus(s, progress) {
  setText($("#job-status"), stateWords(s));
  if (s.engine_model) setText($("#job-model"), `Model: ${modelWords(s.engine_model)}`);
  const pct = s.status === "COMPLETED" ? 100 : Math.round((s.progress || 0) * 100);
  $("#job-progress").value = pct;
  let detail = "";
  if (s.status === "IN_QUEUE") {
    detail = s.queue_position ? `${s.queue_position} ahead of it` : "next in line";
    if (s.waiting_reason) detail += " · no computer can run this model right now";
  } else if (s.status === "IN_PROGRESS" && !s.cancel_requested) {
    detail = `${pct} %`;
    const left = progress.estimate(s);
    if (left) detail += ` · ${left}`;
  } else if (s.status === "COMPLETED" && s.cancel_requested) {
    detail = "It finished before it could stop.";
  }
  $("#job-detail").textContent = detail;
  const cancel = $("#cancel");
  const had = document.activeElement === cancel;
  cancel.disabled = FINAL.has(s.status) || s.cancel_requested;
  if (had && cancel.disabled) $("#job-title").focus({ preventScroll: true }); // not lost with it
  if (s.status === "FAILED" && s.error) showError($("#job-status"), new PlainError(s.error.code));
  // Failed or cancelled: the same song can go back in the form, for another model.
  $("#job-again").hidden = !(FINAL.has(s.status) && s.file_id);
}

// Time left from the real progress while separating: the pace so far, not a guess.
function estimator() {
  let first = null;
  return {
    estimate(s) {
      const p = s.progress || 0;
      if (s.stage !== "separating" || p <= 0) return "";
      const now = performance.now() / 1000;
      if (!first) { first = { t: now, p }; return ""; }
      const done = p - first.p, spent = now - first.t;
      if (done < 0.02 || spent < 2) return "";
      return timeLeft((spent * (1 - p)) / done);
    },
  };
}

// focus: opened by the user (from the history): the focus goes to the view opened, the job's
// heading or, for a finished song, the mixer's.
// audio: the upload's sound ({ start: its audio_start in seconds, tracks: its audio_tracks }).
export async function watch(requestId, { file = null, name = null, job = null, focus = false, audio = null } = {}) {
  if (state.watch) state.watch.abort();
  const ctrl = new AbortController();
  state.watch = ctrl;
  state.job = { id: requestId, file, audio, name: name || job?.file_name || "song", info: job };
  const section = $("#job");
  section.hidden = false;
  stop(); // the song leaves the screen: it stops playing, too
  $("#mixer").hidden = true;
  clearError($("#job-status"));
  $("#job-title").textContent = state.job.name;
  $("#job-model").textContent = "";
  section.scrollIntoView({ behavior: glide(), block: "start" });
  let last = job && FINAL.has(job.status) ? job : null;
  // Separate is disabled while the job runs: the keyboard's focus moves on to the job, not
  // back to the top of the page.
  const opened = focus && last?.status !== "COMPLETED"; // a finished song opens in the mixer
  if (opened || [$("#submit"), document.body].includes(document.activeElement)) $("#job-title").focus({ preventScroll: true });
  const progress = estimator();
  showStatus(job || { status: "IN_QUEUE", progress: 0 }, progress);
  state.busy = !last; // Separate waits for the song being watched
  updateSubmit();
  if (!last) {
    try {
      last = await streamStatus(requestId, ctrl.signal, (s) => { state.job.info = s; showStatus(s, progress); });
    } catch (e) {
      if (ctrl.signal.aborted) return;
      console.warn(`status stream failed (${e.message}); polling`);
    }
  }
  // The stream can end early (a proxy, a network blip): poll until final.
  while (!ctrl.signal.aborted && !(last && FINAL.has(last.status))) {
    try {
      last = await api("GET", `/v1/queue/requests/${requestId}/status`);
      state.job.info = last;
      showStatus(last, progress);
    } catch (e) { showError($("#job-status"), e); break; }
    if (!FINAL.has(last.status)) await new Promise((r) => setTimeout(r, 1000));
  }
  if (ctrl.signal.aborted) return;
  state.busy = false;
  updateSubmit();
  jobsChanged();
  if (last?.status === "COMPLETED") showResult(requestId, last, focus, ctrl.signal);
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
async function streamStatus(requestId, signal, onStatus) {
  const url = `/v1/queue/requests/${requestId}/status/stream?interval=1`;
  const response = await fetch(at(url), { headers: { Authorization: `Bearer ${state.key}` }, signal });
  if (!response.ok) throw fromBody(null, response.status);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (event === "status") { last = JSON.parse(data); onStatus(last); }
      else if (event === "error") throw fromBody(JSON.parse(data));
    }
  }
}

$("#cancel").addEventListener("click", async () => {
  const button = $("#cancel");
  clearError(button);
  $("#job-title").focus({ preventScroll: true }); // Cancel is disabled now: not a lost focus
  button.disabled = true;
  try {
    const answer = await api("PUT", `/v1/queue/requests/${state.job.id}/cancel`);
    setText($("#job-status"), answer.status === "CANCELLED" ? "Cancelled" : "Stopping");
  } catch (e) { showError(button, e); button.disabled = false; }
});

// ---------- the result, in the mixer ----------
// signal: aborted when another song is opened (or this one deleted) before this one's stems
// have loaded: this one then leaves the screen to it.
async function showResult(requestId, info, opened, signal) {
  const err = $("#download-all");
  clearError(err);
  const song = songName(state.job.name);
  try {
    const result = await api("GET", `/v1/queue/requests/${requestId}/result`);
    if (signal.aborted) return;
    const prompt = info?.prompt;
    // The residual is the rest of the song in both modes; its file keeps the API's name.
    const labelOf = (name) => (prompt && name === "target" ? `“${prompt}”` : stemWords(name));
    const outputs = Object.entries(result.data)
      .filter(([, v]) => v && typeof v === "object" && v.url)
      .map(([name, v]) => ({
        name, label: labelOf(name), url: v.url, fileName: v.file_name, type: v.content_type, rate: v.sample_rate,
        duration: v.duration, channels: v.channels,
        madeBy: result.made_by?.[name] || "",
      }))
      // What was asked for first, the rest of the song last: the outputs come in the model's
      // order, where "everything but the vocals" followed its residual (the vocals).
      .sort((a, b) => (a.name === "residual") - (b.name === "residual"));
    // Of several audio tracks the browser decodes the first, not always the one separated.
    const several = state.job.audio?.tracks > 1;
    const original = several ? null : state.job.file;
    $("#again").hidden = !state.job.info?.file_id; // from a URL: no upload to use again
    // The job's card goes: a focus in it (or on nothing) moves to the mixer's heading.
    const focus = opened || focusIn($("#job")) || focusLost();
    $("#job").hidden = true; // the mixer says the rest
    if (!opened) say(`${state.job.name}: ready. The stems are in the mixer.`);
    await openResult({
      title: state.job.name,
      model: info?.engine_model ? `Model: ${modelWords(info.engine_model)}` : "",
      song,
      outputs,
      original,
      originalLead: state.job.audio?.start || 0,
      originalNote: original ? "" : several
        ? "Original: not here, because this video has several audio tracks, and the browser would play the first, not always the one separated."
        : "Original: not here, because this song was not uploaded in this tab.",
      thumbsKey: requestId,
      gain: Object.values(result.data).find((v) => v && typeof v === "object" && v.url)?.gain ?? 1,
      focus,
      signal,
    });
  } catch (e) { if (!signal.aborted) showError(err, e); }
  jobsChanged();
}

for (const id of ["#again", "#job-again"]) {
  $(id).addEventListener("click", () => {
    const job = state.job;
    if (job?.info?.file_id) separateAgain(job.info.file_id, job.name, job.file);
  });
}

$("#download-all").addEventListener("click", () => {
  const button = $("#download-all");
  clearError(button);
  if (!mixer.downloads.length) { showError(button, "There are no stems to download yet."); return; }
  downloadAll().catch((e) => showError(button, `The zip could not be made: ${e.message}`));
});
$("#render-mix").addEventListener("click", async () => {
  const button = $("#render-mix");
  if (button.getAttribute("aria-disabled") === "true") return; // one mix at a time
  clearError(button);
  // At a practice speed the mix is stretched here, which takes a while for a long song (seconds
  // to tens of seconds): the button says how far it is instead of looking as if nothing
  // happened. aria-disabled, not disabled: a disabled button would drop the keyboard's focus.
  const words = button.textContent;
  button.setAttribute("aria-disabled", "true");
  try {
    await downloadMix((done) => { button.textContent = `Making the mix… ${Math.floor(100 * done)} %`; });
  } catch (e) {
    showError(button, `The mix could not be made: ${e.message}`);
  } finally {
    button.textContent = words;
    button.removeAttribute("aria-disabled");
  }
});
