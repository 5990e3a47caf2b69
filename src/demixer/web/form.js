// The form: the models to choose from, the song (uploaded, or one already on the server), the
// part of the song, and what Separate can do now and why not.
"use strict";

import { glide } from "./mixer.js";
import { $, api, at, clearError, showError, state } from "./page.js";
import { PlainError, bytes, colour, day, fromBody, length, seconds, stemWords } from "./words.js";

// A phone has nothing to drop from: it is asked to choose.
const DROP_TITLE = matchMedia("(pointer: coarse)").matches ? "Choose a song or a video" : "Drop a song or a video here";

// ---------- models ----------
function isWeak(m) { return /\bweak\b/i.test(m.quality || "") || /not working great/i.test(m.quality || ""); }

export async function loadModels() {
  const err = $("#models-error");
  try {
    state.models = await api("GET", "/v1/models");
  } catch (e) { err.textContent = `The list of models could not be loaded. ${e.message}`; return; }
  err.textContent = "";
  const select = $("#model-select");
  const was = select.value; // read again (a model went): the choice stays where it still can
  select.replaceChildren();
  const models = [...state.models.engine_models].sort((a, b) => isWeak(a) - isWeak(b));
  for (const m of models) {
    const label = `${m.id} — ${m.stems.join(", ")}${isWeak(m) ? " (weak)" : ""}`;
    select.append(new Option(label, m.id));
  }
  if (models.some((m) => m.id === was)) select.value = was;
  const formats = state.models.engine_models[0]?.limits.output_formats || ["wav"];
  $("#format-select").replaceChildren(...formats.map((f) => new Option(f.toUpperCase(), f)));
  if (!models.length) err.textContent = "No model is installed on this server yet.";
  const separable = state.models.data.find((q) => q.id === "audio/separate")?.separable || [];
  $("#prompt-hint").textContent = separable.length ? `This server can separate: ${separable.join(", ")}.` : "";
  renderAvailable((state.models.catalogue || []).filter((m) => !m.installed));
  renderModel();
  updateSubmit();
}

const installed = (id) => state.models?.engine_models.find((m) => m.id === id);

function renderModel() {
  clearError($("#model-error"));
  const model = installed($("#model-select").value);
  const info = $("#model-info");
  info.replaceChildren();
  if (model) {
    const what = document.createElement("p");
    what.textContent = model.description;
    const how = document.createElement("p");
    how.className = "muted small";
    how.textContent = `Quality: ${model.quality}`;
    if (isWeak(model)) {
      const badge = Object.assign(document.createElement("span"), { className: "badge weak", textContent: "weak" });
      what.prepend(badge, " ");
    }
    const licence = document.createElement("p");
    licence.className = "muted small";
    licence.textContent = `Licence: ${model.license}${model.license_class ? ` (${model.license_class})` : ""}`;
    info.append(what, how, licence);
  }
  renderEnsemble(model);
}

// The stem checkboxes: the chosen model's stems, or the ensemble's.
function renderStems() {
  const box = $("#stem-choices");
  box.replaceChildren();
  (chosenModel()?.stems || []).forEach((stem, i) => {
    const label = document.createElement("label");
    label.className = "chip";
    label.style.setProperty("--c", colour(stem, i));
    const input = Object.assign(document.createElement("input"), { type: "checkbox", value: stem, checked: true });
    input.addEventListener("change", updateSubmit);
    label.append(input, document.createTextNode(stemWords(stem)));
    box.append(label);
  });
  updateSubmit();
}

