"""Log streams (issue 17, webhooks): every committed event delivered to a real receiver in
order, at least once, signed, with the checkpoint that covers it — across receiver
outages, a 429 with Retry-After, a paused destination resumed from a chosen record, and a
SIGKILL of the server.

The receiver is a local HTTP server started here that checks every request's HMAC, can
be told to fail, and checks the delivered chain itself (hashes recomputed with
`rfc8785`, links, the checkpoint's Ed25519 signature with `cryptography`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import DISTRIBUTED, Embedded
from e2e_util import jcs_hash
from test_tls import Ca
from test_verifiable_log import open_note, parse_checkpoint

ZERO = "0" * 64


class Receiver:
    """A webhook receiver: checks `Sealtrail-Signature`, answers as `script` says (then
    `mode`), keeps each acknowledged batch."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.secret = b""
        self.mode = 200
        self.script: list[tuple[int, dict[str, str]]] = []
        self.batches: list[dict] = []  # acknowledged deliveries, in arrival order
        self.attempts: list[float] = []  # arrival time of every request
        self.bad_signatures = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.attempts.append(time.monotonic())
                    if not outer.signed(self.headers.get("Sealtrail-Signature", ""), body):
                        outer.bad_signatures += 1
                        self.send_response(401)
                        self.end_headers()
                        return
                    status, headers = outer.script.pop(0) if outer.script else (outer.mode, {})
                    if status == 200:
                        outer.batches.append(json.loads(body))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def signed(self, header: str, body: bytes) -> bool:
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        if "t" not in parts or "v1" not in parts or abs(time.time() - int(parts["t"])) > 300:
            return False
        expected = hmac.new(self.secret, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["v1"])

    def delivered(self) -> list[dict]:
        """Each record once (the first time it came), in arrival order."""
        seen: dict[int, dict] = {}
        with self.lock:
            for batch in self.batches:
                for record in batch["events"]:
                    seen.setdefault(record["sequence_number"], record)
        return list(seen.values())

    def wait_for(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < n:
            assert time.monotonic() < deadline, f"{len(self.delivered())} of {n} records delivered"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()


def post(base_url: str, key: str, n: int, tag: str) -> None:
    events = [
        {
            "actor": {"id": f"u{i}", "type": "human"},
            "action": f"stream.{tag}",
            "resource": {"id": f"r{i}", "type": "doc"},
            "outcome": "success",
            "metadata": {"i": i},
        }
        for i in range(n)
    ]
    r = requests.post(
        f"{base_url}/v1/events/batch?sync=true",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def check_delivery(receiver: Receiver, vkey: str, tenant: str, total: int) -> None:
    """In order, complete, a valid chain, and each batch covered by a signed checkpoint."""
    records = receiver.delivered()
    assert [r["sequence_number"] for r in records] == list(range(1, total + 1))
    for record in records:
        assert record["tenant_id"] == tenant
        assert jcs_hash(record) == record["hash"], f"record {record['sequence_number']} hashes to another hash"
    for before, after in zip([{"hash": ZERO}] + records, records):
        assert after["prev_hash"] == before["hash"]
    high = 0
    for batch in receiver.batches:
        seqs = [r["sequence_number"] for r in batch["events"]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a batch is a run of the chain"
        assert seqs[0] <= high + 1, f"a batch started at {seqs[0]} after {high}: a record was skipped"
        high = max(high, seqs[-1])
        assert batch["tenant_id"] == tenant
        origin, size, _root = parse_checkpoint(open_note(batch["checkpoint"], vkey))
        assert origin.endswith("/" + tenant) and size >= seqs[-1], "the checkpoint covers the batch"
    assert receiver.bad_signatures == 0


def admin(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_every_event_arrives_in_order_across_outages_429_and_a_sigkill(tmp_path: Path):
    # An HTTPS receiver whose certificate a test CA issued; the server trusts that CA
    # (stream.ca_file) besides the public roots.
    ca = Ca(tmp_path)
    ca.issue(tmp_path / "receiver.pem", tmp_path / "receiver.key", "receiver")
    receiver = Receiver(tls=(tmp_path / "receiver.pem", tmp_path / "receiver.key"))
    assert receiver.url.startswith("https://")
    srv = Embedded(tmp_path, env={"SEALTRAIL_STREAM_ALLOW_PRIVATE": "true", "SEALTRAIL_STREAM_CA_FILE": str(ca.path)})
    key = srv.create_key("acme", "read,write,admin")
    srv.start()
    try:
        vkey = requests.get(f"{srv.base_url}/v1/log/key", headers=admin(key), timeout=10).json()["verifier_key"]
        r = requests.post(
            f"{srv.base_url}/v1/destinations", json={"type": "webhook", "url": receiver.url}, headers=admin(key), timeout=10
        )
        assert r.status_code == 201, r.text
        created = r.json()
        dest, receiver.secret = created["id"], bytes.fromhex(created["secret"])
        listed = requests.get(f"{srv.base_url}/v1/destinations", headers=admin(key), timeout=10).json()
        assert [d["id"] for d in listed["destinations"]] == [dest]
        assert "secret" not in json.dumps(listed), "the secret is shown once, never listed"

        post(srv.base_url, key, 30, "first")
        receiver.wait_for(30)

        # The receiver fails: the events wait, the destination says why, ingest goes on.
        receiver.mode = 503
        post(srv.base_url, key, 20, "outage")
        deadline = time.monotonic() + 15
        while True:
            status = requests.get(f"{srv.base_url}/v1/destinations/{dest}", headers=admin(key), timeout=10).json()
            if status["status"] == "failing":
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["lag"] == 20 and status["delivered_through"] == 30, status
        assert "503" in status["last_error"], status

        # Back, but first a 429 asking for 2 s: the next attempt waits that long.
        with receiver.lock:
            receiver.script = [(429, {"Retry-After": "2"})]
            receiver.mode = 200
            first = len(receiver.attempts)
        receiver.wait_for(50, timeout=90)
        with receiver.lock:
            after_429 = receiver.attempts[first:]
        assert len(after_429) >= 2 and after_429[1] - after_429[0] >= 1.9, after_429

        # SIGKILL right after 20 more are acknowledged; the restarted server delivers them.
        post(srv.base_url, key, 20, "killed")
        srv.kill()
        srv.start()
        receiver.wait_for(70)
        check_delivery(receiver, vkey, "acme", 70)
        status = requests.get(f"{srv.base_url}/v1/destinations/{dest}", headers=admin(key), timeout=10).json()
        deadline = time.monotonic() + 10
        while status["lag"] != 0:
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
            status = requests.get(f"{srv.base_url}/v1/destinations/{dest}", headers=admin(key), timeout=10).json()
        assert status["status"] == "delivering" and status["delivered_through"] == 70, status
    finally:
        srv.stop()
        receiver.close()


def test_a_destination_failing_too_long_is_paused_and_resumes_from_a_chosen_record(tmp_path: Path, receiver: Receiver):
    srv = Embedded(tmp_path, env={"SEALTRAIL_STREAM_ALLOW_PRIVATE": "true", "SEALTRAIL_STREAM_PAUSE_AFTER": "2s"})
    key = srv.create_key("acme", "read,write,admin")
    srv.start()
    try:
        receiver.mode = 500
        r = requests.post(
            f"{srv.base_url}/v1/destinations", json={"type": "webhook", "url": receiver.url}, headers=admin(key), timeout=10
        )
        dest, receiver.secret = r.json()["id"], bytes.fromhex(r.json()["secret"])
        post(srv.base_url, key, 5, "paused")
        deadline = time.monotonic() + 30
        while True:
            status = requests.get(f"{srv.base_url}/v1/destinations/{dest}", headers=admin(key), timeout=10).json()
            if status["status"] == "paused":
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert "stream.pause_after" in status["last_error"] and "500" in status["last_error"], status
        assert status["delivered_through"] == 0 and status["lag"] == 5
        attempts = len(receiver.attempts)
        time.sleep(2.5)
        assert len(receiver.attempts) == attempts, "a paused destination is not tried"

        receiver.mode = 200
        r = requests.post(
            f"{srv.base_url}/v1/destinations/{dest}/resume", json={"from_sequence": 3}, headers=admin(key), timeout=10
        )
        assert r.status_code == 200 and r.json()["delivered_through"] == 2, r.text
        deadline = time.monotonic() + 15
        while not receiver.batches:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert receiver.batches[0]["events"][0]["sequence_number"] == 3
        time.sleep(0.5)
        assert sorted({r["sequence_number"] for r in receiver.delivered()}) == [3, 4, 5]
    finally:
        srv.stop()


def test_destinations_are_admin_only_and_must_be_public_https(base_url, make_key):
    tenant = f"dst-{int(time.time() * 1000)}"
    key = make_key(tenant, "read,write,admin")
    url = f"{base_url}/v1/destinations"
    if DISTRIBUTED:
        r = requests.post(url, json={"type": "webhook", "url": "https://example.com/x"}, headers=admin(key), timeout=10)
        assert r.status_code == 501 and r.json()["error"]["code"] == "not_implemented", r.text
        return
    for target, why in [
        ("http://127.0.0.1:9/hook", "plain http://"),
        ("https://127.0.0.1:9/hook", "not a public address"),
        ("https://169.254.169.254/latest", "not a public address"),
        ("https://[::1]/hook", "not a public address"),
        ("file:///etc/passwd", "scheme must be https"),
    ]:
        r = requests.post(url, json={"type": "webhook", "url": target}, headers=admin(key), timeout=10)
        assert r.status_code == 400, (target, r.text)
        assert r.json()["error"]["code"] == "invalid_destination" and why in r.json()["error"]["message"], r.text
    r = requests.post(url, json={"type": "carrier-pigeon", "url": "https://example.com"}, headers=admin(key), timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_field", r.text
    r = requests.post(url, data="[]", headers={**admin(key), "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_body", r.text
    for scopes in ("read", "write"):
        other = make_key(tenant, scopes)
        r = requests.get(url, headers=admin(other), timeout=10)
        assert r.status_code == 403, (scopes, r.text)
    assert requests.get(url, headers=admin(key), timeout=10).json() == {"destinations": []}
    r = requests.delete(f"{url}/dst_nope", headers=admin(key), timeout=10)
    assert r.status_code == 404, r.text
