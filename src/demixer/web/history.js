// The account's songs: the list, kept fresh while one is separating, each with Open, Separate
// again and Delete (the song's stems and, where nothing else was made from it, its upload).
"use strict";

import { UPLOAD_GONE, forgetChosenFile, loadRecent, separateAgain, updateSubmit } from "./form.js";
import { watch } from "./job.js";
import { say } from "./mixer.js";
import { $, api, clearError, focusIn, focusLost, setText, showError, state } from "./page.js";
import { forgetThumbnails, thumbnails } from "./stems.js";
import { stop } from "./transport.js";
import { FINAL, colour, day, length, modelWords, stateWords, stemWords } from "./words.js";

// ---------- history ----------
function thumbnail(job, kept) {
  const box = document.createElement("span");
  box.className = "thumbs";
  const stems = kept || (job.stems || (job.prompt ? ["target"] : [])).map((s, i) => [s, colour(s, i), null]);
  for (const [name, c, cols] of stems.slice(0, 6)) {
    const t = document.createElement("span");
    t.className = "thumb";
    t.title = stemWords(name);
    t.style.setProperty("--c", c);
    // No waveform kept in this browser (opened elsewhere, or not yet): a flat line, which no
    // one takes for the song's shape.
    if (!cols) t.title = `${stemWords(name)}: its waveform shows here once it is opened in this browser`;
    for (const h of cols || Array(12).fill(0)) {
      const bar = document.createElement("i");
      bar.style.height = `${Math.max(6, h)}%`;
      t.append(bar);
    }
    box.append(t);
  }
  return box;
}

// The list of the account's songs; it keeps itself fresh (every few seconds) while one of them
// is still waiting or separating. Answers the jobs listed. A refresh changes only the songs
// whose row would read differently: the rest, and a focus on one of their buttons, stay.
let historyTimer = null;
export async function loadHistory() {
  const list = $("#history-list");
  clearError(list);
  clearTimeout(historyTimer);
  list.setAttribute("aria-busy", "true");
  let page;
  try {
    page = await api("GET", "/v1/queue/requests?limit=50");
  } catch (e) { showError(list, e); list.removeAttribute("aria-busy"); return []; }
  if (page.data.some((j) => !FINAL.has(j.status))) historyTimer = setTimeout(loadHistory, 3000);
  renderHistory(list, page.data);
  list.removeAttribute("aria-busy");
  return page.data;
}

function renderHistory(list, jobs) {
  const focused = focusIn(list) ? document.activeElement.id : "";
  const shown = new Map([...list.children].map((li) => [li.dataset.id || "", li]));
  const kept = thumbnails();
  const items = jobs.map((job) => {
    // What the row shows, as one string: the same string, the same row.
    const looks = JSON.stringify([job.status, stateWords(job), job.file_name, job.duration, job.prompt,
      job.stems, job.engine_model, day(job.created_at), kept[job.request_id] || null]);
    const li = shown.get(job.request_id);
    return li && li.dataset.looks === looks ? li : historyItem(job, looks, kept[job.request_id]);
  });
  if (!items.length) {
    items.push(shown.get("") || Object.assign(document.createElement("li"), {
      className: "muted", textContent: "Nothing yet: your separated songs will be listed here.",
    }));
  }
  // In place: a row is moved only when it is out of order (a moved row loses its focus).
  items.forEach((li, i) => { if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null); });
  while (list.children.length > items.length) list.lastElementChild.remove();
  if (focused && !focusIn(list)) document.getElementById(focused)?.focus({ preventScroll: true });
}