// ---------- an ensemble: the chosen model combined with others ----------
// As the server combines them (README's ensembles): each model separates the song and the stems
// they all make are combined; the rest of the song (instrumental, else other) is not combined
// but what is left, so models that share only that have nothing to combine.
const MODES = {
  avg: "Average: each stem is the mean of the models' (the usual choice).",
  max: "Max Spec: at each frequency, the loudest of the models' (fuller, with more bleed).",
  min: "Min Spec: at each frequency, the quietest of the models' (cleaner, thinner).",
  median_wave: "Median: at each sample, the middle one of the models' (with three or more, the odd one out is left out; with two it is the average).",
};
function sharedStems(models) {
  const stems = models[0].stems.filter((s) => models.every((m) => m.stems.includes(s)));
  const rest = ["instrumental", "other"].find((s) => stems.includes(s));
  return stems.length === 1 && stems[0] === rest ? [] : stems;
}
// What Separate sends as the model: {id, stems, members}, the chosen model alone or the ensemble
// of it and the models ticked (its id as the API spells one: a+b, max:a+b); null before the
// list of models is read.
export function chosenModel() {
  const main = installed($("#model-select").value);
  if (!main) return null;
  if ($("#ensemble").hidden || !$("#ensemble-on").checked) return { id: main.id, stems: main.stems, members: [main] };
  const members = [main, ...[...document.querySelectorAll("#ensemble-models input:checked")].map((i) => installed(i.value))];
  const mode = $("#ensemble-mode").value;
  const id = `${mode === "avg" ? "" : `${mode}:`}${members.map((m) => m.id).join("+")}`;
  // None ticked yet: the chosen model's stems stay in view (Separate says to tick one).
  return { id, stems: members.length > 1 ? sharedStems(members) : main.stems, members };
}
// The models the chosen one can be combined with: those installed that share a stem with it.
// A model ticked before stays ticked while it is offered.
function renderEnsemble(main) {
  const ticked = new Set([...document.querySelectorAll("#ensemble-models input:checked")].map((i) => i.value));
  const others = main ? state.models.engine_models.filter((m) => m.id !== main.id && sharedStems([main, m]).length) : [];
  $("#ensemble").hidden = !others.length;
  $("#ensemble-models").replaceChildren(...others.map((m) => {
    const label = Object.assign(document.createElement("label"), { className: "check" });
    const input = Object.assign(document.createElement("input"), { type: "checkbox", value: m.id, checked: ticked.has(m.id) });
    input.addEventListener("change", renderCombination);
    label.append(input, `${m.id} — ${m.stems.join(", ")}${isWeak(m) ? " (weak)" : ""}`);
    return label;
  }));
  renderCombination();
}
// The ensemble's id and how it combines, and its stems to choose from.
function renderCombination() {
  clearError($("#model-error"));
  $("#ensemble-options").hidden = !$("#ensemble-on").checked;
  $("#ensemble-how").textContent = MODES[$("#ensemble-mode").value];
  const chosen = chosenModel();
  const line = $("#ensemble-id");
  line.replaceChildren();
  if (chosen?.members.length > 1) {
    line.append("Model id (for the API and the command line): ", Object.assign(document.createElement("code"), { textContent: chosen.id }));
  }
  renderStems();
}
$("#ensemble-on").addEventListener("change", renderCombination);
$("#ensemble-mode").addEventListener("change", renderCombination);

// A model (or an ensemble) the server refused, said beside the picker. A model no longer
// installed (removed, or its worker gone since the list was read): the list is read again, so
// it is no longer offered, and an ensemble names which of its models went.
export async function modelRefused(err) {
  const chosen = chosenModel();
  let words = err.message;
  if (err.code === "MODEL_UNAVAILABLE" && chosen) {
    await loadModels();
    const gone = chosen.members.map((m) => m.id).filter((id) => !installed(id));
    if (chosen.members.length > 1 && gone.length) {
      words = `${gone.join(" and ")} ${gone.length > 1 ? "aren't" : "isn't"} installed on the server (any more), so this ensemble can't run. Combine the models listed.`;
    }
  } else if (err.code === "INVALID_REQUEST" && chosen?.members.length > 1) {
    words = "This ensemble names more models than the server takes at once. Combine fewer.";
  }
  showError($("#model-error"), words);
}

function renderAvailable(models) {
  const list = $("#available-models");
  list.replaceChildren();
  $("#more-models").hidden = !models.length;
  for (const m of models) {
    const li = document.createElement("li");
    const name = Object.assign(document.createElement("strong"), { textContent: m.id });
    const what = Object.assign(document.createElement("span"), { textContent: ` — ${m.description} ${m.quality ? `(${m.quality})` : ""}` });
    if (m.license_class && m.license_class !== "permissive") { // say it before anyone installs it
      what.textContent += ` Licence: ${m.license_class}.`;
    }
    const how = document.createElement("code");
    how.textContent = m.install;
    li.append(name, what, document.createElement("br"), "To add it, whoever runs the server runs: ", how);
    list.append(li);
  }
}

$("#model-select").addEventListener("change", renderModel);
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    const prompt = mode() === "prompt";
    $("#prompt-options").hidden = !prompt;
    $("#stems-options").hidden = prompt;
    updateSubmit();
  });
}
export const mode = () => $("input[name=mode]:checked").value;
$("#prompt").addEventListener("input", updateSubmit);

