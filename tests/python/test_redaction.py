"""Redaction (issue 15), checked from the outside.

`POST /v1/events/{id}/redact` (admin scope) appends a `sealtrail.event.redact` event and
erases the target: reads return `{"hash","id","prev_hash","redacted":{"event_id",
"sequence_number"},"sequence_number","tenant_id"}`. Here every record is fetched with
plain `requests` and the whole chain verified independently (`e2e_util.check_chain`:
rfc8785 + hashlib; a redacted record by its links and its redaction event), the signed
checkpoint and proofs re-checked from the specifications (test_verifiable_log), and the
official fact0 SDK reads a redacted record.

Every test runs in both modes: in distributed mode the chainer that derives the
redaction event erases the record in Cassandra.
"""

from __future__ import annotations

import base64
import copy
import uuid

import fact0
import pytest
import requests
import rfc8785

from e2e_util import (
    HTTP_TIMEOUT,
    REDACT_ACTION,
    REDACTED_KEYS,
    auth,
    check_chain,
    check_error,
    check_record_shape,
    check_redacted_shape,
    jcs_hash,
    list_all,
    merkle_root_hex,
    rjson,
)
from test_verifiable_log import open_note, parse_checkpoint, verify_consistency, verify_inclusion

N_EVENTS = 8


def _marker() -> str:
    return f"pii{uuid.uuid4().hex}"


def _events(n: int) -> tuple[list[dict], list[str]]:
    """n events, each carrying its own unique marker in actor id, email, resource name and metadata."""
    markers = [_marker() for _ in range(n)]
    events = [
        {
            "id": f"rd-{i}-{uuid.uuid4().hex[:8]}",
            "actor": {"id": f"subject-{m}", "type": "human", "email": f"{m}@example.com"},
            "action": "profile.update",
            "resource": {"id": f"profile-{i}", "type": "profile", "name": f"Profile of {m}"},
            "outcome": "success",
            "metadata": {"i": i, "note": f"personal data {m}"},
        }
        for i, m in enumerate(markers)
    ]
    return events, markers


