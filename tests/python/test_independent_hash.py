"""Independent verification of sealtrail's records over plain REST.

Every record of a tenant is fetched with `requests` and its `hash` recomputed with
the `rfc8785` package and hashlib (never the server's code): hash = lowercase hex
SHA-256 of the JCS form of the record without `hash`. prev_hash links, gapless
sequence numbers and timestamp normalization are checked too.

Request bodies are written as raw JSON text so that the exact bytes (escapes,
number spellings, offsets) reach the server unchanged.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from e2e_util import (
    HEX64_RE,
    HTTP_TIMEOUT,
    TS_RE,
    UUID7_RE,
    ZERO_HASH,
    auth,
    check_chain,
    check_error,
    check_record_shape,
    jcs_hash,
    hard_close,
    list_all,
    jloads,
    merkle_root_hex,
    rjson,
    sse_records,
    wait_receipt,
)

# --------------------------------------------------------------------------- the varied set

E_UNICODE = r"""{
  "id": "uni-1",
  "timestamp": "2024-03-01T12:34:56.789+02:00",
  "actor": {"id": "ユーザー-1", "type": "human", "email": "zoë@example.com"},
  "action": "document.delete",
  "resource": {"id": "doc-😀", "type": "document", "name": "Résumé 𝄞 (non-BMP)"},
  "outcome": "success",
  "metadata": {
    "emoji": "😀🎉👩‍👩‍👧",
    "nonbmp_escaped": "\ud83d\ude00 \uD834\uDD1E",
    "cjk": "漢字かな",
    "combining": "e\u0301",
    "rtl": "שלום",
    "bmp_escaped": "\u00e9\u4e2d\uffff"
  }
}"""

E_ESCAPES = r"""{
  "id": "esc-1",
  "timestamp": "2024-12-31T22:00:00-05:30",
  "actor": {"id": "user \"quoted\" \\ back", "type": "agent"},
  "action": "config.update",
  "resource": {"id": "a/b\\c", "type": "path", "name": "name with \"quotes\" and \\ backslash"},
  "outcome": "failure",
  "metadata": {
    "quote": "\"",
    "backslash": "\\",
    "slash": "\/",
    "controls": "\u0000\u0001\b\f\n\r\t\u001f",
    "del": "\u007f",
    "separators": "\u2028\u2029",
    "html": "<script>&'</script>",
    "raw_utf8_ls": "a@LS@b@PS@c"
  }
}""".replace("@LS@", "\u2028").replace("@PS@", "\u2029")

E_NESTED = r"""{
  "id": "nest-1",
  "actor": {"id": "cron", "type": "system"},
  "action": "job.run",
  "resource": {"id": "job-7", "type": "job"},
  "outcome": "success",
  "metadata": {
    "a": {"b": {"c": [1, [2, [3, {"d": null}]], {}], "z": true}},
    "empty_obj": {},
    "empty_arr": [],
    "bools": [true, false, null],
    "": "empty key",
    "empty": "",
    "order": {"b": 1, "a": 2, "aa": 3, "A": 4, "_": 5, "10": 6, "9": 7, "B": 8},
    "utf16_order": {"\ue000": 1, "😀": 2, "é": 3, "z": 4, "\u00ff": 5, "\u0100": 6},
    "long": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
  }
}"""

E_NUMBERS = r"""{
  "id": "num-1",
  "timestamp": "2024-06-15T08:00:00Z",
  "actor": {"id": "calc", "type": "agent"},
  "action": "metric.record",
  "resource": {"id": "m-1", "type": "metric"},
  "outcome": "success",
  "metadata": {
    "f_small": 1.5e-7,
    "f_one": 1.0,
    "f_hundred": 100.0,
    "neg_zero": -0.0,
    "neg_zero_int": -0,
    "f_tenth": 0.1,
    "f_mixed": 123456789.123,
    "f_min": 5e-324,
    "f_exp_upper": 2.5E+3,
    "f_1e_minus6": 1E-6,
    "f_1e_minus7": 1e-7,
    "f_123e_minus2": 123e-2,
    "f_neg": -3.25,
    "f_third": 0.3333333333333333,
    "i_max": 9007199254740991,
    "i_min": -9007199254740991,
    "i_zero": 0,
    "arr": [1, 1.0, -1, 1e2, 0.5]
  }
}"""

E_OPTIONAL_ABSENT = r"""{
  "id": "opt-1",
  "actor": {"id": "anon"},
  "action": "page.view",
  "resource": {"id": "p-1", "type": "page"},
  "outcome": "failure"
}"""

E_MS_Z = r"""{
  "id": "ms-1",
  "timestamp": "2023-11-07T05:31:56.5Z",
  "actor": {"id": "u-ms", "type": "human", "email": "ms@example.com"},
  "action": "session.start",
  "resource": {"id": "s-1", "type": "session"},
  "outcome": "error",
  "metadata": {"empty_string": "", "space": " "}
}"""

E_PLUS14 = r"""{
  "id": "tz-14",
  "timestamp": "2024-01-01T05:00:00+14:00",
  "actor": {"id": "kiribati", "type": "human"},
  "action": "clock.check",
  "resource": {"id": "c-1", "type": "clock"},
  "outcome": "success",
  "metadata": {"note": "date line"}
}"""

E_MICROS = r"""{
  "id": "us-1",
  "timestamp": "2020-02-29T23:59:59.123456+00:00",
  "actor": {"id": "leap", "type": "system"},
  "action": "leap.day",
  "resource": {"id": "d-1", "type": "day"},
  "outcome": "success",
  "metadata": {}
}"""

E_NANOS = r"""{
  "id": "ns-1",
  "timestamp": "2021-07-04T12:00:00.123456789-07:00",
  "actor": {"id": "nano", "type": "agent"},
  "action": "clock.nanos",
  "resource": {"id": "n-1", "type": "clock"},
  "outcome": "success",
  "metadata": {"note": "sub-microsecond digits are truncated"}
}"""

E_NO_ID = r"""{
  "timestamp": "2020-02-29T23:59:59.999+01:00",
  "actor": {"id": "gen", "type": "agent"},
  "action": "id.generate",
  "resource": {"id": "g-1", "type": "gen", "name": "server id"},
  "outcome": "success",
  "metadata": {"k": [{"x": 1}, {"y": [2]}]}
}"""

EXPECTED_TS = {
    "uni-1": "2024-03-01T10:34:56.789000Z",
    "esc-1": "2025-01-01T03:30:00.000000Z",
    "num-1": "2024-06-15T08:00:00.000000Z",
    "ms-1": "2023-11-07T05:31:56.500000Z",
    "tz-14": "2023-12-31T15:00:00.000000Z",
    "us-1": "2020-02-29T23:59:59.123456Z",
    "ns-1": "2021-07-04T19:00:00.123456Z",
    None: "2020-02-29T22:59:59.999000Z",  # E_NO_ID
}


def _parse_ts(s: str) -> datetime:
    assert TS_RE.match(s), s
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _post(base_url, key, path, text, *, headers=None, params=None):
    h = {**auth(key), "Content-Type": "application/json", **(headers or {})}
    return requests.post(
        f"{base_url}{path}", data=text.encode("utf-8"), headers=h, params=params, timeout=HTTP_TIMEOUT
    )


def _content(parsed: dict) -> dict:
    """The client-controlled members as the record must carry them."""
    return {
        "actor": parsed["actor"],
        "action": parsed["action"],
        "resource": parsed["resource"],
        "outcome": parsed["outcome"],
        "metadata": parsed.get("metadata", {}),
    }


def _ingest_varied(base_url: str, key: str) -> tuple[list[str | None], dict[str, dict], list[str]]:
    """Ingest the set through every ingest path, in a fixed order.

    Returns (ids in order, records returned by sync calls keyed by id, problems)."""
    problems: list[str] = []
    order: list[str | None] = []
    sync_records: dict[str, dict] = {}

    def note(what, r, want):
        if r.status_code != want:
            problems.append(f"{what}: expected {want}, got {r.status_code}: {r.text[:300]}")
            return False
        return True

    # A: single, sync by header
    r = _post(base_url, key, "/v1/events", E_UNICODE, headers={"X-Fact0-Sync": "true"})
    if note("POST /v1/events (X-Fact0-Sync) unicode", r, 201):
        sync_records["uni-1"] = rjson(r)
    order.append("uni-1")

    # B: single, sync by query
    r = _post(base_url, key, "/v1/events", E_ESCAPES, params={"sync": "true"})
    if note("POST /v1/events?sync=true escapes", r, 201):
        sync_records["esc-1"] = rjson(r)
    order.append("esc-1")

    # C: single, async + receipt
    r = _post(base_url, key, "/v1/events", E_NESTED)
    if note("POST /v1/events (async) nested", r, 202):
        rc = rjson(r)
        if rc.get("status") not in ("queued", "committed") or rc.get("ids") != ["nest-1"] or rc.get("accepted") != 1:
            problems.append(f"async single receipt: {rc}")
        if isinstance(rc.get("receipt_id"), str):
            done = wait_receipt(base_url, key, rc["receipt_id"])
            if done["status"] != "committed":
                problems.append(f"async single receipt not committed: {done}")
        else:
            problems.append(f"async single: no receipt_id: {rc}")
    order.append("nest-1")

    # D: batch, sync
    batch = "{\"events\": [" + ",".join([E_NUMBERS, E_OPTIONAL_ABSENT, E_MS_Z]) + "]}"
    r = _post(base_url, key, "/v1/events/batch", batch, headers={"X-Fact0-Sync": "true"})
    if note("POST /v1/events/batch (sync)", r, 200):
        res = rjson(r)
        if res.get("accepted") != 3 or res.get("rejected") != 0 or res.get("ids") != ["num-1", "opt-1", "ms-1"]:
            problems.append(f"sync batch result: {json.dumps(res)[:1500]}")
        for rec in res.get("events") or []:
            sync_records[rec["id"]] = rec
        if len(res.get("events") or []) != 3:
            problems.append(f"sync batch result lacks its 3 committed records: {json.dumps(res)[:800]}")
    order += ["num-1", "opt-1", "ms-1"]

    # E: batch, async
    batch = "{\"events\": [" + ",".join([E_PLUS14, E_MICROS, E_NANOS, E_NO_ID]) + "]}"
    r = _post(base_url, key, "/v1/events/batch", batch)
    gen_id = None
    if note("POST /v1/events/batch (async)", r, 202):
        rc = rjson(r)
        ids = rc.get("ids") or []
        if rc.get("accepted") != 4 or len(ids) != 4 or ids[:3] != ["tz-14", "us-1", "ns-1"]:
            problems.append(f"async batch receipt: {rc}")
        elif not UUID7_RE.match(ids[3]):
            problems.append(f"server-generated id is not a UUIDv7: {ids[3]!r}")
        else:
            gen_id = ids[3]
        if isinstance(rc.get("receipt_id"), str):
            done = wait_receipt(base_url, key, rc["receipt_id"])
            if done["status"] != "committed":
                problems.append(f"async batch receipt not committed: {done}")
    order += ["tz-14", "us-1", "ns-1", gen_id]
    return order, sync_records, problems


def test_independent_hash_chain(base_url, tenant):
    t_start = datetime.now(timezone.utc)
    order, sync_records, problems = _ingest_varied(base_url, tenant.key)
    t_end = datetime.now(timezone.utc)
    assert not problems, "ingest deviations:\n" + "\n".join(problems)

    body = list_all(base_url, tenant.key)
    records = body["events"]
    n = len(order)
    assert body["total"] == n, f"total {body['total']} != {n}"
    assert [r["id"] for r in records] == order, "records not in ingest order"

    # the independent check: JCS + SHA-256, prev_hash links, gapless 1..n
    check_chain(records, tenant.name)

    inputs = {
        "uni-1": E_UNICODE, "esc-1": E_ESCAPES, "nest-1": E_NESTED, "num-1": E_NUMBERS,
        "opt-1": E_OPTIONAL_ABSENT, "ms-1": E_MS_Z, "tz-14": E_PLUS14, "us-1": E_MICROS, "ns-1": E_NANOS,
        order[-1]: E_NO_ID,
    }
    for rec in records:
        eid = rec["id"]
        parsed = jloads(inputs[eid])
        got = {k: rec[k] for k in ("actor", "action", "resource", "outcome", "metadata")}
        assert got == _content(parsed), f"{eid}: stored content differs from input\n got {got}\nwant {_content(parsed)}"
        # timestamps: offset converted to UTC, exactly 6 fractional digits, Z
        want_ts = EXPECTED_TS[None] if eid == order[-1] else EXPECTED_TS.get(eid)
        created = _parse_ts(rec["created_at"])
        assert t_start - timedelta(seconds=5) <= created <= t_end + timedelta(seconds=5), (
            f"{eid}: created_at {rec['created_at']} outside [{t_start}, {t_end}]"
        )
        if want_ts is not None:
            assert rec["timestamp"] == want_ts, f"{eid}: timestamp {rec['timestamp']!r} != {want_ts!r}"
        else:  # no client timestamp: acceptance time
            ts = _parse_ts(rec["timestamp"])
            assert t_start - timedelta(seconds=5) <= ts <= t_end + timedelta(seconds=5), (
                f"{eid}: server timestamp {rec['timestamp']} outside [{t_start}, {t_end}]"
            )
        # the records returned by the sync calls are the committed records
        if eid in sync_records:
            assert sync_records[eid] == rec, f"{eid}: sync response differs from stored record"

    by_id = {r["id"]: r for r in records}
    # optional members: absent stays absent (not null); present stays present
    assert by_id["opt-1"]["actor"] == {"id": "anon"}
    assert by_id["opt-1"]["resource"] == {"id": "p-1", "type": "page"}
    assert by_id["opt-1"]["metadata"] == {}
    assert by_id["ms-1"]["metadata"] == {"empty_string": "", "space": " "}
    # exact numbers survive the round trip
    md = by_id["num-1"]["metadata"]
    assert md["i_max"] == 9007199254740991 and isinstance(md["i_max"], int)
    assert md["i_min"] == -9007199254740991 and isinstance(md["i_min"], int)
    assert md["f_small"] == 1.5e-7 and md["f_min"] == 5e-324 and md["f_1e_minus7"] == 1e-7
    # non-BMP text survives
    assert by_id["uni-1"]["metadata"]["nonbmp_escaped"] == "\U0001F600 \U0001D11E"
    assert by_id["uni-1"]["resource"]["name"] == "Résumé 𝄞 (non-BMP)"
    assert by_id["esc-1"]["metadata"]["controls"] == "\x00\x01\b\f\n\r\t\x1f"

    # GET /v1/events/{id} and /verify agree with the independent hash
    for rec in records:
        r = requests.get(f"{base_url}/v1/events/{rec['id']}", headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, f"GET /v1/events/{rec['id']} -> {r.status_code}: {r.text[:300]}"
        assert rjson(r) == rec, f"{rec['id']}: single GET differs from list"
        r = requests.get(f"{base_url}/v1/events/{rec['id']}/verify", headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        v = rjson(r)
        assert v["valid"] is True and v["event_id"] == rec["id"], v
        assert v["stored_hash"] == v["computed_hash"] == jcs_hash(rec), (v, jcs_hash(rec))

    # cursor paging returns the same chain
    cursor_records: list[dict] = []
    params: dict = {"page_size": 4}
    for _ in range(20):
        r = requests.get(f"{base_url}/v1/events", params=params, headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        page = rjson(r)
        cursor_records += page["events"]
        nxt = page.get("next_cursor")
        if not nxt:
            break
        params = {"page_size": 4, "cursor": nxt}
    assert [r["sequence_number"] for r in cursor_records] == list(range(1, n + 1)), "cursor paging"
    assert cursor_records == records

    # the server's own chain walk agrees
    r = requests.get(f"{base_url}/v1/verify", headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    v = rjson(r)
    assert v["valid"] is True, v
    assert v["tenant_id"] == tenant.name, v
    assert v["events_checked"] == n, v
    assert isinstance(v.get("root_hash"), str) and HEX64_RE.match(v["root_hash"]), v
    hashes = [rec["hash"] for rec in records]
    assert v["root_hash"] in (hashes[-1], merkle_root_hex(hashes)), (
        f"root_hash {v['root_hash']} is neither the head hash {hashes[-1]} "
        f"nor the RFC 6962 root {merkle_root_hex(hashes)}"
    )


# --------------------------------------------------------------------------- big floats

E_BIG_FLOATS = r"""{
  "id": "bigf-1",
  "actor": {"id": "calc", "type": "agent"},
  "action": "metric.record",
  "resource": {"id": "m-2", "type": "metric"},
  "outcome": "success",
  "metadata": {"f_1e21": 1e21, "f_1e20": 1e20, "f_max": 1.7976931348623157e308, "f_neg": -1.5e300, "f_small": 1.5e-7}
}"""


def test_large_float_literals_accepted_and_hashed(base_url, tenant):
    """1e21 etc. are floats written in exponent notation: exactly representable
    doubles, legal I-JSON; JCS spells them 1e+21 / 100000000000000000000."""
    r = _post(base_url, tenant.key, "/v1/events", E_BIG_FLOATS, headers={"X-Fact0-Sync": "true"})
    assert r.status_code == 201, f"float literals rejected: {r.status_code} {r.text[:300]}"
    rec = rjson(r)
    md = rec["metadata"]
    assert md == {"f_1e21": 1e21, "f_1e20": 1e20, "f_max": 1.7976931348623157e308, "f_neg": -1.5e300,
                  "f_small": 1.5e-7}, md
    body = list_all(base_url, tenant.key)
    assert body["events"] == [rec]
    check_chain(body["events"], tenant.name)


# --------------------------------------------------------------------------- non-I-JSON input


BASE_OK = (
    '"actor": {"id": "a", "type": "human"}, "action": "x.y", '
    '"resource": {"id": "r", "type": "t"}, "outcome": "success"'
)
BAD_BODIES = {
    "int beyond 2^53-1": '{' + BASE_OK + ', "metadata": {"n": 9007199254740992}}',
    "negative int beyond": '{' + BASE_OK + ', "metadata": {"n": -9007199254740992}}',
    "huge integer literal": '{' + BASE_OK + ', "metadata": {"n": 1000000000000000000000}}',
    "duplicate metadata key": '{' + BASE_OK + ', "metadata": {"k": 1, "k": 2}}',
    "duplicate top-level key": '{' + BASE_OK + ', "outcome": "failure"}',
    "lone high surrogate": '{' + BASE_OK + ', "metadata": {"s": "\\ud800"}}',
    "lone low surrogate": '{' + BASE_OK + ', "metadata": {"s": "x\\udc00y"}}',
}


def test_non_ijson_rejected(base_url, tenant):
    key = tenant.key
    failures = []
    for name, text in BAD_BODIES.items():
        r = _post(base_url, key, "/v1/events", text, headers={"X-Fact0-Sync": "true"})
        try:
            check_error(r, 400)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    # invalid UTF-8 bytes
    raw = ('{' + BASE_OK + ', "metadata": {"s": "').encode() + b"\xff\xfe" + b'"}}'
    r = requests.post(
        f"{base_url}/v1/events?sync=true",
        data=raw,
        headers={**auth(key), "Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT,
    )
    try:
        check_error(r, 400)
    except AssertionError as exc:
        failures.append(f"invalid UTF-8: {exc}")
    assert not failures, "non-I-JSON input not rejected with 400:\n" + "\n".join(failures)

    # nothing partial was written; a good event still gets sequence 1
    assert list_all(base_url, key)["total"] == 0
    r = _post(base_url, key, "/v1/events", '{' + BASE_OK + '}', headers={"X-Fact0-Sync": "true"})
    assert r.status_code == 201, r.text
    rec = rjson(r)
    assert rec["sequence_number"] == 1 and rec["prev_hash"] == ZERO_HASH
    assert jcs_hash(rec) == rec["hash"]


# --------------------------------------------------------------------------- idempotency


def test_idempotent_ingest_same_hash(base_url, tenant):
    key = tenant.key
    sync = {"X-Fact0-Sync": "true"}
    e1 = '{"id": "idem-1", ' + BASE_OK + ', "metadata": {"v": 1}}'
    e1_reordered = (
        '{ "metadata" : {"v" : 1}, "outcome": "success", "resource": {"type": "t", "id": "r"},'
        ' "action": "x.y", "actor": {"type": "human", "id": "a"}, "id": "idem-1" }'
    )
    e2 = '{"id": "idem-2", "timestamp": "2024-02-03T04:05:06.7+03:00", ' + BASE_OK + "}"

    r = _post(base_url, key, "/v1/events", e1, headers=sync)
    assert r.status_code == 201, r.text
    first = rjson(r)
    r = _post(base_url, key, "/v1/events", e2, headers=sync)
    assert r.status_code == 201, r.text
    second = rjson(r)
    assert second["timestamp"] == "2024-02-03T01:05:06.700000Z"

    time.sleep(0.01)
    for name, text, orig in [("e1 again", e1, first), ("e1 reordered", e1_reordered, first), ("e2 again", e2, second)]:
        r = _post(base_url, key, "/v1/events", text, headers=sync)
        assert r.status_code in (200, 201), f"{name}: {r.status_code} {r.text[:300]}"
        assert rjson(r) == orig, f"{name}: replay did not return the original record"

    conflict = '{"id": "idem-1", ' + BASE_OK.replace('"success"', '"failure"') + ', "metadata": {"v": 1}}'
    check_error(_post(base_url, key, "/v1/events", conflict, headers=sync), 409)
    conflict2 = '{"id": "idem-2", "timestamp": "2024-02-03T04:05:06.8+03:00", ' + BASE_OK + "}"
    check_error(_post(base_url, key, "/v1/events", conflict2, headers=sync), 409)

    body = list_all(base_url, key)
    assert body["total"] == 2, f"replays/conflicts changed the chain: {[e['id'] for e in body['events']]}"
    check_chain(body["events"], tenant.name)


# --------------------------------------------------------------------------- SSE resume


def test_sse_resume_records_verify(base_url, tenant):
    key = tenant.key
    sync = {"X-Fact0-Sync": "true"}
    bodies = [E_UNICODE, E_ESCAPES, E_NESTED, E_OPTIONAL_ABSENT, E_MS_Z]
    recs = []
    for b in bodies:
        r = _post(base_url, key, "/v1/events", b, headers=sync)
        assert r.status_code == 201, r.text
        recs.append(rjson(r))

    q: queue.Queue = queue.Queue()
    resp = requests.get(
        f"{base_url}/v1/events/stream",
        headers={**auth(key), "Accept": "text/event-stream", "Last-Event-ID": "2"},
        stream=True,
        timeout=(5, 30),
    )
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers.get("Content-Type", "").startswith("text/event-stream"), resp.headers

    def reader():
        try:
            for ev_id, data in sse_records(resp):
                q.put((ev_id, data))
        except Exception as exc:  # noqa: BLE001
            q.put(("error", repr(exc)))

    threading.Thread(target=reader, daemon=True).start()

    def next_record(timeout=5.0):
        try:
            ev_id, data = q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SSE event within {timeout}s")
        assert ev_id != "error", data
        rec = jloads(data)
        assert ev_id == str(rec["sequence_number"]), f"SSE id {ev_id!r} != sequence_number {rec['sequence_number']}"
        return rec

    try:
        got = [next_record() for _ in range(3)]
        assert [g["sequence_number"] for g in got] == [3, 4, 5], "resume after Last-Event-ID: 2"
        assert got == recs[2:], "streamed records differ from the committed ones"
        r = _post(base_url, key, "/v1/events", E_PLUS14, headers=sync)
        assert r.status_code == 201, r.text
        live = next_record()
        assert live == rjson(r) and live["sequence_number"] == 6
        got.append(live)
        for rec in got:
            check_record_shape(rec, tenant.name)
            assert jcs_hash(rec) == rec["hash"]
        assert live["prev_hash"] == recs[-1]["hash"]
    finally:
        hard_close(resp)