// ---------- only in part of the song (the API's spans) ----------
// The times show once a part is chosen; "the whole song" sends no spans.
$("#part-mode").addEventListener("change", () => {
  const whole = !$("#part-mode").value;
  $("#part-times").hidden = whole;
  $("#part-hint").hidden = whole;
  clearError($("#part-error"));
});
// The spans to send ([] for the whole song), or an error in words for times that are not times.
// Whether the part fits the song (an end after its start, a start before the song's end) is the
// server's to say, in its words, as for any client of the API.
export function partSpans() {
  const how = $("#part-mode").value;
  if (!how) return [];
  const start = seconds($("#part-start").value), end = seconds($("#part-end").value);
  if (start === null || end === null) {
    throw new Error("Write where the part starts and ends as minutes and seconds (1:05) or as seconds (65).");
  }
  return [{ start, end, include: how === "keep" }];
}

// ---------- what Separate can do now, and why not ----------
export function updateSubmit() {
  const stems = document.querySelectorAll("#stem-choices input:checked").length;
  let why = "";
  if (state.busy) why = "A song is being separated. Wait for it, or cancel it.";
  else if (!state.models) why = "";
  else if (!state.fileId) why = state.upload ? "Wait for the upload to finish." : "First choose a song.";
  else if (mode() === "stems" && ensembleWhy()) why = ensembleWhy();
  else if (mode() === "stems" && !stems) why = "Pick at least one stem.";
  else if (mode() === "prompt" && !$("#prompt").value.trim()) why = "Say which sound you want, e.g. “the singer”.";
  $("#submit").disabled = Boolean(why) || !state.models;
  $("#submit-hint").textContent = why;
}

// Why the ensemble chosen cannot be sent, or "".
function ensembleWhy() {
  const chosen = chosenModel();
  if (!chosen || !$("#ensemble-on").checked || $("#ensemble").hidden) return "";
  if (chosen.members.length < 2) return "Tick a model to combine it with, or untick “Combine with other models”.";
  if (!chosen.stems.length) return "These models share no stem to combine. Untick one of them.";
  return "";
}

// ---------- upload ----------
function upload(file) {
  const drop = $("#drop");
  clearError(drop);
  clearError($("#job-form"));
  if (state.upload) state.upload.abort();
  state.file = file;
  state.fileId = null;
  state.fileName = file.name;
  state.downmix = false;
  state.audio = null;
  chooseTracks(1);
  const bar = $("#upload-progress");
  const text = $("#upload-text");
  const failed = (err) => {
    state.upload = null;
    bar.value = 0;
    bar.hidden = true;
    text.textContent = "";
    $("#drop-title").textContent = DROP_TITLE;
    showError(drop, err);
    updateSubmit();
  };
  // A file over the server's limit is said at once, with the limit, not after it all went up.
  // Such a file is most often a video, whose sound alone (all that is separated) is small.
  const most = state.models?.engine_models[0]?.limits.max_file_size;
  if (most && file.size > most) {
    const video = file.type.startsWith("video/") || /\.(mp4|m4v|mov|mkv|webm|avi)$/i.test(file.name);
    const hint = video ? ". Only a video's sound is separated: save its sound alone (as .m4a, a small part of the size) and upload that" : "";
    failed(new PlainError("FILE_TOO_LARGE", `the most it takes is ${bytes(most)}${hint}`));
    return;
  }
  $("#upload-row").hidden = false;
  bar.hidden = false;
  bar.value = 0;
  text.textContent = `Uploading ${file.name}…`;
  $("#drop-title").textContent = file.name;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("purpose", "audio.separate.input");
  const xhr = new XMLHttpRequest();
  state.upload = xhr;
  updateSubmit();
  xhr.open("POST", at("/v1/files"));
  xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
  xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = ev.loaded / ev.total; };
  xhr.onerror = () => failed(new PlainError("NETWORK"));
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status !== 201 || !body) { failed(fromBody(body, xhr.status)); return; }
    state.upload = null;
    bar.value = 1;
    text.textContent = useUpload(body);
    updateSubmit();
    loadRecent();
  };
  xhr.send(form);
}
// The form separates this upload now (POST /v1/files' or GET /v1/files/{id}'s answer); returns
// the line that says it is ready. Surround sound (a film's 5.1) is folded to stereo, as it says;
// of a video's several audio tracks, the one players play is separated, as it says.
function useUpload(body) {
  state.fileId = body.file_id;
  state.downmix = body.channels > 2;
  state.audio = { start: body.audio_start || 0, tracks: body.audio_tracks || 1 };
  chooseTracks(body.audio_tracks || 1);
  const long = body.duration ? ` · ${length(body.duration)}` : "";
  const folded = state.downmix ? ` · ${body.channels} channels, folded to stereo` : "";
  const tracks = body.audio_tracks > 1 ? ` · ${body.audio_tracks} audio tracks: the default one is separated, or choose one` : "";
  return `Ready: ${body.file_name}${long}${folded}${tracks}`;
}
// Of several audio tracks, the one players play unless another is chosen (input.audio_track).
function chooseTracks(count) {
  const select = $("#track-select");
  select.replaceChildren(new Option("the default one", ""));
  for (let n = 1; n <= count; n++) select.append(new Option(`track ${n}`, String(n)));
  $("#track-field").hidden = count < 2;
}
$("#upload-input").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); });
const drop = $("#drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const file = ev.dataTransfer.files[0];
  if (file) upload(file);
});

