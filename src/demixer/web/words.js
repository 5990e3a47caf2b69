// What the page says: plain words for states, stages and errors; times; stem colours.
"use strict";

export const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

const STAGES = {
  loading_model: "Loading the model",
  decoding: "Reading the audio",
  separating: "Separating",
  encoding: "Writing the stems",
  storing: "Saving the stems",
};

// A request's state as a person says it.
export function stateWords(s) {
  if (s.status === "IN_QUEUE") return "Waiting to start";
  if (s.status === "IN_PROGRESS") {
    if (s.cancel_requested) return "Stopping";
    return STAGES[s.stage] || "Starting";
  }
  return { COMPLETED: "Ready", FAILED: "Failed", CANCELLED: "Cancelled" }[s.status] || "Working";
}

const ERRORS = {
  INVALID_AUDIO: "This file can't be read as audio. Try an MP3, WAV, FLAC or M4A file, or a video.",
  FILE_NOT_FOUND: "The file is gone. Upload it again.",
  UNSUPPORTED_MEDIA_TYPE: "That kind of file can't be separated. Try an audio or video file.",
  CONTENT_TYPE_MISMATCH: "That kind of file can't be separated. Try an audio or video file.",
  FILE_TOO_LARGE: "This file is bigger than this server takes.",
  DURATION_LIMIT: "This song is longer than this server separates.",
  FILE_EXPIRED: "The upload has expired. Upload the file again.",
  RESULT_EXPIRED: "These stems have been deleted after a while. Separate the song again.",
  NO_STEMS_REQUESTED: "Pick at least one stem.",
  UNKNOWN_STEM: "That stem isn't one this model makes.",
  UNSUPPORTED_PROMPT: "That can't be separated as described.",
  MODEL_UNAVAILABLE: "This model isn't installed on the server yet.",
  CHUNK_TOO_LARGE: "This model needs more memory than the server has. Try another model.",
  INVALID_MODEL_CONFIG: "This model's settings on the server can't be used. Try another model.",
  CHECKPOINT_MISMATCH: "This model's weights on the server don't fit its settings. Try another model.",
  UNKNOWN_MODEL: "This model doesn't exist on the server.",
  TOO_MANY_CONCURRENT_JOBS: "You have as many songs separating as you may. Wait for one to finish.",
  RATE_LIMITED: "Too many requests at once. Wait a moment and try again.",
  QUOTA_EXCEEDED: "This song doesn't fit in the audio minutes this account has left this month.",
  STORAGE_QUOTA_EXCEEDED: "This account's uploads and separated stems fill the space it may use. Delete results or files it no longer needs, or wait for them to expire, then try again.",
  UNAUTHENTICATED: "This key isn't valid (or was revoked).",
  PERMISSION_DENIED: "This key may not do that.",
  MODEL_FAILED: "Something went wrong while separating. Try again.",
  WORKER_LOST: "The computer separating this song stopped. Try again.",
  JOB_TIMEOUT: "This song took too long to separate.",
  STORAGE_UNAVAILABLE: "The server can't store files right now. Try again in a minute.",
  DATABASE_UNAVAILABLE: "The server is busy restarting. Try again in a minute.",
  DATABASE_READ_ONLY: "The server can't save anything right now. Try again later.",
  SERVICE_UNAVAILABLE: "The server is busy. Try again in a minute.",
  NETWORK: "Can't reach the server. Check the connection and try again.",
  SPAN: "That part of the song can't be used.", // any refusal of input.spans, the server's words after
};

// An error for a person: what happened, in words; the code stays for whoever reads the source.
// detail: the server's own words, added where they tell the person what to do instead.
export class PlainError extends Error {
  constructor(code, detail) {
    const plain = ERRORS[code] || `Something went wrong. Try again. (${code})`;
    super(detail ? `${plain} ${detail.charAt(0).toUpperCase()}${detail.slice(1)}.` : plain);
    this.code = code;
  }
}

// What a status without the API's JSON means (a reverse proxy's own page in front of the
// server: nginx refuses a body over 1 MB with 413, a stopped server answers 502).
const BY_STATUS = {
  401: "UNAUTHENTICATED", 413: "FILE_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "RATE_LIMITED",
  502: "SERVICE_UNAVAILABLE", 503: "SERVICE_UNAVAILABLE", 504: "SERVICE_UNAVAILABLE",
};

export function fromBody(body, status) {
  const code = body?.error?.code || BY_STATUS[status] || (status ? `HTTP_${status}` : "NETWORK");
  // A part of the song the server refused (an end before its start, a start after the song's
  // end): its own words say which and why, without the field's path and pydantic's lead-in
  // ("input.spans.0: Value error, "). The error keeps the server's code and the field.
  const param = body?.error?.param || "";
  if (param.startsWith("input.spans")) {
    const why = String(body.error.message || "").replace(/^input\.spans[.\w]*: (Value error, )?/, "");
    return Object.assign(new PlainError("SPAN", why), { code, param });
  }
  let detail;  // what can be separated here, or the minutes left and when they reset
  if (["UNSUPPORTED_PROMPT", "UNKNOWN_STEM", "QUOTA_EXCEEDED"].includes(code)) {
    detail = body.error.message;
  }
  // The field refused (input.model: a model or an ensemble), for the page to say it beside it.
  return Object.assign(new PlainError(code, detail), param ? { param } : {});
}

