// sealtrail console: the checks the browser runs itself, with WebCrypto only.
//
// - A record's hash: lowercase hex SHA-256 of the RFC 8785 (JCS) form of the record
//   without its `hash` member (DESIGN.md §2).
// - A checkpoint: a C2SP signed note whose text is a C2SP tlog-checkpoint (origin, tree
//   size, base64 root), signed with Ed25519 by the log key `<name>+<key id>+<base64 key>`.
// - An inclusion proof: RFC 9162 §2.1.3.2, leaf i = the 32 raw bytes of record i+1's hash.
//
// Nothing here trusts the server: each function takes what the server sent and says
// whether it holds.
"use strict";

const SealtrailVerify = (() => {
  const enc = new TextEncoder();

  // RFC 8785: object members sorted by their UTF-16 code units (JavaScript's default
  // sort), strings and numbers as ECMAScript's JSON.stringify writes them.
  function jcs(value) {
    if (value === null || typeof value !== "object") {
      if (typeof value === "number" && !Number.isFinite(value)) {
        throw new Error("JCS has no form for " + value);
      }
      return JSON.stringify(value);
    }
    if (Array.isArray(value)) {
      return "[" + value.map(jcs).join(",") + "]";
    }
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
  }

  function hex(bytes) {
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function fromHex(text) {
    if (!/^[0-9a-f]*$/.test(text) || text.length % 2) throw new Error("not hex: " + text);
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
    return out;
  }

  function fromBase64(text) {
    const raw = atob(text);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  // The hash a record should carry: hex SHA-256 of JCS(record without `hash`).
  async function recordHash(record) {
    const keys = Object.keys(record)
      .filter((k) => k !== "hash")
      .sort();
    const text = "{" + keys.map((k) => JSON.stringify(k) + ":" + jcs(record[k])).join(",") + "}";
    return hex(await sha256(enc.encode(text)));
  }

  const NOTE_SIGNER = 0x01; // C2SP signed-note Ed25519
  const COSIGNER = 0x04; // C2SP tlog-cosignature cosignature/v1

  // `<name>+<key id hex>+<base64(type || 32-byte Ed25519 key)>`; the key id is the first
  // 4 bytes of SHA-256(name || "\n" || type || key) (C2SP signed-note). The type is 0x01
  // for a note signer (the log), 0x04 for a witness's cosignature/v1 key.
  async function parseVerifierKey(vkey, type = NOTE_SIGNER) {
    // the base64 key may hold '+' itself: the name and the id end at the first two
    const text = vkey.trim();
    const first = text.indexOf("+");
    const second = text.indexOf("+", first + 1);
    if (first < 1 || second < 0) throw new Error("a verifier key is NAME+KEYID+KEY");
    const [name, idHex, keyB64] = [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
    const raw = fromBase64(keyB64);
    if (raw.length !== 33 || raw[0] !== type) {
      throw new Error(
        type === NOTE_SIGNER
          ? "not an Ed25519 verifier key (type 0x01)"
          : "not a witness's Ed25519 cosignature/v1 key (type 0x04)",
      );
    }
    const id = (await sha256(concat(enc.encode(name + "\n"), raw))).slice(0, 4);
    if (hex(id) !== idHex) throw new Error("the key id does not match the key");
    const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, [
      "verify",
    ]);
    return { name, id, key };
  }

  // Checks the note's signature by `vkey`; returns the signed text and the signature
  // lines by other keys (witness cosignatures, checked only with their keys).
  async function openNote(note, vkey) {
    const { name, id, key } = await parseVerifierKey(vkey);
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new Error("not a signed note (no blank line before the signatures)");
    const text = note.slice(0, split + 1);
    const others = [];
    let verified = false;
    for (const line of note.slice(split + 2).split("\n")) {
      if (line === "") continue;
      if (!line.startsWith("\u2014 ")) throw new Error("not a signature line: " + line);
      const [sigName, sigB64] = line.slice(2).split(" ");
      const raw = fromBase64(sigB64);
      if (sigName !== name || !equal(raw.slice(0, 4), id)) {
        others.push({ name: sigName, raw });
        continue;
      }
      const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, raw.slice(4), enc.encode(text));
      if (!ok) throw new Error("the signature by " + name + " does not verify");
      verified = true;
    }
    if (!verified) throw new Error("no signature by the log key " + name);
    return { text, others };
  }

  // C2SP tlog-cosignature: the line by witness key `wkey` among `others` (from openNote)
  // is base64(key id || u64 big-endian time || Ed25519 signature) over
  // "cosignature/v1\ntime <time>\n" followed by the checkpoint's note text.
  async function verifyCosignature(text, others, wkey) {
    const { name, id, key } = await parseVerifierKey(wkey, COSIGNER);
    for (const other of others) {
      if (other.name !== name || !equal(other.raw.slice(0, 4), id)) continue;
      if (other.raw.length !== 4 + 8 + 64) throw new Error("the cosignature by " + name + " has the wrong length");
      const time = new DataView(other.raw.buffer, other.raw.byteOffset + 4, 8).getBigUint64(0);
      const message = enc.encode("cosignature/v1\ntime " + time.toString() + "\n" + text);
      const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, other.raw.slice(12), message);
      if (!ok) throw new Error("the cosignature by " + name + " does not verify");
      return { name, time: Number(time) };
    }
    throw new Error("no cosignature by the witness " + name);
  }

  function parseCheckpoint(text) {
    const lines = text.split("\n");
    if (lines.length < 4 || lines[lines.length - 1] !== "") throw new Error("not a checkpoint");
    const size = Number(lines[1]);
    if (!/^[0-9]+$/.test(lines[1]) || !Number.isSafeInteger(size)) throw new Error("bad tree size");
    const root = fromBase64(lines[2]);
    if (root.length !== 32) throw new Error("bad root hash");
    return { origin: lines[0], size, root };
  }

  async function node(left, right) {
    return sha256(concat(Uint8Array.of(1), left, right));
  }

  async function leafHash(leaf) {
    return sha256(concat(Uint8Array.of(0), leaf));
  }

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to (null when the proof cannot
  // fit the index and size).
  async function inclusionRoot(leaf, index, size, path) {
    if (index >= size) return null;
    let fn = index;
    let sn = size - 1;
    let r = await leafHash(leaf);
    for (const p of path) {
      if (sn === 0) return null;
      if (fn % 2 === 1 || fn === sn) {
        r = await node(p, r);
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      } else {
        r = await node(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    return sn === 0 ? r : null;
  }

  // RFC 9162 §2.1.4.2: whether `path` proves that the tree of `second` leaves with root
  // `secondRoot` extends the tree of `first` leaves with root `firstRoot`.
  async function consistent(first, second, path, firstRoot, secondRoot) {
    if (first === second) return path.length === 0 && equal(firstRoot, secondRoot);
    if (first === 0 || first > second || !path.length) return false;
    if ((first & (first - 1)) === 0) path = [firstRoot].concat(path); // the old root is the first node
    let fn = first - 1;
    let sn = second - 1;
    while (fn % 2 === 1) {
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    let fr = path[0];
    let sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) return false;
      if (fn % 2 === 1 || fn === sn) {
        fr = await node(c, fr);
        sr = await node(c, sr);
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      } else {
        sr = await node(sr, c);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot);
  }

  // The Merkle tree hash of `leaves` (RFC 9162 §2.1.1), kept as a frontier so a long
  // range is folded in as it arrives: push each leaf, then `root()`.
  class Frontier {
    constructor() {
      this.stack = []; // [height, hash] of perfect subtrees, largest first
      this.size = 0;
    }
    async push(leaf) {
      let entry = [0, await leafHash(leaf)];
      while (this.stack.length && this.stack[this.stack.length - 1][0] === entry[0]) {
        const [h, left] = this.stack.pop();
        entry = [h + 1, await node(left, entry[1])];
      }
      this.stack.push(entry);
      this.size++;
    }
    async root() {
      if (!this.stack.length) return sha256(new Uint8Array());
      let r = this.stack[this.stack.length - 1][1];
      for (let i = this.stack.length - 2; i >= 0; i--) r = await node(this.stack[i][1], r);
      return r;
    }
  }

  return {
    jcs,
    hex,
    fromHex,
    fromBase64,
    equal,
    recordHash,
    parseVerifierKey,
    openNote,
    verifyCosignature,
    COSIGNER,
    parseCheckpoint,
    inclusionRoot,
    consistent,
    Frontier,
  };
})();