def _ingest(base_url: str, key: str, events: list[dict]) -> list[dict]:
    r = requests.post(
        f"{base_url}/v1/events/batch",
        params={"sync": "true"},
        json={"events": events},
        headers=auth(key),
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 200, f"sync batch -> {r.status_code}: {r.text[:500]}"
    body = rjson(r)
    assert body["accepted"] == len(events) and body["rejected"] == 0, body
    return body["events"]


def _redact(base_url: str, key: str | None, event_id: str, body) -> requests.Response:
    return requests.post(
        f"{base_url}/v1/events/{event_id}/redact",
        json=body,
        headers=auth(key) if key else {},
        timeout=HTTP_TIMEOUT + 15,  # the server waits up to 10 s for the erasure
    )


def _get(base_url: str, key: str, event_id: str) -> dict:
    r = requests.get(f"{base_url}/v1/events/{event_id}", headers=auth(key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"GET /v1/events/{event_id} -> {r.status_code}: {r.text[:500]}"
    return rjson(r)


def _verify(base_url: str, key: str, **params) -> dict:
    r = requests.get(f"{base_url}/v1/verify", params=params, headers=auth(key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"GET /v1/verify -> {r.status_code}: {r.text[:500]}"
    return rjson(r)


def _checkpoint(base_url: str, key: str, vkey: str) -> tuple[int, bytes]:
    r = requests.get(f"{base_url}/v1/checkpoint", params={"fresh": "true"}, headers=auth(key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"GET /v1/checkpoint -> {r.status_code}: {r.text[:500]}"
    _, size, root = parse_checkpoint(open_note(r.text, vkey))
    return size, root


def _export(base_url: str, key: str, fmt: str) -> bytes:
    r = requests.get(f"{base_url}/v1/export", params={"format": fmt}, headers=auth(key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"GET /v1/export?format={fmt} -> {r.status_code}: {r.text[:500]}"
    return r.content


def _rejects(records: list[dict], tenant: str, what: str) -> None:
    with pytest.raises(AssertionError):
        check_chain(records, tenant)
        pytest.fail(f"the independent check accepted {what}")  # pragma: no cover


# ------------------------------------------------------------------------- both modes


def test_redaction_needs_the_admin_scope_and_sealtrail_actions_are_reserved(base_url, tenant, make_key):
    events, _ = _events(2)
    before = _ingest(base_url, tenant.key, events)
    target = before[0]["id"]
    reason = {"reason": "GDPR Art. 17"}

    # read,write (the tenant's key), read, write: no admin scope -> 403; no key -> 401
    for scopes in ("read,write", "read", "write"):
        key = tenant.key if scopes == "read,write" else make_key(tenant.name, scopes)
        body = check_error(_redact(base_url, key, target, reason), 403)
        assert body["error"]["code"], body
    check_error(_redact(base_url, None, target, reason), 401)

    # a client event may not carry the server's own redaction action (nor any sealtrail.*)
    forged = {
        "actor": {"id": "mallory"},
        "action": REDACT_ACTION,
        "resource": {"id": target, "type": "event"},
        "outcome": "success",
        "metadata": {"reason": "forged", "sequence_number": 1},
    }
    r = requests.post(f"{base_url}/v1/events", params={"sync": "true"}, json=forged,
                      headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
    body = check_error(r, 400)
    assert body["error"]["code"] == "reserved_action", body
    r = requests.post(f"{base_url}/v1/events", params={"sync": "true"}, json={**forged, "action": "sealtrail.x"},
                      headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
    assert check_error(r, 400)["error"]["code"] == "reserved_action"
    # in a batch: rejected by its index, its neighbour commits
    ok, _ = _events(1)
    r = requests.post(f"{base_url}/v1/events/batch", params={"sync": "true"}, json={"events": [ok[0], forged]},
                      headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    res = rjson(r)
    assert res["accepted"] == 1 and res["rejected"] == 1 and res["ids"] == [ok[0]["id"]], res
    assert [(e["index"], e["code"]) for e in res["errors"]] == [(1, "reserved_action")], res

    # no redaction happened and none was forged: the records as written, and the neighbour
    after = list_all(base_url, tenant.key)
    assert after["total"] == 3 and after["events"][:2] == before, after
    assert after["events"][2]["id"] == ok[0]["id"] and after["events"][2]["action"] == "profile.update"
    assert not any(e.get("action", "").startswith("sealtrail.") or "redacted" in e for e in after["events"])
    check_chain(after["events"], tenant.name)


def test_redacted_records_verify_independently(base_url, server, tenant, new_tenant, make_key):
    key_info = rjson(requests.get(f"{base_url}/v1/log/key", headers=auth(tenant.key), timeout=HTTP_TIMEOUT))
    vkey = key_info["verifier_key"]
    events, markers = _events(N_EVENTS)
    before = _ingest(base_url, tenant.key, events)
    check_chain(before, tenant.name)
    # the server's verify now anchors at the head (record 8, which gets redacted below)
    v = _verify(base_url, tenant.key)
    assert v["valid"] is True and v["events_checked"] == N_EVENTS, v
    old_size, old_root = _checkpoint(base_url, tenant.key, vkey)
    assert old_size == N_EVENTS and old_root.hex() == merkle_root_hex([r["hash"] for r in before])

    admin = make_key(tenant.name, "admin")
    # admin is only admin: it neither reads nor writes
    check_error(requests.get(f"{base_url}/v1/events", headers=auth(admin), timeout=HTTP_TIMEOUT), 403)
    check_error(requests.post(f"{base_url}/v1/events/batch", json={"events": _events(1)[0]},
                              headers=auth(admin), timeout=HTTP_TIMEOUT), 403)

    # the first, a middle and the last-ingested record
    targets = [0, N_EVENTS // 2 - 1, N_EVENTS - 1]
    redactions: dict[int, dict] = {}
    actor_ids = set()
    for n, t in enumerate(targets):
        orig = before[t]
        reason = f"GDPR Art. 17 request 2026-{100 + n}"
        r = _redact(base_url, admin, orig["id"], {"reason": reason})
        assert r.status_code == 200, f"redact {orig['id']} -> {r.status_code}: {r.text[:500]}"
        body = rjson(r)
        assert set(body) == {"record", "redaction", "erased"}, body
        assert body["erased"] is True, body
        red, rec = body["redaction"], body["record"]
        check_record_shape(red, tenant.name)
        assert jcs_hash(red) == red["hash"]
        assert red["sequence_number"] == N_EVENTS + n + 1, red
        assert red["action"] == REDACT_ACTION and red["outcome"] == "success", red
        assert red["resource"] == {"id": orig["id"], "type": "event"}, red
        assert red["metadata"] == {"reason": reason, "sequence_number": orig["sequence_number"]}, red
        assert set(red["actor"]) == {"id"}, red
        actor_ids.add(red["actor"]["id"])
        check_redacted_shape(rec, tenant.name)
        assert rec == {
            **{k: orig[k] for k in ("id", "tenant_id", "sequence_number", "prev_hash", "hash")},
            "redacted": {"event_id": red["id"], "sequence_number": red["sequence_number"]},
        }, rec
        assert _get(base_url, tenant.key, orig["id"]) == rec
        assert _get(base_url, tenant.key, red["id"]) == red
        redactions[t] = red

    # the redaction's actor is the admin key's id (as `keys list` shows it)
    assert len(actor_ids) == 1, actor_ids
    (key_id,) = actor_ids
    listed = server.keys_list()
    line = [ln for ln in listed.splitlines() if ln.split()[:1] == [key_id]]
    assert len(line) == 1 and admin[:15] in line[0] and "admin" in line[0].split(), (key_id, listed)

    # again: the existing redaction, nothing appended
    again = _redact(base_url, admin, before[targets[1]]["id"], {"reason": "once more"})
    assert again.status_code == 200, again.text
    assert rjson(again)["redaction"] == redactions[targets[1]], again.text
    # a redaction event cannot be redacted; unknown ids; bad bodies; another tenant's admin
    assert check_error(_redact(base_url, admin, redactions[0]["id"], {"reason": "x"}), 409)["error"]["code"] == "not_redactable"
    check_error(_redact(base_url, admin, "no-such-event", {"reason": "x"}), 404)
    assert check_error(_redact(base_url, admin, before[1]["id"], {"reason": "   "}), 400)["error"]["code"] == "invalid_field"
    assert check_error(_redact(base_url, admin, before[1]["id"], {"why": "x"}), 400)["error"]["code"] == "invalid_body"
    other = new_tenant("other")
    check_error(_redact(base_url, make_key(other.name, "admin"), before[1]["id"], {"reason": "x"}), 404)

    # every record, over plain REST, verified independently
    total = N_EVENTS + len(targets)
    body = list_all(base_url, tenant.key)
    records = body["events"]
    assert body["total"] == total and len(records) == total, body["total"]
    check_chain(records, tenant.name)
    for rec in records:
        assert _get(base_url, tenant.key, rec["id"]) == rec
    for i, orig in enumerate(before):
        rec = records[i]
        if i in targets:
            assert set(rec) == REDACTED_KEYS and rec["redacted"]["event_id"] == redactions[i]["id"], rec
            assert rec["hash"] == orig["hash"] and rec["prev_hash"] == orig["prev_hash"]
        else:
            assert rec == orig, f"record {i + 1} changed though it was not redacted"
    assert records[N_EVENTS:] == [redactions[t] for t in targets]

    # no filter finds erased content any more
    for i, m in enumerate(markers):
        found = list_all(base_url, tenant.key, actor_id=f"subject-{m}")["total"]
        assert found == (0 if i in targets else 1), (i, found)
    assert [e["id"] for e in list_all(base_url, tenant.key, action=REDACT_ACTION)["events"]] == [
        redactions[t]["id"] for t in targets
    ]

    # the server agrees: resumed at the (now redacted) anchor, and a full walk
    v = _verify(base_url, tenant.key)
    assert v["valid"] is True and v["events_checked"] == total and v["broken_count"] == 0, v
    assert v["root_hash"] == records[-1]["hash"], v
    v = _verify(base_url, tenant.key, full="true")
    assert v["valid"] is True and v["events_checked"] == total and v["broken_count"] == 0, v
    assert v.get("redacted_checked") == len(targets), v
    for t in targets:
        r = requests.get(f"{base_url}/v1/events/{before[t]['id']}/verify", headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        one = rjson(r)
        assert one["valid"] is True and one["prev_hash_valid"] is True, one
        assert one["redacted"] == records[t]["redacted"], one
        assert one["stored_hash"] == one["computed_hash"] == records[t + 1]["prev_hash"] == before[t]["hash"], one

    # the Merkle leaves are unchanged: the signed root is the independent root, the
    # checkpoint from before the redactions is consistent, redacted records are included
    size, root = _checkpoint(base_url, tenant.key, vkey)
    assert size == total
    assert root.hex() == merkle_root_hex([r["hash"] for r in records]), "signed root != independent Merkle root"
    c = rjson(requests.get(f"{base_url}/v1/proof/consistency", params={"from": old_size, "to": size},
                           headers=auth(tenant.key), timeout=HTTP_TIMEOUT))
    assert verify_consistency(old_size, size, [base64.b64decode(h) for h in c["hashes"]], old_root, root), c
    for t in targets:
        p = rjson(requests.get(f"{base_url}/v1/proof/inclusion", params={"sequence_number": t + 1, "tree_size": size},
                               headers=auth(tenant.key), timeout=HTTP_TIMEOUT))
        path = [base64.b64decode(h) for h in p["hashes"]]
        assert verify_inclusion(bytes.fromhex(records[t]["hash"]), t, size, path, root), p

    # exports: each JSONL line is the JCS form of the record as read; erased content is gone
    jsonl = _export(base_url, tenant.key, "jsonl")
    assert jsonl.decode("utf-8").split("\n") == [rfc8785.dumps(r).decode("utf-8") for r in records] + [""]
    csv = _export(base_url, tenant.key, "csv")
    for i, m in enumerate(markers):
        for name, data in (("JSONL", jsonl), ("CSV", csv)):
            if i in targets:
                assert m.encode() not in data, f"the {name} export still holds redacted record {i + 1}'s {m}"
            else:
                assert m.encode() in data, f"the {name} export lacks record {i + 1}"

    # ...and the independent check refuses a redaction it cannot confirm
    def forged(mutate) -> list[dict]:
        recs = copy.deepcopy(records)
        mutate(recs)
        return recs

    def shell(rec: dict, by: dict) -> dict:
        return {**{k: rec[k] for k in ("id", "tenant_id", "sequence_number", "prev_hash", "hash")},
                "redacted": {"event_id": by["id"], "sequence_number": by["sequence_number"]}}

    mid = targets[1]
    kept = 5  # record 6: never redacted
    assert kept not in targets
    _rejects(forged(lambda rs: rs.__setitem__(kept, shell(rs[kept], redactions[mid]))), tenant.name,
             "a record erased under another record's redaction event")
    _rejects(forged(lambda rs: rs.__setitem__(kept, shell(rs[kept], rs[kept + 1]))), tenant.name,
             "a record marked redacted by an ordinary event")
    _rejects(forged(lambda rs: rs.__setitem__(kept, shell(rs[kept], {"id": "x", "sequence_number": 99}))), tenant.name,
             "a record marked redacted by a record the chain does not have")
    _rejects(forged(lambda rs: rs.__setitem__(kept, shell(rs[kept], rs[kept - 1]))), tenant.name,
             "a record marked redacted by an earlier record")
    _rejects(forged(lambda rs: rs[mid]["redacted"].__setitem__("event_id", "other-id")), tenant.name,
             "a redacted record naming the wrong event id")
    _rejects(forged(lambda rs: rs[mid]["redacted"].__setitem__("sequence_number", redactions[0]["sequence_number"])),
             tenant.name, "a redacted record naming another record's redaction")
    _rejects(forged(lambda rs: rs[mid].__setitem__("action", before[mid]["action"])), tenant.name,
             "a redacted record with a member left")
    _rejects(forged(lambda rs: rs[mid].__setitem__("hash", "0" * 64)), tenant.name,
             "a redacted record with another hash")
    _rejects(forged(lambda rs: rs[mid].pop("redacted")), tenant.name, "a redacted record without `redacted`")
    _rejects(records[: N_EVENTS + 2], tenant.name, "a chain cut before the last redaction event")
    _rejects(forged(lambda rs: rs[redactions[mid]["sequence_number"] - 1].__setitem__(
        "resource", {"id": before[kept]["id"], "type": "event"})), tenant.name,
        "a redaction event rewritten to name another record")

def test_fact0_sdk_reads_a_redacted_record(base_url, tenant, make_key):
    events, markers = _events(5)
    client = fact0.Client(api_key=tenant.key, base_url=base_url, sync=True, raise_on_error=True)
    try:
        res = client.audit.log_batch(events)
        assert res["accepted"] == 5 and res["rejected"] == 0, res
        target = events[2]["id"]
        r = _redact(base_url, make_key(tenant.name, "admin"), target, {"reason": "erasure request"})
        assert r.status_code == 200, r.text
        redaction = rjson(r)["redaction"]

        rec = client.audit.get_event(event_id=target)
        check_redacted_shape(rec, tenant.name)
        assert rec["id"] == target and rec["sequence_number"] == 3, rec
        assert rec["redacted"] == {"event_id": redaction["id"], "sequence_number": 6}, rec
        assert markers[2] not in repr(rec)

        body = client.audit.list_events(page=1, page_size=1000)
        assert body["total"] == 6 and len(body["events"]) == 6, body
        listed = body["events"]
        assert listed[2] == rec and "redacted" in listed[2], listed[2]
        assert [e.get("redacted") is not None for e in listed] == [False, False, True, False, False, False]
        assert listed[5] == redaction
        check_chain(listed, tenant.name)
        page = client.audit.list_events(page=2, page_size=2)
        assert [e["sequence_number"] for e in page["events"]] == [3, 4] and page["events"][0] == rec, page
        assert client.audit.list_events(actor_id=f"subject-{markers[2]}")["total"] == 0

        one = client.audit.verify_event(event_id=target)
        assert one["valid"] is True and one["redacted"] == rec["redacted"], one
        assert one["stored_hash"] == rec["hash"] == listed[3]["prev_hash"], one
        v = client.audit.verify(full="true")
        assert v["valid"] is True and v["events_checked"] == 6 and v.get("redacted_checked") == 1, v
    finally:
        client.close()
