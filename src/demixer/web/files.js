// Files the page makes itself: a WAV of the mix and a zip of the stems (no library, no server).
"use strict";

// A 16-bit PCM WAV in parts, made a block at a time (the mix): its 44-byte header, for `frames`
// frames of `channels` channels at `rate` Hz, then `wavSamples(data, from, to)` of each block
// (data: one Float32Array per channel; frames [from, to) of it).
export function wavHeader(channels, rate, frames) {
  const out = new DataView(new ArrayBuffer(44));
  writeHeader(out, channels, rate, frames);
  return out.buffer;
}
export function wavSamples(data, from, to) {
  const out = new DataView(new ArrayBuffer((to - from) * data.length * 2));
  writeSamples(out, 0, data, from, to);
  return out.buffer;
}

function writeHeader(out, channels, rate, n) {
  const text = (o, s) => { for (let i = 0; i < s.length; i++) out.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); out.setUint32(4, 36 + n * channels * 2, true); text(8, "WAVE");
  text(12, "fmt "); out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, channels, true);
  out.setUint32(24, rate, true); out.setUint32(28, rate * channels * 2, true);
  out.setUint16(32, channels * 2, true); out.setUint16(34, 16, true);
  text(36, "data"); out.setUint32(40, n * channels * 2, true);
}

// Frames [from, to) of `data` (one array per channel), interleaved, from byte `o` of `out`.
function writeSamples(out, o, data, from, to) {
  for (let i = from; i < to; i++) {
    for (let c = 0; c < data.length; c++) {
      // The inverse of how Chromium reads 16-bit samples (a negative one over 0x8000, a positive
      // one over 0x7fff), rounded: setInt16 truncates, and a sample it was given as 0.99999 of
      // a step came out one step low.
      const v = Math.max(-1, Math.min(1, data[c][i]));
      out.setInt16(o, Math.round(v < 0 ? v * 0x8000 : v * 0x7fff), true);
      o += 2;
    }
  }
}

// Zip, STORE method (audio does not compress): local headers, data, central directory.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[n] = c >>> 0; }
  return t;
})();
// A Blob's CRC-32, read a slice at a time: a stem's whole file is never in the tab at once.
async function crc32(blob) {
  let c = 0xffffffff;
  for (let at = 0; at < blob.size; at += 8 * 1024 * 1024) {
    const bytes = new Uint8Array(await blob.slice(at, at + 8 * 1024 * 1024).arrayBuffer());
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}
// files: [{name, blob}]; the zip is a Blob made of theirs (not a copy of their bytes).
export async function zipStore(files) {
  const enc = new TextEncoder();
  const parts = [], central = [];
  let offset = 0;
  for (const { name, blob } of files) {
    const nameBytes = enc.encode(name), crc = await crc32(blob), size = blob.size;
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true); local.setUint16(4, 20, true); local.setUint16(6, 0x0800, true);
    local.setUint32(14, crc, true); local.setUint32(18, size, true); local.setUint32(22, size, true);
    local.setUint16(26, nameBytes.length, true);
    const dir = new DataView(new ArrayBuffer(46));
    dir.setUint32(0, 0x02014b50, true); dir.setUint16(4, 20, true); dir.setUint16(6, 20, true); dir.setUint16(8, 0x0800, true);
    dir.setUint32(16, crc, true); dir.setUint32(20, size, true); dir.setUint32(24, size, true);
    dir.setUint16(28, nameBytes.length, true); dir.setUint32(42, offset, true);
    parts.push(local, nameBytes, blob);
    central.push(dir, nameBytes);
    offset += 30 + nameBytes.length + size;
  }
  const directory = central.reduce((n, p) => n + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, directory, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

export function save(blob, name) {
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}