// ---------- the same song again, with another model ----------
// A separated (or failed) song goes back in the form by its upload, which the server keeps for
// a while: the musician picks another model or other stems and presses Separate, and nothing is
// sent again. file: the song's File where it was chosen in this tab (the mixer's A/B plays it).
export async function separateAgain(fileId, name, file = null) {
  const drop = $("#drop");
  clearError(drop);
  clearError($("#job-form"));
  if (state.upload) { state.upload.abort(); state.upload = null; }
  let kept = null;
  try {
    kept = await api("GET", `/v1/files/${encodeURIComponent(fileId)}`);
  } catch (e) {
    if (!UPLOAD_GONE.has(e.code)) { showError(drop, e); return; }
  }
  $("#new-job").scrollIntoView({ behavior: glide(), block: "start" });
  if (kept?.status !== "uploaded") { // expired, deleted (with its song, in another tab): gone
    forgetChosenFile();
    showError(drop, `${name} is no longer on the server: its upload expired or was deleted. Choose the file again to separate it.`);
    $("#upload-input").focus({ preventScroll: true });
    return;
  }
  state.file = file || (state.fileId === fileId ? state.file : null);
  state.fileName = kept.file_name;
  $("#upload-input").value = ""; // choosing a file next uploads it, even the same one
  $("#upload-row").hidden = false;
  $("#upload-progress").hidden = true;
  $("#drop-title").textContent = kept.file_name;
  $("#upload-text").textContent = `${useUpload(kept)} · already on the server, not sent again. Pick another model or other stems.`;
  updateSubmit();
  // The focus goes where the next choice is made.
  (mode() === "prompt" ? $("#prompt") : $("#model-select")).focus({ preventScroll: true });
}
// The account's uploads still on the server, newest first, to choose one again; the picker
// shows only where there is one. A failed list leaves it hidden: the file can still be chosen.
export async function loadRecent() {
  const select = $("#recent-uploads");
  let page;
  try {
    page = await api("GET", "/v1/files?status=uploaded&limit=20");
  } catch (e) { console.warn(e.code, e.message); return; }
  const options = page.data.map((f) => {
    const option = new Option(`${f.file_name} · ${day(f.created_at)}`, f.file_id);
    option.dataset.name = f.file_name;
    return option;
  });
  select.replaceChildren(new Option("Choose one…", ""), ...options);
  select.closest("label").hidden = !options.length;
}
$("#recent-uploads").addEventListener("change", async (ev) => {
  const select = ev.target;
  if (!select.value) return;
  await separateAgain(select.value, select.selectedOptions[0].dataset.name);
  select.value = ""; // the form says what was chosen; the picker is ready for another
  loadRecent();
});

// A song's upload the server no longer has, in the API's words: expired, deleted, gone.
export const UPLOAD_GONE = new Set(["NOT_FOUND", "FILE_NOT_FOUND", "FILE_EXPIRED", "GONE"]);

// The song chosen above was deleted: Separate asks for a song again.
export function forgetChosenFile() {
  state.fileId = null;
  state.fileName = null;
  state.file = null;
  state.downmix = false;
  state.audio = null;
  chooseTracks(1);
  $("#upload-input").value = "";
  $("#upload-text").textContent = "";
  $("#upload-row").hidden = true;
  $("#drop-title").textContent = DROP_TITLE;
  updateSubmit();
}

$("#drop-title").textContent = DROP_TITLE;
updateSubmit();
