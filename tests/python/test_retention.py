"""Retention (issue 15), checked from the outside.

A tenant's policy (`PUT /v1/retention`, admin scope) makes the server's pruner append a
`sealtrail.retention.prune` event and remove the records before its boundary. Here the
evidence pack of the pruned log is checked with nothing but Python's hashlib, rfc8785
and the `cryptography` package: every kept record's hash (JCS + SHA-256) and link, the
prune event naming the boundary, the tree over the removed records (`proofs.json`
`retention.prefix`) equal to the one built from the records as they were before, the
signed root rebuilt from that prefix and the kept records, and the checkpoint kept from
before the removal consistent with today's. The same test runs in both modes (in
distributed mode a gateway's pruner appends the event through Kafka, and the chainer that
derives it removes the records from Cassandra).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import uuid
import zipfile

import requests

from e2e_util import HTTP_TIMEOUT, ZERO_HASH, auth, check_error, check_record_shape, jcs_hash, list_all, rjson
from test_verifiable_log import open_note, parse_checkpoint, verify_consistency

PRUNE_ACTION = "sealtrail.retention.prune"


def _leaf(hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(hash_hex)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _push(stack: list[tuple[int, bytes]], h: bytes) -> None:
    """Adds a leaf hash to `stack`, the complete subtrees of an RFC 6962 tree as
    (size, hash), largest first: a binary counter of the leaves."""
    size, node = 1, h
    while stack and stack[-1][0] == size:
        left_size, left = stack.pop()
        size, node = left_size + size, _node(left, node)
    stack.append((size, node))


def _frontier(leaf_hashes: list[bytes]) -> list[tuple[int, bytes]]:
    """The complete subtrees of the tree over these leaf hashes."""
    stack: list[tuple[int, bytes]] = []
    for h in leaf_hashes:
        _push(stack, h)
    return stack


def _root(stack: list[tuple[int, bytes]]) -> bytes:
    acc = stack[-1][1]
    for _, h in reversed(stack[:-1]):
        acc = _node(h, acc)
    return acc


def _events(n: int) -> list[dict]:
    return [
        {
            "id": f"rt-{i}-{uuid.uuid4().hex[:8]}",
            "actor": {"id": f"user-{i}", "type": "human"},
            "action": "document.read",
            "resource": {"id": f"doc-{i}", "type": "document"},
            "outcome": "success",
            "metadata": {"i": i},
        }
        for i in range(n)
    ]


def _put(base_url: str, key: str, body) -> requests.Response:
    return requests.put(f"{base_url}/v1/retention", json=body, headers=auth(key), timeout=HTTP_TIMEOUT)


def test_a_pruned_log_verifies_independently(base_url, tenant, make_key):
    key_info = rjson(requests.get(f"{base_url}/v1/log/key", headers=auth(tenant.key), timeout=HTTP_TIMEOUT))
    vkey = key_info["verifier_key"]
    r = requests.post(f"{base_url}/v1/events/batch", params={"sync": "true"}, json={"events": _events(20)},
                      headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    before = list_all(base_url, tenant.key)["events"]
    assert [e["sequence_number"] for e in before] == list(range(1, 21))
    kept_note = requests.get(f"{base_url}/v1/checkpoint", params={"fresh": "true"},
                             headers=auth(tenant.key), timeout=HTTP_TIMEOUT).text
    _, kept_size, kept_root = parse_checkpoint(open_note(kept_note, vkey))
    assert kept_size == 20

    admin = make_key(tenant.name, "admin")
    r = _put(base_url, admin, {"events": 8})
    assert r.status_code == 200, r.text
    assert rjson(r)["policy"] == {"events": 8} and rjson(r)["source"] == "tenant"
    deadline = time.monotonic() + 20
    while True:
        status = rjson(requests.get(f"{base_url}/v1/retention", headers=auth(admin), timeout=HTTP_TIMEOUT))
        if status["retained_from"] == 13:
            break
        assert time.monotonic() < deadline, f"never pruned: {status}"
        time.sleep(0.2)

    # The pack, checked independently.
    pack = requests.get(f"{base_url}/v1/export/evidence-pack", headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
    assert pack.status_code == 200, pack.text
    z = zipfile.ZipFile(io.BytesIO(pack.content))
    records = [json.loads(line) for line in z.read("records.jsonl").decode().splitlines()]
    proofs = json.loads(z.read("proofs.json"))
    _, size, root = parse_checkpoint(open_note(z.read("checkpoint.txt").decode(), vkey))
    assert size == 21 and [r["sequence_number"] for r in records] == list(range(13, 22))
    # every kept record: its hash, its link (the first one's to a removed record)
    prev = records[0]["prev_hash"]
    assert prev == before[11]["hash"], "the first kept record links to record 12 as it was"
    for rec in records:
        check_record_shape(rec, tenant.name)
        assert jcs_hash(rec) == rec["hash"], rec
        assert rec["prev_hash"] == prev, rec
        prev = rec["hash"]
    assert records[:8] == before[12:], "the kept records are unchanged"
    prune = records[-1]
    assert prune["action"] == PRUNE_ACTION and prune["metadata"]["before_sequence_number"] == 13, prune
    assert prune["actor"] == {"id": "sealtrail.retention", "type": "system"}, prune
    # the tree over the removed records is the one the records had
    retention = proofs["retention"]
    assert retention["retained_from"] == 13
    prefix = [base64.b64decode(h) for h in retention["prefix"]]
    expected = _frontier([_leaf(r["hash"]) for r in before[:12]])
    assert prefix == [h for _, h in expected], "the prefix is not the removed records' tree"
    # the signed root, rebuilt from the prefix and the kept records
    stack = list(expected)
    for rec in records:
        _push(stack, _leaf(rec["hash"]))
    assert _root(stack) == root, "the signed root is not the tree of the removed and kept records"
    # the checkpoint kept from before is consistent with today's
    c = rjson(requests.get(f"{base_url}/v1/proof/consistency", params={"from": kept_size, "to": size},
                           headers=auth(tenant.key), timeout=HTTP_TIMEOUT))
    assert verify_consistency(kept_size, size, [base64.b64decode(h) for h in c["hashes"]], kept_root, root), c
    # removed records are gone, lists start at the boundary, the server's walk agrees
    for rec in before[:12]:
        r = requests.get(f"{base_url}/v1/events/{rec['id']}", headers=auth(tenant.key), timeout=HTTP_TIMEOUT)
        assert r.status_code == 404, r.text
    listed = list_all(base_url, tenant.key)
    assert listed["total"] == 9 and listed["events"] == records
    v = rjson(requests.get(f"{base_url}/v1/verify", params={"full": "true"}, headers=auth(tenant.key),
                           timeout=HTTP_TIMEOUT))
    assert v["valid"] is True and v["retained_from"] == 13 and v["events_checked"] == 9, v
    assert ZERO_HASH not in (records[0]["prev_hash"],)
