"""Helpers shared by the e2e suites. Independent of the server's code: the hash
is recomputed with the `rfc8785` package and hashlib only."""

from __future__ import annotations

import hashlib
import json
import queue
import re
import socket
import threading
import time
from typing import Any, Callable, Iterable

import requests
import rfc8785

RECORD_KEYS = {
    "id",
    "tenant_id",
    "sequence_number",
    "timestamp",
    "created_at",
    "actor",
    "action",
    "resource",
    "outcome",
    "metadata",
    "prev_hash",
    "hash",
}
# A redacted record (issue 15): what stays of it, naming the event that redacted it.
REDACTED_KEYS = {"id", "tenant_id", "sequence_number", "prev_hash", "hash", "redacted"}
REDACT_ACTION = "sealtrail.event.redact"
ACTOR_KEYS = {"id", "type", "email"}
RESOURCE_KEYS = {"id", "type", "name"}
ZERO_HASH = "0" * 64
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HTTP_TIMEOUT = 15


MAX_SAFE_INT = 2**53 - 1


def _ijson_int(text: str):
    # JCS (RFC 8785) treats every JSON number as an IEEE 754 double, as
    # ECMAScript's JSON.parse does: an integer literal outside the safe range
    # (e.g. the JCS spelling of 1e20, "100000000000000000000") is that double.
    v = int(text)
    return v if -MAX_SAFE_INT <= v <= MAX_SAFE_INT else float(text)


def jloads(text: str | bytes) -> Any:
    """json.loads with ECMAScript number semantics for out-of-range integer literals."""
    return json.loads(text, parse_int=_ijson_int)


def rjson(resp: requests.Response) -> Any:
    return jloads(resp.content)


