"""Independent check of sealtrail's verifiable log, in Python, from the public API only.

Nothing here uses sealtrail's code: the C2SP signed note (Ed25519, via the
`cryptography` package), the tlog-checkpoint text, and RFC 6962 / RFC 9162 Merkle
roots, inclusion and consistency proofs are re-implemented from the specifications.
"""

from __future__ import annotations

import base64
import hashlib

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from e2e_util import HTTP_TIMEOUT, auth, list_all, merkle_root_hex, rjson

# ---------------------------------------------------------------- C2SP signed note


def parse_verifier_key(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    name, key_id_hex, key_b64 = vkey.split("+", 2)
    raw = base64.b64decode(key_b64)
    assert raw[0] == 0x01 and len(raw) == 33, "an Ed25519 verifier key"
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_id.hex() == key_id_hex, "key id = SHA-256(name, newline, 0x01, key)[:4]"
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_note(note: str, vkey: str) -> str:
    """Verifies the note's signature by `vkey` and returns the signed text."""
    name, key_id, public = parse_verifier_key(vkey)
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    found = False
    for line in sigs.splitlines():
        assert line.startswith("\u2014 "), line
        sig_name, sig_b64 = line[2:].split(" ", 1)
        raw = base64.b64decode(sig_b64)
        if sig_name != name or raw[:4] != key_id:
            continue
        public.verify(raw[4:], text.encode())  # raises InvalidSignature
        found = True
    assert found, "no signature by the log key"
    return text


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    lines = text.split("\n")
    assert lines[-1] == "", "ends in a newline"
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2])
    assert len(root) == 32
    return origin, size, root


# ---------------------------------------------------------------- RFC 6962 / 9162


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = hashlib.sha256(b"\x00" + leaf).digest()
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, path: list[bytes], first_root: bytes, second_root: bytes) -> bool:
    if first == second:
        return not path and first_root == second_root
    if first == 0 or first > second or not path:
        return False
    if first & (first - 1) == 0:  # a power of two: the old root is the first node
        path = [first_root] + path
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


# ---------------------------------------------------------------- the test


def _ingest(base_url: str, key: str, ids: range) -> None:
    events = [
        {"id": f"vl-{i}", "actor": {"id": "u1"}, "action": "doc.read", "resource": {"id": f"d{i}", "type": "doc"}, "outcome": "success"}
        for i in ids
    ]
    r = requests.post(f"{base_url}/v1/events/batch?sync=true", json={"events": events}, headers=auth(key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text


def _checkpoint(base_url: str, key: str, vkey: str) -> tuple[str, str, int, bytes]:
    r = requests.get(f"{base_url}/v1/checkpoint?fresh=true", headers=auth(key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return (r.text, *parse_checkpoint(open_note(r.text, vkey)))


def test_checkpoint_signature_and_proofs_verify_independently(base_url, new_tenant):
    t = new_tenant()
    key_info = rjson(requests.get(f"{base_url}/v1/log/key", headers=auth(t.key), timeout=HTTP_TIMEOUT))
    vkey = key_info["verifier_key"]
    assert key_info["origin"].endswith("/" + t.name)

    _ingest(base_url, t.key, range(0, 8))
    _, origin, old_size, old_root = _checkpoint(base_url, t.key, vkey)
    assert (origin, old_size) == (key_info["origin"], 8)
    _ingest(base_url, t.key, range(8, 21))
    note, origin, size, root = _checkpoint(base_url, t.key, vkey)
    assert size == 21

    records = list_all(base_url, t.key)["events"]
    hashes = [r["hash"] for r in records]
    assert merkle_root_hex(hashes) == root.hex(), "the signed root is the RFC 6962 root of the record hashes"
    assert merkle_root_hex(hashes[:8]) == old_root.hex()

    for rec in records:
        n = rec["sequence_number"]
        p = rjson(requests.get(f"{base_url}/v1/proof/inclusion", params={"sequence_number": n, "tree_size": size}, headers=auth(t.key), timeout=HTTP_TIMEOUT))
        assert p["leaf_index"] == n - 1 and p["tree_size"] == size
        assert base64.b64decode(p["root_hash"]) == root
        path = [base64.b64decode(h) for h in p["hashes"]]
        assert verify_inclusion(bytes.fromhex(rec["hash"]), n - 1, size, path, root)
        assert not verify_inclusion(bytes.fromhex(rec["hash"]), n % size, size, path, root) or size == 1
        if path:
            bad = [path[0][:-1] + bytes([path[0][-1] ^ 1])] + path[1:]
            assert not verify_inclusion(bytes.fromhex(rec["hash"]), n - 1, size, bad, root)

    c = rjson(requests.get(f"{base_url}/v1/proof/consistency", params={"from": 8, "to": 21}, headers=auth(t.key), timeout=HTTP_TIMEOUT))
    assert (c["from"], c["to"]) == (8, 21)
    path = [base64.b64decode(h) for h in c["hashes"]]
    assert verify_consistency(8, 21, path, old_root, root)
    forked = bytes([old_root[0] ^ 1]) + old_root[1:]
    assert not verify_consistency(8, 21, path, forked, root), "a forked earlier root is refused"

    # sync ingest with ?proof=true: the record plus its checkpoint and inclusion proof
    r = requests.post(
        f"{base_url}/v1/events?sync=true&proof=true",
        json={"actor": {"id": "u1"}, "action": "doc.read", "resource": {"id": "d", "type": "doc"}, "outcome": "success"},
        headers=auth(t.key),
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201, r.text
    rec = rjson(r)
    _, cp_size, cp_root = parse_checkpoint(open_note(rec["checkpoint"], vkey))
    assert cp_size == rec["sequence_number"] == 22
    proof = rec["inclusion_proof"]
    path = [base64.b64decode(h) for h in proof["hashes"]]
    assert verify_inclusion(bytes.fromhex(rec["hash"]), 21, 22, path, cp_root)

    # a changed checkpoint no longer verifies
    tampered = note.replace(f"\n{size}\n", f"\n{size + 1}\n", 1)
    try:
        open_note(tampered, vkey)
        raise AssertionError("a tampered checkpoint verified")
    except InvalidSignature:
        pass
