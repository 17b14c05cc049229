"""Log streams (issue 17): every committed event delivered to a real receiver in order, at
least once, with the checkpoint that covers it — across receiver outages, a 429 with
Retry-After, a paused destination resumed from a chosen record, and a SIGKILL of the
server; to a webhook, a Splunk HTTP Event Collector and a syslog receiver (TLS and plain
TCP), managed over REST, gRPC and the `sealtrail destinations` command.

The receivers are local servers started here: a webhook receiver that checks every
request's HMAC; a Splunk HEC stand-in that checks the token and HEC's wire format; a
syslog receiver that parses RFC 6587 octet-counted RFC 5424 messages, in TLS or not. Each
can be told to fail, and the delivered chain is checked here (hashes recomputed with
`rfc8785`, links, the checkpoint's Ed25519 signature with `cryptography`).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

import grpc

from conftest import Embedded
from e2e_util import jcs_hash
from test_grpc_interop import pb  # noqa: F401  (the fixture: stubs generated from proto/)
from test_tls import Ca
from test_verifiable_log import open_note, parse_checkpoint

ZERO = "0" * 64


class Collected:
    """What a receiver kept: each acknowledged batch as `{"tenant_id","events","checkpoint"}`."""

    def __init__(self) -> None:
        self.batches: list[dict] = []  # acknowledged deliveries, in arrival order
        self.attempts: list[float] = []  # arrival time of every request or connection
        self.bad_signatures = 0  # requests refused for their signature, token or format
        # What the receiver found wrong in a delivery (its thread cannot fail the test;
        # check_delivery asserts this is empty).
        self.bad_format: list[str] = []
        self.lock = threading.Lock()

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


class Receiver(Collected):
    """A webhook receiver: checks `Sealtrail-Signature`, answers as `script` says (then
    `mode`), keeps each acknowledged batch."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__()
        self.secret = b""
        self.mode = 200
        self.script: list[tuple[int, dict[str, str]]] = []
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

    def close(self) -> None:
        self.server.shutdown()


class Hec(Collected):
    """A Splunk HTTP Event Collector stand-in: `POST /services/collector/event` with
    `Authorization: Splunk <token>` and a body of concatenated HEC event objects, answered
    as Splunk does (`{"text","code"}`), or with `mode` (503: busy)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.mode = 200
        self.delay = 0.0  # seconds to wait before answering (a collector too slow to answer)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def answer(self, status: int, text: str, code: int) -> None:
                body = json.dumps({"text": text, "code": code}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                if outer.delay:
                    time.sleep(outer.delay)
                with outer.lock:
                    outer.attempts.append(time.monotonic())
                    if self.path != "/services/collector/event":
                        return self.answer(404, "The requested URL was not found on this server.", 404)
                    if self.headers.get("Authorization") != f"Splunk {outer.token}":
                        outer.bad_signatures += 1
                        return self.answer(401, "Invalid authorization", 3)
                    batch = outer.parse(body)
                    if batch is None:
                        return self.answer(400, "Invalid data format", 6)
                    if outer.mode != 200:
                        return self.answer(outer.mode, "Server is busy", 9)
                    outer.batches.append(batch)
                self.answer(200, "Success", 0)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def parse(self, body: str) -> dict | None:
        """HEC's format: JSON objects one after another, each with `event`, a numeric `time`."""
        decoder = json.JSONDecoder()
        at, events, checkpoint, tenant = 0, [], None, None
        while True:
            while at < len(body) and body[at].isspace():
                at += 1
            if at == len(body):
                break
            item, at = decoder.raw_decode(body, at)
            ok = (
                isinstance(item.get("time"), (int, float))
                and item.get("source") == "sealtrail"
                and isinstance(item.get("event"), dict)
                and set(item.get("fields", {})) == {"tenant_id"}
            )
            if not ok:
                self.bad_format.append(json.dumps(item))
                return None
            tenant = item["fields"]["tenant_id"]
            if item["sourcetype"] == "sealtrail:audit":
                record = item["event"]
                # HEC's `time` is the event's own time
                expected = datetime.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
                if abs(item["time"] - expected) > 0.001:
                    self.bad_format.append(f"time {item['time']} for {record['timestamp']}")
                    return None
                events.append(record)
            elif item["sourcetype"] == "sealtrail:checkpoint":
                if not events or item["event"]["through_sequence_number"] != events[-1]["sequence_number"]:
                    self.bad_format.append(f"a checkpoint event not after the batch's last record: {item}")
                    return None
                checkpoint = item["event"]["checkpoint"]
            else:
                self.bad_format.append(json.dumps(item))
                return None
        return {"tenant_id": tenant, "events": events, "checkpoint": checkpoint}

    def close(self) -> None:
        self.server.shutdown()