def jcs_hash(record: dict[str, Any]) -> str:
    """lowercase hex SHA-256 of the JCS form of the record without `hash`."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def check_record_shape(rec: dict[str, Any], tenant: str | None = None) -> None:
    assert isinstance(rec, dict), f"record is not an object: {rec!r}"
    assert set(rec) == RECORD_KEYS, (
        f"record members differ: extra={sorted(set(rec) - RECORD_KEYS)} "
        f"missing={sorted(RECORD_KEYS - set(rec))} in {rec!r}"
    )
    if tenant is not None:
        assert rec["tenant_id"] == tenant, f"tenant_id {rec['tenant_id']!r} != {tenant!r}"
    assert isinstance(rec["sequence_number"], int) and rec["sequence_number"] >= 1, rec
    for k in ("timestamp", "created_at"):
        assert isinstance(rec[k], str) and TS_RE.match(rec[k]), f"{k} not RFC3339 UTC micro: {rec[k]!r}"
    assert isinstance(rec["actor"], dict) and set(rec["actor"]) <= ACTOR_KEYS, rec["actor"]
    assert isinstance(rec["resource"], dict) and set(rec["resource"]) <= RESOURCE_KEYS, rec["resource"]
    assert "id" in rec["actor"] and {"id", "type"} <= set(rec["resource"]), rec
    for part in ("actor", "resource"):
        for k, v in rec[part].items():
            assert v is not None, f"{part}.{k} is null; absent members must be omitted"
    assert rec["outcome"] in ("success", "failure", "error"), rec["outcome"]
    assert isinstance(rec["metadata"], dict), rec["metadata"]
    assert HEX64_RE.match(rec["prev_hash"]), rec["prev_hash"]
    assert HEX64_RE.match(rec["hash"]), rec["hash"]
    if rec["sequence_number"] == 1:
        assert rec["prev_hash"] == ZERO_HASH, rec["prev_hash"]


def check_redacted_shape(rec: dict[str, Any], tenant: str | None = None) -> None:
    """A redacted record: exactly REDACTED_KEYS, `redacted` exactly {event_id, sequence_number}."""
    assert isinstance(rec, dict), f"record is not an object: {rec!r}"
    assert set(rec) == REDACTED_KEYS, (
        f"redacted record members differ: extra={sorted(set(rec) - REDACTED_KEYS)} "
        f"missing={sorted(REDACTED_KEYS - set(rec))} in {rec!r}"
    )
    if tenant is not None:
        assert rec["tenant_id"] == tenant, f"tenant_id {rec['tenant_id']!r} != {tenant!r}"
    assert isinstance(rec["id"], str) and rec["id"], rec
    assert isinstance(rec["sequence_number"], int) and rec["sequence_number"] >= 1, rec
    assert HEX64_RE.match(rec["prev_hash"]), rec["prev_hash"]
    assert HEX64_RE.match(rec["hash"]), rec["hash"]
    by = rec["redacted"]
    assert isinstance(by, dict) and set(by) == {"event_id", "sequence_number"}, f"redacted: {by!r}"
    assert isinstance(by["event_id"], str) and by["event_id"], by
    assert isinstance(by["sequence_number"], int) and not isinstance(by["sequence_number"], bool), by


def is_redacted(rec: dict[str, Any]) -> bool:
    return "redacted" in rec


def check_redaction_event(event: dict[str, Any], redacted: dict[str, Any]) -> None:
    """`event` (a full record, hash-checked by the caller) is the redaction `redacted` names."""
    seq, rid = redacted["sequence_number"], redacted["id"]
    by = redacted["redacted"]
    where = f"redacted record {seq} (id {rid!r}) names record {by['sequence_number']}"
    assert not is_redacted(event), f"{where}, which is itself redacted"
    assert event["sequence_number"] == by["sequence_number"], f"{where}, found {event['sequence_number']}"
    assert event["action"] == REDACT_ACTION, f"{where}, whose action is {event['action']!r}, not {REDACT_ACTION}"
    assert event["id"] == by["event_id"], f"{where} with id {by['event_id']!r}, but its id is {event['id']!r}"
    assert event["resource"].get("id") == rid, (
        f"{where}, which redacts resource {event['resource'].get('id')!r}, not {rid!r}"
    )
    # What the server documents besides (README, "Redaction"): the resource is an event
    # and the metadata names the redacted sequence number.
    assert event["resource"].get("type") == "event", f"{where}, resource {event['resource']!r}"
    meta_seq = event["metadata"].get("sequence_number")
    assert meta_seq == seq and not isinstance(meta_seq, bool), (
        f"{where}, whose metadata.sequence_number is {meta_seq!r}"
    )


def check_chain(records: list[dict[str, Any]], tenant: str) -> None:
    """Full independent check of a tenant's chain, records in sequence order.

    A record is either a full record, whose hash is recomputed (JCS + SHA-256), or a
    redacted one (REDACTED_KEYS), whose content is gone so its hash cannot be: it must
    still link (its prev_hash is the previous record's hash, the next record's prev_hash
    is its hash, its sequence number is in place), and the record it names in `redacted`
    must be a later, full `sealtrail.event.redact` record with that id whose resource is
    this record (each redaction event confirms one record). Anything else fails."""
    assert records, "empty chain"
    prev = ZERO_HASH
    redacted: list[dict[str, Any]] = []
    for i, rec in enumerate(records, start=1):
        if is_redacted(rec):
            check_redacted_shape(rec, tenant)
        else:
            check_record_shape(rec, tenant)
        assert rec["sequence_number"] == i, (
            f"sequence gap/duplicate: position {i} has sequence_number {rec['sequence_number']}"
        )
        assert rec["prev_hash"] == prev, f"seq {i}: prev_hash {rec['prev_hash']} != previous hash {prev}"
        if is_redacted(rec):
            # Bound by its links only: the next record's prev_hash must be this hash.
            redacted.append(rec)
        else:
            computed = jcs_hash(rec)
            assert computed == rec["hash"], (
                f"seq {i} id {rec['id']}: stored hash {rec['hash']} != independent JCS/SHA-256 {computed}\n"
                f"canonical form: {rfc8785.dumps({k: v for k, v in rec.items() if k != 'hash'}).decode()}"
            )
        prev = rec["hash"]
    confirmed_by: dict[int, int] = {}
    for rec in redacted:
        seq, by = rec["sequence_number"], rec["redacted"]["sequence_number"]
        assert by > seq, f"redacted record {seq} is marked redacted by record {by}, which is not after it"
        assert by <= len(records), (
            f"redacted record {seq} is marked redacted by record {by}, which the chain "
            f"(of {len(records)} records) does not have"
        )
        assert by not in confirmed_by, (
            f"redacted records {confirmed_by[by]} and {seq} both name record {by} as their redaction"
        )
        check_redaction_event(records[by - 1], rec)
        confirmed_by[by] = seq


def merkle_root_hex(leaves_hex: list[str]) -> str:
    """RFC 6962 Merkle tree hash; leaf i = the 32 raw bytes of hash i."""

    def mth(leaves: list[bytes]) -> bytes:
        n = len(leaves)
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return hashlib.sha256(b"\x00" + leaves[0]).digest()
        k = 1
        while k * 2 < n:
            k *= 2
        return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()

    return mth([bytes.fromhex(h) for h in leaves_hex]).hex()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def check_error(resp: requests.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.request.url}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
    )
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:500]!r}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"error shape: {body!r}"
    assert isinstance(body["error"].get("code"), str) and body["error"]["code"], body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    return body


def list_all(base_url: str, key: str, **params: Any) -> dict[str, Any]:
    """GET /v1/events with page_size=1000, following pages until all `total` are read."""
    events: list[dict[str, Any]] = []
    page = 1
    while True:
        r = requests.get(
            f"{base_url}/v1/events",
            params={**params, "page": page, "page_size": 1000},
            headers=auth(key),
            timeout=HTTP_TIMEOUT,
        )
        assert r.status_code == 200, f"GET /v1/events -> {r.status_code}: {r.text[:500]}"
        body = rjson(r)
        events.extend(body["events"])
        if len(events) >= body["total"] or not body["events"]:
            body["events"] = events
            return body
        page += 1


def wait_receipt(base_url: str, key: str, receipt_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = requests.get(f"{base_url}/v1/receipts/{receipt_id}", headers=auth(key), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, f"GET /v1/receipts/{receipt_id} -> {r.status_code}: {r.text[:500]}"
        body = rjson(r)
        assert body.get("status") in ("queued", "committed", "failed"), body
        if body["status"] != "queued":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"receipt {receipt_id} still queued after {timeout_s}s: {body}")
        time.sleep(0.05)


class BackgroundIter:
    """Drain an iterator in a daemon thread; read items with a deadline.

    stop() asks the thread to close the iterator after the next item it
    receives (a generator's close() runs its `with` blocks, closing its HTTP
    response)."""

    def __init__(self, make_iter: Callable[[], Iterable[Any]]):
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            it = iter(make_iter())
            try:
                for item in it:
                    if self._stop.is_set():
                        break
                    self._q.put(("item", item))
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.error = exc
                self._q.put(("error", exc))
            else:
                self._q.put(("end", None))
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # noqa: BLE001
                        pass

        self._t = threading.Thread(target=run, daemon=True, name="e2e-stream-reader")
        self._t.start()

    def stop(self) -> None:
        self._stop.set()

    def get(self, timeout: float) -> Any:
        """Next item, or raises queue.Empty on timeout / AssertionError on end or error."""
        kind, val = self._q.get(timeout=timeout)
        if kind == "error":
            raise AssertionError(f"stream reader failed: {val!r}")
        if kind == "end":
            raise AssertionError("stream ended unexpectedly")
        return val


def hard_close(resp: requests.Response) -> None:
    """Close a streaming response even while another thread is blocked reading it."""
    conn = getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:
        fp = getattr(resp.raw, "_fp", None)
        sock = getattr(getattr(getattr(fp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    resp.close()


def sse_records(resp: requests.Response):
    """Parse an SSE response into (id, data_text) pairs, one per dispatched event.

    Lines are split on CR/LF bytes only (not str.splitlines, which would also
    split on U+2028 and friends inside JSON strings)."""
    ev_id: str | None = None
    data: list[str] = []
    buf = b""
    for chunk in resp.iter_content(chunk_size=None):
        buf += chunk
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line, buf = buf[:i], buf[i + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            raw = line.decode("utf-8")
            if raw == "":
                if data:
                    yield ev_id, "\n".join(data)
                ev_id, data = None, []
                continue
            if raw.startswith(":"):
                continue
            field, _, value = raw.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "id":
                ev_id = value
            elif field == "data":
                data.append(value)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