// A model as a person reads it: its id, or an ensemble's (a+b, max:a+b, a@2+b) as "ensemble
// of a + b (Max Spec)", in the words UVR gives its ensemble algorithms.
const ENSEMBLE_MODES = {
  avg: "Average", max: "Max Spec", min: "Min Spec", median_wave: "Median",
  max_wave: "Max Wave", min_wave: "Min Wave", median_fft: "Median Spec",
};
export function modelWords(id) {
  if (!/[+:]/.test(id || "")) return id || "";
  const [mode, members] = id.includes(":") ? [id.slice(0, id.indexOf(":")), id.slice(id.indexOf(":") + 1)] : ["avg", id];
  const each = members.split("+").map((m) => m.replace(/@([\d.]+)$/, " ×$1"));
  return `ensemble of ${each.join(" + ")} (${ENSEMBLE_MODES[mode] || mode})`;
}

// A time as a clock; with tenths when asked (a 0.5 s sample's playhead is not "0:00 / 0:00").
export function clock(t, tenths = false) {
  if (!Number.isFinite(t) || t < 0) t = 0;
  const s = Math.floor(t);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
  const whole = h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
  // The small nudge keeps 0.3 (2.9999... tenths in binary) from reading 0:00.2.
  return tenths ? `${whole}.${Math.floor(t * 10 + 1e-6) % 10}` : whole;
}

// Seconds from what a person types for a time in a song: "1:05", "65", "1:05.5", "1:02:03";
// null for anything else (a minus, a letter, "1:75").
export function seconds(text) {
  const parts = text.trim().split(":");
  if (parts.length > 3 || !parts.every((p, i) => /^\d+(\.\d+)?$/.test(p) && (i === parts.length - 1 || !p.includes(".")))) return null;
  const numbers = parts.map(Number);
  if (numbers.slice(1).some((n) => n >= 60)) return null;
  return numbers.reduce((total, n) => total * 60 + n, 0);
}

// A song's length: a clock from one second on, tenths below it (a 0.2 s clip is not "0:00").
export function length(t) {
  return t > 0 && t < 1 ? `${t.toFixed(1)} s` : clock(t);
}

// A size in binary units, as the limits are set (the default, 2 ** 30 bytes, reads "1 GB").
export function bytes(n) {
  const [unit, size] = n >= 2 ** 30 ? ["GB", n / 2 ** 30] : n >= 2 ** 20 ? ["MB", n / 2 ** 20] : ["KB", n / 2 ** 10];
  return `${Number(size.toFixed(size < 10 ? 1 : 0))} ${unit}`;
}

export function timeLeft(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 10) return "a few seconds left";
  if (seconds < 90) return `about ${Math.round(seconds / 5) * 5} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}

export function day(iso) {
  const d = new Date(iso);
  const today = new Date();
  const same = d.toDateString() === today.toDateString();
  return same ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" });
}

const COLOURS = {
  vocals: "#ff5c8a", target: "#ff5c8a", drums: "#ffb020", bass: "#9d7bff",
  other: "#2ec4b6", accompaniment: "#4cc9f0", instrumental: "#4cc9f0", residual: "#8a94a6",
  guitar: "#ff8c42", piano: "#7bd88f",
  lead_vocals: "#ff5c8a", backing_vocals: "#ff9ebb",
  // The drum-kit recipe's eight and the male-female recipe's voices: apart within one mix.
  kick: "#ff7b54", snare: "#ffd166", toms: "#7bd88f", hi_hat: "#4cc9f0", ride: "#9d7bff",
  crash: "#ff9ebb", drums_other: "#ffb020", no_drums: "#8a94a6",
  male_vocals: "#5fa8ff", female_vocals: "#ff7eb6", other_vocals: "#c77dff",
  // Clean-up models' kept and removed sounds (de-reverb, de-echo, denoise, crowd and breath
  // removal).
  dry: "#7bd88f", no_dry: "#8a94a6", noreverb: "#7bd88f", reverb: "#8a94a6",
  noecho: "#7bd88f", echo: "#8a94a6", noise: "#8a94a6", nocrowd: "#7bd88f", crowd: "#8a94a6",
  noguitar: "#2ec4b6", nobreath: "#7bd88f", breath: "#8a94a6", no_backing_vocals: "#ff5c8a",
  // A film's three (Bandit v2; its own names too): the voice as the vocals, the music as the
  // instrumental.
  dialogue: "#ff5c8a", speech: "#ff5c8a", music: "#4cc9f0", effects: "#ffb020", sfx: "#ffb020",
};
const SPARE = ["#f72585", "#b5e48c", "#ffd166", "#06d6a0", "#118ab2"];
export function colour(stem, i = 0) { return COLOURS[stem] || SPARE[i % SPARE.length]; }

// A stem's name as a musician says it: "lead vocals", not "lead_vocals"; a clean-up model's kept
// sound says what it is without ("noreverb" is the song without its reverb). Files keep the
// API's names.
const STEM_WORDS = {
  residual: "everything else", hi_hat: "hi-hat", hh: "hi-hat", drums_other: "rest of the drums",
  no_drums: "everything but the drums", noreverb: "without reverb", noecho: "without echo",
  nocrowd: "without the crowd", noguitar: "without the guitar", no_dry: "reverb and echo", vocals_reverb: "the vocals' reverb",
  breath: "breaths", nobreath: "without breaths", no_backing_vocals: "everything but the backing vocals",
  speech: "dialogue", sfx: "sound effects", effects: "sound effects",
};
export function stemWords(stem) { return STEM_WORDS[stem] || String(stem).replace(/_/g, " "); }

// A song's name from a file name: what downloads are named after.
export function songName(fileName) {
  const base = String(fileName || "song").replace(/\.[^./]+$/, "");
  // At most 100 characters, not UTF-16 units: a cut through an emoji's pair ended the
  // download's name in "\ufffd" (🎸🎸\ufffd_stems.zip).
  return Array.from(base.replace(/[\\/:*?"<>|\u0000-\u001f]+/g, "_")).slice(0, 100).join("") || "song";
}
