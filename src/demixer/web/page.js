// What every part of the page (app.js) reads: the session's state, the API, and the errors said
// next to the control that caused them. It imports no other part, so any part can import it.
"use strict";

import { PlainError, fromBody } from "./words.js";

export const $ = (sel, root = document) => root.querySelector(sel);
export const state = { key: "", fileId: null, fileName: null, downmix: false, file: null, upload: null, job: null, watch: null, models: null, busy: false };

// ---------- errors next to the control that caused them ----------
function errorFor(el) {
  if (el.matches("p.error")) return el; // a box of its own (the part of the song's)
  const section = el.closest("form, .drop, section");
  return $(":scope > [data-testid=error]", section) || $("[data-testid=error]", section);
}
// A field that names its error box in aria-describedby (the key, the file picker) is marked
// invalid while the box says something: a screen reader says so, with the error, whenever the
// focus comes back to the field, not only once when the error appears.
function markInvalid(box, invalid) {
  if (!box?.id) return;
  for (const field of document.querySelectorAll(`[aria-describedby~="${box.id}"]`)) {
    if (invalid) field.setAttribute("aria-invalid", "true");
    else field.removeAttribute("aria-invalid");
  }
}
export function showError(el, err) {
  const box = errorFor(el);
  const text = err instanceof Error ? err.message : String(err);
  if (box) box.textContent = text;
  markInvalid(box, true);
  console.warn(err?.code || "", text);
}
export function clearError(el) {
  const box = errorFor(el);
  if (box) box.textContent = "";
  markInvalid(box, false);
}
// Text set only when it changes: a live region says it again at every write, even the same words.
export function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
// Whether the focus is in el; whether it is on nothing (the body: what had it went away).
export const focusIn = (el) => el.contains(document.activeElement);
export const focusLost = () => [document.body, document.documentElement, null].includes(document.activeElement);

// ---------- API ----------
// Where the server is: the folder above this module (<root>/web/page.js), so that a page a
// reverse proxy serves under a path (https://example.com/demixer/) asks for its own API there;
// "/v1/..." went to the proxy's root, where no demixer answers.
const ROOT = new URL("../", import.meta.url);
export const at = (path) => new URL(path.replace(/^\//, ""), ROOT).href;

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  const init = { method, headers };
  if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  let response;
  try { response = await fetch(at(path), init); } catch (e) { throw new PlainError("NETWORK"); }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    throw fromBody(body, response.status);
  }
  return response.status === 204 ? null : response.json();
}

// The list of songs (history.js) is read again when a song is sent, ends or opens. job.js says
// so with this event instead of importing history.js, which imports job.js (its Open buttons).
export const jobsChanged = () => document.dispatchEvent(new Event("demixer:jobs-changed"));