SYSLOG = re.compile(r"<(\d+)>1 (\S+) - sealtrail - (audit|checkpoint) - \ufeff(.*)", re.DOTALL)


class Syslog(Collected):
    """A syslog receiver over TCP (TLS with `tls`): reads each connection to its end,
    parses the octet-counted RFC 5424 frames, then closes. `mode` "hangup" closes each
    connection at once, unread (the sender must try again)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__()
        self.mode = "ok"
        self.priorities: dict[int, int] = {}  # sequence number -> PRI
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.take, args=(conn,), daemon=True).start()

    def take(self, conn: socket.socket) -> None:
        with self.lock:
            self.attempts.append(time.monotonic())
            hangup = self.mode == "hangup"
        if hangup:
            conn.close()
            return
        try:
            if self.ctx:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        except (OSError, ssl.SSLError):
            conn.close()
            return
        try:
            batch = self.parse(data)
        except (AssertionError, ValueError, KeyError, IndexError) as e:
            with self.lock:
                self.bad_format.append(f"{type(e).__name__}: {e}")
            batch = None
        conn.close()
        if batch is not None:
            with self.lock:
                self.batches.append(batch)

    def parse(self, data: bytes) -> dict | None:
        events, checkpoint = [], None
        while data:
            length, _, rest = data.partition(b" ")
            n = int(length)
            message, data = rest[:n].decode(), rest[n:]
            m = SYSLOG.fullmatch(message)
            assert m, f"not an RFC 5424 message of sealtrail: {message[:200]!r}"
            pri, stamp, msgid, body = int(m[1]), m[2], m[3], json.loads(m[4])
            if msgid == "audit":
                assert stamp == body["created_at"], (stamp, body["created_at"])
                self.priorities[body["sequence_number"]] = pri
                events.append(body)
            else:
                assert body["through_sequence_number"] == events[-1]["sequence_number"]
                checkpoint = body["checkpoint"]
        if not events:
            return None
        return {"tenant_id": events[0]["tenant_id"], "events": events, "checkpoint": checkpoint}

    def close(self) -> None:
        self.sock.close()


def post(base_url: str, key: str, n: int, tag: str, outcome: str = "success") -> None:
    events = [
        {
            "actor": {"id": f"u{i}", "type": "human"},
            "action": f"stream.{tag}",
            "resource": {"id": f"r{i}", "type": "doc"},
            "outcome": outcome,
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


def check_delivery(receiver: Collected, vkey: str, tenant: str, total: int) -> None:
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
    assert not receiver.bad_format, receiver.bad_format


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
    # (in distributed mode through a gateway: the chainers deliver)
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


def wait_status(base_url: str, key: str, dest: str, want: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = requests.get(f"{base_url}/v1/destinations/{dest}", headers=admin(key), timeout=10).json()
        if status["status"] == want:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_splunk_hec_gets_every_event_in_hec_format_in_order_across_a_busy_and_a_slow_collector(tmp_path: Path):
    hec = Hec(token="5e1c-7ab2-hec-token")
    srv = Embedded(tmp_path, env={"SEALTRAIL_STREAM_ALLOW_PRIVATE": "true", "SEALTRAIL_STREAM_REQUEST_TIMEOUT": "1s"})
    key = srv.create_key("acme", "read,write,admin")
    srv.start()
    try:
        vkey = requests.get(f"{srv.base_url}/v1/log/key", headers=admin(key), timeout=10).json()["verifier_key"]
        url = f"{srv.base_url}/v1/destinations"
        # the token is checked like every field: it must be there, without spaces
        r = requests.post(url, json={"type": "splunk_hec", "url": hec.url}, headers=admin(key), timeout=10)
        assert r.status_code == 400 and "token" in r.json()["error"]["message"], r.text
        r = requests.post(
            url, json={"type": "splunk_hec", "url": hec.url, "token": hec.token}, headers=admin(key), timeout=10
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert "secret" not in created and hec.token not in json.dumps(created), "the token is never shown back"
        assert created["url"] == hec.url + "/services/collector/event", created
        dest = created["id"]

        post(srv.base_url, key, 30, "hec")
        post(srv.base_url, key, 5, "hec-denied", outcome="failure")
        hec.wait_for(35)

        hec.mode = 503  # Splunk's "server is busy"
        post(srv.base_url, key, 25, "busy")
        status = wait_status(srv.base_url, key, dest, "failing")
        assert "503" in status["last_error"] and "Server is busy" in status["last_error"], status
        assert status["delivered_through"] == 35 and status["lag"] == 25, status
        metrics = requests.get(f"{srv.base_url}/metrics", timeout=10).text
        assert f'sealtrail_stream_failing{{tenant="acme",destination="{dest}"}} 1' in metrics, metrics
        hec.mode = 200
        hec.wait_for(60, timeout=60)

        # Too slow: no answer within stream.request_timeout is a failure, retried (what
        # the collector kept meanwhile may come again: at least once).
        wait_status(srv.base_url, key, dest, "delivering")
        hec.delay = 1.5
        post(srv.base_url, key, 10, "slow")
        status = wait_status(srv.base_url, key, dest, "failing")
        assert "timed out" in status["last_error"], status
        assert status["delivered_through"] == 60, status
        hec.delay = 0
        hec.wait_for(70, timeout=60)
        check_delivery(hec, vkey, "acme", 70)
        status = wait_status(srv.base_url, key, dest, "delivering")
        metrics = requests.get(f"{srv.base_url}/metrics", timeout=10).text
        assert f'sealtrail_stream_failing{{tenant="acme",destination="{dest}"}} 0' in metrics, metrics
    finally:
        srv.stop()
        hec.close()


def test_syslog_over_tls_gets_every_event_in_order_across_hangups_and_a_sigkill(tmp_path: Path):
    ca = Ca(tmp_path)
    ca.issue(tmp_path / "syslog.pem", tmp_path / "syslog.key", "syslog")
    syslog = Syslog(tls=(tmp_path / "syslog.pem", tmp_path / "syslog.key"))
    srv = Embedded(tmp_path, env={"SEALTRAIL_STREAM_ALLOW_PRIVATE": "true", "SEALTRAIL_STREAM_CA_FILE": str(ca.path)})
    key = srv.create_key("acme", "read,write,admin")
    srv.start()
    try:
        vkey = requests.get(f"{srv.base_url}/v1/log/key", headers=admin(key), timeout=10).json()["verifier_key"]
        r = requests.post(
            f"{srv.base_url}/v1/destinations", json={"type": "syslog", "host": syslog.host}, headers=admin(key), timeout=10
        )
        assert r.status_code == 201, r.text
        dest = r.json()["id"]
        assert r.json()["url"] == f"syslog+tls://{syslog.host}" and "secret" not in r.json(), r.text

        post(srv.base_url, key, 20, "syslog")
        post(srv.base_url, key, 5, "syslog-failed", outcome="error")
        syslog.wait_for(25)

        # The receiver hangs up on every connection: nothing it did not read counts.
        syslog.mode = "hangup"
        post(srv.base_url, key, 15, "hangup")
        status = wait_status(srv.base_url, key, dest, "failing")
        assert status["delivered_through"] == 25 and status["lag"] == 15, status
        syslog.mode = "ok"
        syslog.wait_for(40, timeout=60)

        post(srv.base_url, key, 10, "killed")
        srv.kill()
        srv.start()
        syslog.wait_for(50)
        check_delivery(syslog, vkey, "acme", 50)
        # facility 13 (log audit); severity informational for success, notice otherwise
        assert {syslog.priorities[s] for s in range(1, 21)} == {110}
        assert {syslog.priorities[s] for s in range(21, 26)} == {109}
    finally:
        srv.stop()
        syslog.close()


def test_destinations_are_managed_by_the_command_line(tmp_path: Path):
    """`sealtrail destinations …` against a running server: create (syslog over plain TCP,
    allowed here), list, resume from a record, delete; the server's refusals exit 1."""
    syslog = Syslog()
    srv = Embedded(tmp_path, env={"SEALTRAIL_STREAM_ALLOW_PRIVATE": "true"})
    key = srv.create_key("acme", "read,write,admin")
    srv.start()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(srv.bin), "destinations", *args, "--url", srv.base_url, "--api-key", key],
            capture_output=True, text=True, timeout=60, env=srv.env,
        )

    try:
        out = cli("create", "syslog", syslog.host, "--no-tls")
        assert out.returncode == 0, out.stderr
        created = json.loads(out.stdout)
        dest = created["id"]
        assert created["url"] == f"syslog+tcp://{syslog.host}" and created["type"] == "syslog", created
        post(srv.base_url, key, 12, "cli")
        syslog.wait_for(12)
        listed = cli("list")
        assert listed.returncode == 0 and dest in listed.stdout and "syslog+tcp://" in listed.stdout, listed
        as_json = json.loads(cli("list", "--json").stdout)
        assert [d["id"] for d in as_json["destinations"]] == [dest]

        first = len(syslog.batches)
        out = cli("resume", dest, "--from", "5")
        assert out.returncode == 0 and json.loads(out.stdout)["delivered_through"] == 4, out
        deadline = time.monotonic() + 15
        while len(syslog.batches) == first:
            assert time.monotonic() < deadline, "nothing sent again after the resume"
            time.sleep(0.05)
        assert syslog.batches[first]["events"][0]["sequence_number"] == 5

        out = cli("delete", dest)
        assert out.returncode == 0 and "deleted" in out.stdout, out
        out = cli("show", dest)
        assert out.returncode == 1 and "no destination" in out.stderr, out
        out = cli("create", "webhook", "ftp://example.com/x")
        assert out.returncode == 1 and "invalid_destination" in out.stderr, out
        out = subprocess.run(
            [str(srv.bin), "destinations", "list", "--url", "http://127.0.0.1:9", "--api-key", key],
            capture_output=True, text=True, timeout=60, env=srv.env,
        )
        assert out.returncode == 2 and "127.0.0.1:9" in out.stderr, out
        assert not syslog.bad_format, syslog.bad_format
    finally:
        srv.stop()
        syslog.close()


