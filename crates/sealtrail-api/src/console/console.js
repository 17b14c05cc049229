// sealtrail console: browse, tail and verify a tenant's log with a read key.
//
// The key lives in this tab's sessionStorage and is sent as a bearer token to this
// origin only. Everything the server sends is shown with textContent (never parsed as
// HTML). The proofs are checked by verify.js, in this page.
"use strict";

(() => {
  const V = SealtrailVerify;
  const $ = (id) => document.getElementById(id);
  const KEY = "sealtrail.key";
  const PINNED = "sealtrail.pinnedKey";
  const THEME = "sealtrail.theme";
  const WITNESSES = "sealtrail.witnessKeys";
  const SEEN = "sealtrail.checkpoints"; // origin -> the largest checkpoint verified here
  const ZERO = "0".repeat(64);

  const state = {
    cursors: [], // cursors of the pages before the current one ("" = the first page)
    cursor: "",
    next: null,
    rows: new Map(), // sequence number -> record shown
    selected: null,
    tail: null, // AbortController of the live tail
    lastSeq: 0,
  };

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function key() {
    return sessionStorage.getItem(KEY);
  }

  async function call(path, { accept = "application/json", signal } = {}) {
    const resp = await fetch(path, {
      headers: { Authorization: "Bearer " + key(), Accept: accept },
      signal,
      cache: "no-store",
    });
    if (!resp.ok) {
      let code = "http_" + resp.status;
      let message = resp.statusText;
      try {
        const body = await resp.json();
        code = body.error.code;
        message = body.error.message;
      } catch (_) {
        /* not the JSON envelope */
      }
      throw new ApiError(resp.status, code, message);
    }
    return resp;
  }

  async function json(path, opts) {
    return (await call(path, opts)).json();
  }

  async function text(path, opts) {
    return (await call(path, Object.assign({ accept: "text/plain" }, opts))).text();
  }

  function explain(err) {
    if (err instanceof ApiError) {
      if (err.status === 401) {
        return "The server did not accept this key (401 " + err.code + "): check that it was copied whole and has not been revoked.";
      }
      if (err.status === 403) {
        return "This key may not do that (403 " + err.code + "): the console needs a key with the read scope (sealtrail keys create --scopes read).";
      }
      if (err.status === 429) {
        return "Too many requests for this key (429): wait a moment and try again.";
      }
      return err.message + " (" + err.status + " " + err.code + ")";
    }
    return String(err && err.message ? err.message : err);
  }

  // ------------------------------------------------------------------ sign in

  async function signIn(candidate) {
    sessionStorage.setItem(KEY, candidate);
    try {
      const logKey = await json("/v1/log/key");
      $("whoami").textContent = logKey.origin;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        // a server without the verifiable log: the key still reads events
        await json("/v1/events?page_size=1");
      } else {
        sessionStorage.removeItem(KEY);
        throw err;
      }
    }
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    showPinned();
    await load("");
  }

  function signOut() {
    stopTail();
    sessionStorage.removeItem(KEY);
    location.reload();
  }

  // ------------------------------------------------------------------ events

  function filters() {
    const form = new FormData($("filters"));
    const params = new URLSearchParams();
    for (const [name, value] of form.entries()) {
      if (value === "") continue;
      if (name === "from" || name === "to") {
        // datetime-local is the browser's local time; the API wants RFC 3339
        params.set(name, new Date(value).toISOString());
      } else {
        params.set(name, value);
      }
    }
    return params;
  }

  function matches(record, params) {
    const at = (name) => params.get(name);
    if ("redacted" in record) {
      // its content is erased: it matches only a view without content filters
      return !["actor_id", "actor_type", "action", "resource_id", "outcome", "from", "to"].some(at);
    }
    if (at("actor_id") && record.actor && record.actor.id !== at("actor_id")) return false;
    if (at("actor_type") && record.actor && record.actor.type !== at("actor_type")) return false;
    if (at("action") && record.action !== at("action")) return false;
    if (at("resource_id") && record.resource && record.resource.id !== at("resource_id")) return false;
    if (at("outcome") && record.outcome !== at("outcome")) return false;
    if (at("from") && record.timestamp < at("from")) return false;
    if (at("to") && record.timestamp > at("to")) return false;
    return true;
  }

  async function load(cursor) {
    $("app-error").textContent = "";
    const params = filters();
    if (cursor) params.set("cursor", cursor);
    try {
      const page = await json("/v1/events?" + params.toString());
      state.cursor = cursor;
      state.next = page.next_cursor || null;
      render(page.events, false);
      const first = page.events.length ? page.events[0].sequence_number : null;
      const last = page.events.length ? page.events[page.events.length - 1].sequence_number : null;
      $("summary").textContent =
        page.total + " matching event" + (page.total === 1 ? "" : "s") +
        (first === null ? "" : " · showing #" + first + "–#" + last);
      $("prev").disabled = state.cursors.length === 0;
      $("next").disabled = !state.next;
    } catch (err) {
      $("app-error").textContent = explain(err);
    }
  }

  function cell(row, value, cls) {
    const td = document.createElement("td");
    td.textContent = value == null ? "" : String(value);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function rowFor(record, live) {
    const tr = document.createElement("tr");
    tr.dataset.seq = record.sequence_number;
    if (live) tr.className = "live";
    const seq = document.createElement("td");
    seq.className = "seq";
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "#" + record.sequence_number;
    open.setAttribute("aria-label", "Open event " + record.sequence_number);
    open.addEventListener("click", () => showDetail(record));
    seq.appendChild(open);
    tr.appendChild(seq);
    if ("redacted" in record) {
      cell(tr, "");
      cell(tr, "redacted by event #" + record.redacted.sequence_number, "muted");
      cell(tr, "");
      cell(tr, "");
      cell(tr, "");
      return tr;
    }
    cell(tr, record.timestamp.replace("T", " ").replace("Z", ""));
    const actor = record.actor || {};
    cell(tr, actor.id + (actor.type ? " (" + actor.type + ")" : ""));
    cell(tr, record.action);
    const res = record.resource || {};
    cell(tr, res.type + ":" + res.id + (res.name ? " " + res.name : ""));
    cell(tr, record.outcome, "outcome-" + record.outcome);
    return tr;
  }

  function render(events, append) {
    const body = document.querySelector("#events tbody");
    if (!append) {
      body.textContent = "";
      state.rows.clear();
    }
    for (const record of events) {
      if (state.rows.has(record.sequence_number)) continue;
      state.rows.set(record.sequence_number, record);
      body.appendChild(rowFor(record, append));
      state.lastSeq = Math.max(state.lastSeq, record.sequence_number);
    }
  }

  // ------------------------------------------------------------------ live tail

  async function startTail() {
    const controller = new AbortController();
    state.tail = controller;
    $("tail").setAttribute("aria-pressed", "true");
    $("tail").textContent = "Live tail: on";
    const params = filters();
    let after = null;
    while (!controller.signal.aborted) {
      try {
        const path = "/v1/events/stream" + (after === null ? "" : "?after=" + after);
        const resp = await call(path, { accept: "text/event-stream", signal: controller.signal });
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let id = null;
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) id = line.slice(3).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            }
            if (!data.length) continue; // a keep-alive comment
            const record = JSON.parse(data.join("\n"));
            if (id !== null) after = id;
            if (matches(record, params)) {
              render([record], true);
              $("summary").textContent = "live: last event #" + record.sequence_number;
            }
          }
        }
      } catch (err) {
        if (controller.signal.aborted) return;
        $("app-error").textContent = "Live tail: " + explain(err) + " Reconnecting…";
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  function stopTail() {
    if (state.tail) state.tail.abort();
    state.tail = null;
    $("tail").setAttribute("aria-pressed", "false");
    $("tail").textContent = "Live tail";
  }

  // ------------------------------------------------------------------ verification

  function stepList(list) {
    list.textContent = "";
    return async (name, check) => {
      const li = document.createElement("li");
      const verdict = document.createElement("span");
      verdict.className = "verdict";
      verdict.textContent = "…";
      const title = document.createElement("span");
      title.className = "name";
      title.textContent = name;
      const detail = document.createElement("span");
      detail.className = "detail";
      li.append(verdict, title, detail);
      list.appendChild(li);
      try {
        const result = await check();
        const warn = result && result.warn;
        li.className = warn ? "warn" : "pass";
        li.dataset.result = warn ? "warn" : "pass";
        verdict.textContent = warn ? "⚠ note" : "✓ pass";
        detail.textContent = (result && (result.detail || result.warn)) || "";
        return result;
      } catch (err) {
        li.className = "fail";
        li.dataset.result = "fail";
        verdict.textContent = "✗ FAIL";
        detail.textContent = explain(err);
        throw new StepFailed(name);
      }
    };
  }

  class StepFailed extends Error {}

  // The log key to check signatures with: the pinned one, or the one served now.
  async function logKey() {
    const served = await json("/v1/log/key");
    const pinned = localStorage.getItem(PINNED);
    if (pinned && pinned !== served.verifier_key) {
      throw new Error("the server now serves " + served.verifier_key + ", not the pinned key " + pinned);
    }
    return {
      origin: served.origin,
      vkey: pinned || served.verifier_key,
      pinned: Boolean(pinned),
    };
  }

  async function signedCheckpoint(step) {
    let key = null;
    await step("Log key", async () => {
      key = await logKey();
      await V.parseVerifierKey(key.vkey);
      return key.pinned
        ? { detail: "the pinned key: " + key.vkey }
        : { warn: "not pinned: the key this server serves (" + key.vkey + ") — pin the key you hold to check it" };
    });
    const witnesses = witnessKeys();
    // with witness keys pinned, a checkpoint they all cosigned (the server waits up to 10 s)
    const note = await text("/v1/checkpoint?fresh=true" + (witnesses.length ? "&witnesses=" + witnesses.length : ""));
    const opened = await step("Checkpoint signature (Ed25519)", async () => {
      const o = await V.openNote(note, key.vkey);
      const names = o.others.map((x) => x.name);
      return {
        detail: "signed by " + key.vkey.split("+")[0] + (names.length ? "; cosignature lines by " + names.join(", ") : ""),
        opened: o,
      };
    });
    if (witnesses.length || opened.opened.others.length) {
      await step("Witness cosignatures (C2SP tlog-cosignature)", async () => {
        if (!witnesses.length) {
          return { warn: "cosigned by " + opened.opened.others.map((x) => x.name).join(", ") + ", not checked: pin the witness keys you trust below" };
        }
        const seen = [];
        for (const wkey of witnesses) {
          const c = await V.verifyCosignature(opened.opened.text, opened.opened.others, wkey);
          seen.push(c.name + " at " + new Date(c.time * 1000).toISOString());
        }
        return { detail: "cosigned by " + seen.join("; ") };
      });
    }
    const checkpoint = V.parseCheckpoint(opened.opened.text);
    await step("Checkpoint origin", async () => {
      if (checkpoint.origin !== key.origin) {
        throw new Error("the checkpoint is for " + checkpoint.origin + ", this key's tenant log is " + key.origin);
      }
      return { detail: checkpoint.origin + ", tree size " + checkpoint.size + ", root " + V.hex(checkpoint.root) };
    });
    await step("Consistent with the checkpoints this browser saw before", async () => {
      const seen = JSON.parse(localStorage.getItem(SEEN) || "{}");
      const before = seen[checkpoint.origin];
      const remember = () => {
        seen[checkpoint.origin] = { size: checkpoint.size, root: V.hex(checkpoint.root) };
        localStorage.setItem(SEEN, JSON.stringify(seen));
      };
      if (!before) {
        remember();
        return { detail: "the first checkpoint of this log seen here (size " + checkpoint.size + "); later ones must extend it" };
      }
      const oldRoot = V.fromHex(before.root);
      if (before.size > checkpoint.size) {
        throw new Error("the log shrank: this browser saw size " + before.size + ", the server now signs " + checkpoint.size);
      }
      if (before.size === checkpoint.size) {
        if (!V.equal(oldRoot, checkpoint.root)) {
          throw new Error("a fork: two signed trees of size " + checkpoint.size + " with different roots (" + before.root + " seen before)");
        }
        return { detail: "the same tree as seen before (size " + checkpoint.size + ")" };
      }
      const proof = await json("/v1/proof/consistency?from=" + before.size + "&to=" + checkpoint.size);
      const ok = await V.consistent(before.size, checkpoint.size, proof.hashes.map(V.fromBase64), oldRoot, checkpoint.root);
      if (!ok) {
        throw new Error("the tree of size " + checkpoint.size + " does not extend the one of size " + before.size + " seen before: the history was rewritten");
      }
      remember();
      return { detail: "extends the tree of size " + before.size + " seen before (" + proof.hashes.length + " hashes)" };
    });
    return checkpoint;
  }

  async function verifyEvent() {
    const record = state.selected;
    if (!record) return;
    const step = stepList($("steps"));
    const server = $("server-verify");
    server.textContent = "…";
    json("/v1/events/" + encodeURIComponent(record.id) + "/verify")
      .then((r) => (server.textContent = JSON.stringify(r, null, 2)))
      .catch((err) => (server.textContent = explain(err)));
    try {
      await step("Record hash (SHA-256 of its JCS form)", async () => {
        if ("redacted" in record) {
          return { warn: "redacted by event #" + record.redacted.sequence_number + ": its content is erased, so the hash it was committed with (" + record.hash + ") cannot be recomputed; the proof below still places that hash in the log" };
        }
        const computed = await V.recordHash(record);
        if (computed !== record.hash) {
          throw new Error("computed " + computed + ", the record says " + record.hash + ": the record was changed after it was committed");
        }
        return { detail: computed };
      });
      const checkpoint = await signedCheckpoint(step);
      await step("Inclusion proof (RFC 9162) to the checkpoint's root", async () => {
        const n = record.sequence_number;
        if (n > checkpoint.size) throw new Error("record #" + n + " is past the checkpoint's tree size " + checkpoint.size);
        const proof = await json("/v1/proof/inclusion?sequence_number=" + n + "&tree_size=" + checkpoint.size);
        if (proof.leaf_index !== n - 1 || proof.tree_size !== checkpoint.size) {
          throw new Error("the proof is for leaf " + proof.leaf_index + " of " + proof.tree_size);
        }
        const root = await V.inclusionRoot(V.fromHex(record.hash), n - 1, checkpoint.size, proof.hashes.map(V.fromBase64));
        if (!root || !V.equal(root, checkpoint.root)) {
          throw new Error("the proof leads to " + (root ? V.hex(root) : "nothing") + ", not the signed root " + V.hex(checkpoint.root));
        }
        return { detail: proof.hashes.length + " hashes lead from leaf " + (n - 1) + " to the signed root" };
      });
    } catch (err) {
      if (!(err instanceof StepFailed)) throw err;
    }
  }

  // Walks the whole log from its first record up to a fresh checkpoint: every hash, every
  // link, no gap; then the Merkle root of all leaves against the signed root.
  async function verifyChain() {
    const section = $("chain");
    section.hidden = false;
    const button = $("verify-chain");
    button.disabled = true;
    const progress = $("chain-progress");
    const status = $("chain-status");
    const step = stepList($("chain-steps"));
    progress.value = 0;
    const server = $("chain-server");
    server.textContent = "…";
    json("/v1/verify")
      .then((r) => (server.textContent = JSON.stringify(r, null, 2)))
      .catch((err) => (server.textContent = explain(err)));
    try {
      const checkpoint = await signedCheckpoint(step);
      const size = checkpoint.size;
      progress.max = Math.max(size, 1);
      const frontier = new V.Frontier();
      let prev = null;
      let first = null;
      let cursor = "";
      let checked = 0;
      let redacted = 0;
      await step("Every record's hash, link and place (#1–#" + size + ")", async () => {
        for (;;) {
          const page = await json("/v1/events?page_size=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
          for (const record of page.events) {
            const n = record.sequence_number;
            if (n > size) break;
            if (first === null) first = n;
            if (prev !== null && n !== prev.sequence_number + 1) {
              throw new Error("record #" + (prev.sequence_number + 1) + " is missing (the next one is #" + n + ")");
            }
            if (n === 1 && record.prev_hash !== ZERO) throw new Error("record #1 does not link to the zero hash");
            if (prev !== null && record.prev_hash !== prev.hash) {
              throw new Error("record #" + n + " links to " + record.prev_hash + ", but #" + prev.sequence_number + "'s hash is " + prev.hash);
            }
            if ("redacted" in record) {
              redacted++;
            } else if ((await V.recordHash(record)) !== record.hash) {
              throw new Error("record #" + n + " (id " + record.id + ") was changed after it was committed: its content does not hash to its hash");
            }
            if (first === 1) await frontier.push(V.fromHex(record.hash));
            prev = record;
            checked++;
          }
          progress.value = checked;
          status.textContent = checked + " of " + size + " records checked";
          if (!page.next_cursor || (prev && prev.sequence_number >= size)) break;
          cursor = page.next_cursor;
        }
        if (size > 0 && (!prev || prev.sequence_number !== size)) {
          throw new Error("the checkpoint has " + size + " records, the log served " + (prev ? prev.sequence_number : 0));
        }
        return { detail: checked + " records" + (redacted ? ", " + redacted + " of them redacted (linked, not recomputed)" : "") };
      });
      await step("Merkle root of the records against the signed root", async () => {
        if (size === 0) return { detail: "an empty log" };
        if (first === 1) {
          const root = await frontier.root();
          if (!V.equal(root, checkpoint.root)) {
            throw new Error("the records' tree has root " + V.hex(root) + ", the checkpoint signs " + V.hex(checkpoint.root));
          }
          return { detail: "the tree of all " + size + " leaves has the signed root" };
        }
        // records before `first` were removed by retention: the last record's inclusion
        // proof ties the walked chain to the signed tree
        const proof = await json("/v1/proof/inclusion?sequence_number=" + size + "&tree_size=" + size);
        const root = await V.inclusionRoot(V.fromHex(prev.hash), size - 1, size, proof.hashes.map(V.fromBase64));
        if (!root || !V.equal(root, checkpoint.root)) throw new Error("the last record is not in the signed tree");
        return { warn: "records before #" + first + " were removed by retention; the last record's inclusion proof ties the rest to the signed root" };
      });
      status.textContent = "The log verifies: " + checked + " records up to the signed checkpoint of size " + size + ".";
    } catch (err) {
      status.textContent = err instanceof StepFailed ? "Verification FAILED at: " + err.message : explain(err);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ detail, export

  function showDetail(record) {
    state.selected = record;
    for (const tr of document.querySelectorAll("#events tr.selected")) tr.classList.remove("selected");
    const tr = document.querySelector('#events tr[data-seq="' + record.sequence_number + '"]');
    if (tr) tr.classList.add("selected");
    $("detail").hidden = false;
    $("detail-title").textContent = "Event #" + record.sequence_number;
    $("record-json").textContent = JSON.stringify(record, null, 2);
    $("steps").textContent = "";
    $("server-verify").textContent = "";
    $("verify-event").focus();
  }

  function download(name, blob) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
  }

  async function matching() {
    const out = [];
    let cursor = "";
    for (;;) {
      const params = filters();
      params.set("page_size", "1000");
      if (cursor) params.set("cursor", cursor);
      const page = await json("/v1/events?" + params.toString());
      out.push(...page.events);
      $("summary").textContent = "exporting: " + out.length + " of " + page.total;
      if (!page.next_cursor) return out;
      cursor = page.next_cursor;
    }
  }

  function csvField(value) {
    const s = value == null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  const CSV_COLUMNS = [
    ["sequence_number", (r) => r.sequence_number],
    ["id", (r) => r.id],
    ["timestamp", (r) => r.timestamp],
    ["created_at", (r) => r.created_at],
    ["actor_id", (r) => r.actor && r.actor.id],
    ["actor_type", (r) => r.actor && r.actor.type],
    ["actor_email", (r) => r.actor && r.actor.email],
    ["action", (r) => r.action],
    ["resource_type", (r) => r.resource && r.resource.type],
    ["resource_id", (r) => r.resource && r.resource.id],
    ["resource_name", (r) => r.resource && r.resource.name],
    ["outcome", (r) => r.outcome],
    ["metadata", (r) => r.metadata],
    ["prev_hash", (r) => r.prev_hash],
    ["hash", (r) => r.hash],
  ];

  async function exportAs(format) {
    $("app-error").textContent = "";
    try {
      const records = await matching();
      if (format === "jsonl") {
        download("events.jsonl", new Blob(records.map((r) => JSON.stringify(r) + "\n"), { type: "application/x-ndjson" }));
      } else {
        const lines = [CSV_COLUMNS.map((c) => c[0]).join(",")];
        for (const r of records) lines.push(CSV_COLUMNS.map((c) => csvField(c[1](r))).join(","));
        download("events.csv", new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
      }
      $("summary").textContent = "exported " + records.length + " events";
    } catch (err) {
      $("app-error").textContent = explain(err);
    }
  }

  async function exportPack() {
    $("app-error").textContent = "";
    try {
      const resp = await call("/v1/export/evidence-pack", { accept: "application/zip" });
      download("evidence-pack.zip", await resp.blob());
    } catch (err) {
      $("app-error").textContent = explain(err);
    }
  }

  // ------------------------------------------------------------------ settings

  function witnessKeys() {
    return (localStorage.getItem(WITNESSES) || "")
      .split("\n")
      .map((k) => k.trim())
      .filter(Boolean);
  }

  function showPinned() {
    const witnesses = witnessKeys();
    $("witness-keys").value = witnesses.join("\n");
    $("witness-status").textContent = witnesses.length
      ? witnesses.length + " witness key" + (witnesses.length === 1 ? "" : "s") + " pinned: each must have cosigned the checkpoint."
      : "No witness keys pinned: cosignatures are listed, not checked.";
    const pinned = localStorage.getItem(PINNED);
    $("pinned").value = pinned || "";
    $("pin-status").textContent = pinned
      ? "Pinned: signatures are checked against this key."
      : "Not pinned: the key the server serves is used.";
  }

  function applyTheme(theme) {
    if (theme) document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("DOMContentLoaded", () => {
    applyTheme(localStorage.getItem(THEME));
    $("theme").addEventListener("click", () => {
      const dark =
        document.documentElement.dataset.theme === "dark" ||
        (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
      const theme = dark ? "light" : "dark";
      localStorage.setItem(THEME, theme);
      applyTheme(theme);
    });
    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      $("signin-error").textContent = "";
      signIn($("apikey").value.trim()).catch((err) => ($("signin-error").textContent = explain(err)));
    });
    $("signout").addEventListener("click", signOut);
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      state.cursors = [];
      load("");
    });
    $("filters").addEventListener("reset", () =>
      setTimeout(() => {
        state.cursors = [];
        load("");
      }),
    );
    $("next").addEventListener("click", () => {
      if (!state.next) return;
      state.cursors.push(state.cursor);
      load(state.next);
    });
    $("prev").addEventListener("click", () => {
      if (!state.cursors.length) return;
      load(state.cursors.pop());
    });
    $("tail").addEventListener("click", () => (state.tail ? stopTail() : startTail()));
    $("verify-chain").addEventListener("click", verifyChain);
    $("verify-event").addEventListener("click", verifyEvent);
    $("close-detail").addEventListener("click", () => {
      $("detail").hidden = true;
      state.selected = null;
    });
    $("export-jsonl").addEventListener("click", () => exportAs("jsonl"));
    $("export-csv").addEventListener("click", () => exportAs("csv"));
    $("export-pack").addEventListener("click", exportPack);
    $("pin-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const value = $("pinned").value.trim();
      try {
        await V.parseVerifierKey(value);
        localStorage.setItem(PINNED, value);
        showPinned();
      } catch (err) {
        $("pin-status").textContent = "Not pinned: " + explain(err);
      }
    });
    $("witness-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const keys = $("witness-keys").value.split("\n").map((k) => k.trim()).filter(Boolean);
      try {
        for (const k of keys) await V.parseVerifierKey(k, V.COSIGNER);
        localStorage.setItem(WITNESSES, keys.join("\n"));
        showPinned();
      } catch (err) {
        $("witness-status").textContent = "Not saved: " + explain(err);
      }
    });
    $("unpin").addEventListener("click", () => {
      localStorage.removeItem(PINNED);
      showPinned();
    });
    if (key()) {
      signIn(key()).catch((err) => {
        $("signin-error").textContent = explain(err);
      });
    } else {
      $("apikey").focus();
    }
  });
})();