function historyItem(job, looks, kept) {
  const list = $("#history-list");
  const song = job.file_name || "a song";
  const li = document.createElement("li");
  li.dataset.testid = "history-item";
  li.dataset.id = job.request_id;
  li.dataset.looks = looks;
  const text = document.createElement("span");
  text.className = "what";
  // A long name is cut short on screen where a pointer hovers: the whole of it shows on hover
  // (where nothing hovers, app.css lets it wrap). Its own direction (dir=auto): an Arabic or
  // Hebrew name is cut at its end, not shown from the middle on.
  const name = Object.assign(document.createElement("strong"), { className: "song", textContent: song, title: song, dir: "auto" });
  // A described sound, else the stems and the model (or ensemble) that made them: songs
  // separated again with another model tell which is which.
  const what = job.prompt ? [`“${job.prompt}”`] : [(job.stems || []).map(stemWords).join(", "), modelWords(job.engine_model)];
  const facts = [job.duration ? length(job.duration) : null, ...what, day(job.created_at)].filter(Boolean).join(" · ");
  const meta = Object.assign(document.createElement("span"), { className: "muted small", textContent: facts });
  const badge = Object.assign(document.createElement("span"), { className: `state ${job.status.toLowerCase()}`, textContent: stateWords(job) });
  badge.dataset.testid = "history-state";
  text.append(name, meta);
  const buttons = document.createElement("span");
  buttons.className = "row";
  const open = Object.assign(document.createElement("button"), { type: "button", textContent: "Open", id: `open-${job.request_id}` });
  open.setAttribute("aria-label", `Open ${song}`);
  open.addEventListener("click", () => watch(job.request_id, { name: job.file_name, job, focus: true }));
  const del = Object.assign(document.createElement("button"), { type: "button", id: `delete-${job.request_id}` });
  // Delete asks once more (WCAG 3.3.4): the first press turns the button into "Confirm delete",
  // the second deletes. Leaving it (focus elsewhere, Escape, or 8 s) takes the question back.
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    del.className = "quiet";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${song}`);
  };
  disarm();
  del.addEventListener("blur", () => { if (armed) disarm(); });
  del.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && armed) { disarm(); say(`${song} is kept.`); } });
  del.addEventListener("click", async () => {
    if (!armed) {
      armed = setTimeout(disarm, 8000);
      del.className = "confirm";
      del.textContent = "Confirm delete";
      del.setAttribute("aria-label", `Confirm delete ${song}`);
      say(`Press again to delete ${song}.`);
      return;
    }
    disarm();
    setText($("#history-note"), "");
    try { await api("DELETE", `/v1/queue/requests/${job.request_id}`); } catch (e) { showError(list, e); return; }
    forgetThumbnails(job.request_id);
    if (state.job?.id === job.request_id) { // the song on screen is gone: so is its player
      if (state.watch) state.watch.abort();
      state.busy = false;
      updateSubmit();
      stop();
      $("#mixer").hidden = true;
      $("#job").hidden = true;
      state.job = null;
    }
    // The focus goes to the next song's Delete (else the one before, else the list's heading).
    const near = [li.nextElementSibling, li.previousElementSibling].find((el) => el?.dataset.id);
    const refocus = focusIn(li) || focusLost();
    li.remove();
    if (refocus) (near ? $(`#${CSS.escape(`delete-${near.dataset.id}`)}`) : $("#history-title")).focus();
    let words = "", failed = null;
    try { words = await deleteUpload(job, song); } catch (e) { failed = e; }
    loadHistory(); // first: it empties the list's error box
    if (failed) {
      showError(list, `${song}: its stems are deleted, but not the uploaded song. ${failed.message}`);
      return;
    }
    $("#history-note").textContent = words;
    say(words);
  });
  // The song back in the form for another model: a finished (or failed) song that was uploaded.
  if (FINAL.has(job.status) && job.file_id) {
    const again = Object.assign(document.createElement("button"), { type: "button", textContent: "Separate again", id: `again-${job.request_id}` });
    again.setAttribute("aria-label", `Separate again ${song}`);
    again.title = "Try another model or other stems on this song, without uploading it again";
    again.addEventListener("click", () => separateAgain(job.file_id, song, state.job?.id === job.request_id ? state.job.file : null));
    buttons.append(open, again, del);
  } else {
    buttons.append(open, del);
  }
  li.append(thumbnail(job, kept), text, badge, buttons);
  return li;
}
$("#refresh").addEventListener("click", loadHistory);

// Delete removes the song: the request's stems, and the upload they were made from once no
// other request of the account was made from it (the form keeps an upload for the next
// separation, so several may share one). Else the song stayed on the server for 72 h after the
// page said it was deleted. Answers what went, in words.
async function deleteUpload(job, song) {
  const fileId = job.file_id;
  if (!fileId) return `${song} deleted.`; // from a URL: nothing of it was uploaded
  let file;
  try {
    file = await api("GET", `/v1/files/${encodeURIComponent(fileId)}`);
  } catch (e) {
    if (UPLOAD_GONE.has(e.code)) return `${song} deleted.`; // the upload is gone already
    throw e;
  }
  // Every request made from the upload came after it: the list (newest first) is read back to
  // the upload's time, not further.
  const since = Date.parse(file.created_at);
  let others = 0;
  for (let cursor = null; ;) {
    const query = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const page = await api("GET", `/v1/queue/requests?limit=100${query}`);
    others += page.data.filter((j) => j.file_id === fileId && j.request_id !== job.request_id).length;
    const oldest = page.data[page.data.length - 1];
    if (!page.next_cursor || !oldest || Date.parse(oldest.created_at) < since) break;
    cursor = page.next_cursor;
  }
  if (others) {
    const which = others === 1 ? "another separation in your list was" : `${others} other separations in your list were`;
    return `${song}: these stems are deleted. The uploaded song stays: ${which} made from it.`;
  }
  try {
    await api("DELETE", `/v1/files/${encodeURIComponent(fileId)}`);
  } catch (e) {
    if (!UPLOAD_GONE.has(e.code)) throw e; // gone meanwhile (another tab, its retention): done
  }
  if (state.fileId === fileId) forgetChosenFile();
  loadRecent();
  return `${song} deleted: its stems and the uploaded song.`;
}
document.addEventListener("demixer:jobs-changed", () => loadHistory());