def test_destinations_are_managed_over_grpc(tmp_path: Path, pb):
    m, services = pb
    hec = Hec(token="grpc-token")
    srv = Embedded(tmp_path, env={"SEALTRAIL_STREAM_ALLOW_PRIVATE": "true"})
    key = srv.create_key("acme", "read,write,admin")
    reader = srv.create_key("acme", "read")
    srv.start()
    md = (("authorization", f"Bearer {key}"),)
    try:
        with grpc.insecure_channel(srv.grpc_addr) as channel:
            stub = services.AuditLogStub(channel)
            created = stub.CreateDestination(
                m.CreateDestinationRequest(type="splunk_hec", url=hec.url, token=hec.token), metadata=md
            )
            dest = created.destination.id
            assert dest.startswith("dst_") and not created.HasField("secret")
            assert created.destination.type == "splunk_hec" and created.destination.status == "delivering"
            post(srv.base_url, key, 8, "grpc")
            hec.wait_for(8)
            listed = stub.ListDestinations(m.ListDestinationsRequest(), metadata=md)
            assert [d.id for d in listed.destinations] == [dest]
            deadline = time.monotonic() + 10
            while (got := stub.GetDestination(m.GetDestinationRequest(id=dest), metadata=md).destination).lag:
                assert time.monotonic() < deadline, got
                time.sleep(0.1)
            assert got.delivered_through == 8 and got.HasField("last_success_at") and not got.HasField("last_error")

            first = len(hec.batches)
            resumed = stub.ResumeDestination(m.ResumeDestinationRequest(id=dest, from_sequence=1), metadata=md)
            assert resumed.destination.delivered_through == 0
            deadline = time.monotonic() + 15
            while len(hec.batches) == first:
                assert time.monotonic() < deadline, "nothing sent again after the resume"
                time.sleep(0.05)
            assert hec.batches[first]["events"][0]["sequence_number"] == 1

            stub.DeleteDestination(m.DeleteDestinationRequest(id=dest), metadata=md)
            for call, request in [
                (stub.GetDestination, m.GetDestinationRequest(id=dest)),
                (stub.DeleteDestination, m.DeleteDestinationRequest(id=dest)),
            ]:
                with pytest.raises(grpc.RpcError) as err:
                    call(request, metadata=md)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as err:
                stub.CreateDestination(m.CreateDestinationRequest(type="pigeon", url=hec.url), metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "type must be" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                stub.ListDestinations(m.ListDestinationsRequest(), metadata=(("authorization", f"Bearer {reader}"),))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert not hec.bad_format, hec.bad_format
    finally:
        srv.stop()
        hec.close()
