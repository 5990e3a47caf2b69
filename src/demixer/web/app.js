// demixer web page: only the public v1 API, no external requests, no build step. This part
// signs in (the local session, else an API key) and starts the rest: page.js (the state, the
// API, errors), form.js (the models and the song), job.js (a separation and its result),
// history.js (the list of songs), and the mixer (mixer.js and its parts).
"use strict";

import { loadModels, loadRecent } from "./form.js";
import { loadHistory } from "./history.js";
import { watch } from "./job.js";
import { $, api, at, clearError, focusIn, showError, state } from "./page.js";
import "./timeline.js"; // the transport's buttons and the mixer's keys
import { FINAL } from "./words.js";

// ---------- session / key ----------
async function startSession() {
  const forgotten = sessionStorage.getItem("demixer.forgotten"); // "Forget this key" reloaded
  sessionStorage.removeItem("demixer.forgotten");
  try {
    const response = await fetch(at("/v1/session"));
    if (response.ok) {
      const session = await response.json();
      state.key = session.api_key;
      showSession(`On this computer · account ${session.account_id}`, false);
      return ready();
    }
  } catch (e) { /* fall through to the key field */ }
  const stored = localStorage.getItem("demixer.apiKey");
  $("#key-section").hidden = false;
  if (forgotten) {
    $("#session-info").textContent = "The key was forgotten: this browser keeps none.";
    $("#api-key").focus();
  }
  if (stored) { $("#api-key").value = stored; await useKey(stored); }
}
// typed: a key typed here, which this browser keeps (the local session's is the server's).
function showSession(text, typed) {
  $("#session-info").textContent = text;
  $("#switch-key").hidden = false;
  $("#forget-key").hidden = !typed;
}
async function useKey(key) {
  const form = $("#key-form");
  clearError(form);
  const previous = state.key; // a mistyped key must not end the session that works
  state.key = key.trim();
  try {
    await api("GET", "/v1/models");
  } catch (e) {
    state.key = previous;
    showError(form, e);
    // The key this browser keeps, refused now (revoked, another server): it can go from here.
    if (key.trim() === localStorage.getItem("demixer.apiKey")) $("#forget-key").hidden = false;
    return;
  }
  localStorage.setItem("demixer.apiKey", state.key);
  showSession(`Signed in with key ${state.key.slice(0, 10)}…`, true);
  // The key field goes away: the focus moves on to what comes next, choosing a song.
  const wasIn = focusIn($("#key-section"));
  $("#key-section").hidden = true;
  if (wasIn) $("#upload-input").focus();
  await ready();
}
$("#key-form").addEventListener("submit", (ev) => { ev.preventDefault(); useKey($("#api-key").value); });
$("#switch-key").addEventListener("click", () => {
  $("#key-section").hidden = false;
  $("#key-cancel").hidden = !state.key; // signed in: this key goes on until another works
  $("#api-key").focus();
});
// A key typed here stays in this browser for the next visit. Forgetting it (a shared computer,
// a key that should no longer be used here) takes it from the browser with the waveforms kept
// of the songs (a trace of them, as Delete says), and starts the page again with nothing of the
// account in it: the key prompt, the focus in it.
$("#forget-key").addEventListener("click", () => {
  localStorage.removeItem("demixer.apiKey");
  localStorage.removeItem("demixer.thumbs");
  sessionStorage.setItem("demixer.forgotten", "1");
  $("#api-key").value = "";
  location.reload();
});
$("#key-cancel").addEventListener("click", () => {
  clearError($("#key-form"));
  $("#key-section").hidden = true;
  $("#switch-key").focus(); // back where it was opened
});
// Escape puts the key field away as "Keep the current key" does, where there is a key to keep.
$("#key-section").addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && !$("#key-cancel").hidden) { ev.preventDefault(); $("#key-cancel").click(); }
});

async function ready() {
  const [, jobs] = await Promise.all([loadModels(), loadHistory(), loadRecent()]);
  // Opened (or reloaded) while a song is being separated: follow it again, as before.
  const running = (jobs || []).find((j) => !FINAL.has(j.status));
  if (running && !state.job) watch(running.request_id, { name: running.file_name, job: running });
}

startSession();
