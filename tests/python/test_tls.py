"""Native TLS (`tls_cert_file`, `tls_key_file`): REST over HTTPS with `requests`, gRPC
over TLS with grpcio, both verifying against a test CA; the pair reloaded on SIGHUP
(new connections get the new certificate, a broken pair is refused and the old one kept);
and clear start errors for a half or mismatched configuration.

Starts its own embedded servers (the binary of SEALTRAIL_BIN) in either suite mode: the
TLS edge is the same code in embedded and distributed mode.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SEALTRAIL_BIN", REPO_ROOT / "target" / "debug" / "sealtrail"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALTRAIL_")}
    env.update(extra)
    return env


class Ca:
    """A test certificate authority that issues leaf certificates for 127.0.0.1."""

    def __init__(self, work: Path):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealtrail test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = work / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cert_path: Path, key_path: Path, cn: str) -> str:
        """Writes a fresh leaf (new key) to the two files; returns its SHA-256 fingerprint."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _served_fingerprint(addr: str, ca: Path) -> str:
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


@pytest.fixture
def tls_server(tmp_path):
    ca = Ca(tmp_path)
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    first = ca.issue(cert, key, "first")
    data = tmp_path / "data"
    env = _env(
        SEALTRAIL_API_TLS_CERT_FILE=str(cert),
        SEALTRAIL_API_TLS_KEY_FILE=str(key),
        SEALTRAIL_API_RATE_LIMIT_PER_KEY="0",
    )
    api_key = subprocess.run(
        [str(BIN), "keys", "create", "--tenant", "tls", "--scopes", "read,write", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=30, env=env, check=True,
    ).stdout.strip().splitlines()[-1]
    http, grpc_addr = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    err_path = tmp_path / "server.stderr"
    err = open(err_path, "wb")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--data-dir", str(data), "--http-addr", http, "--grpc-addr", grpc_addr],
        stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env,
    )
    base = f"https://{http}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1, verify=str(ca.path)).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None, err_path.read_text()
        assert time.monotonic() < deadline, f"TLS server not ready\n{err_path.read_text()}"
        time.sleep(0.05)
    yield {
        "base": base, "http": http, "grpc": grpc_addr, "key": api_key, "ca": ca, "cert": cert,
        "tls_key": key, "first": first, "proc": proc, "stderr": err_path,
    }
    proc.terminate()
    proc.wait(timeout=30)
    err.close()


def test_rest_and_grpc_over_tls(tls_server):
    s = tls_server
    ca = str(s["ca"].path)
    assert "listening on https://" in s["stderr"].read_text()
    headers = {"Authorization": f"Bearer {s['key']}"}
    event = {"id": "tls-1", "actor": {"id": "u", "type": "human"}, "action": "doc.read",
             "resource": {"id": "r", "type": "doc"}, "outcome": "success"}
    r = requests.post(f"{s['base']}/v1/events?sync=true", json=event, headers=headers, timeout=10, verify=ca)
    assert r.status_code == 201, r.text
    assert r.json()["sequence_number"] == 1
    r = requests.get(f"{s['base']}/v1/events/tls-1", headers=headers, timeout=10, verify=ca)
    assert r.status_code == 200 and r.json()["hash"], r.text
    # A client that does not trust the CA is refused; plain HTTP gets no answer.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{s['base']}/healthz", timeout=5)
    with pytest.raises(requests.RequestException):
        requests.get(f"http://{s['http']}/healthz", timeout=5)

    # gRPC over TLS: the standard health service answers SERVING.
    creds = grpc.ssl_channel_credentials(root_certificates=s["ca"].path.read_bytes())
    with grpc.secure_channel(s["grpc"], creds) as ch:
        grpc.channel_ready_future(ch).result(timeout=15)
        check = ch.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda _: b"",
            response_deserializer=lambda b: b,
        )
        # HealthCheckResponse{status: SERVING(1)} is the two bytes 08 01.
        assert check(None, timeout=10) == b"\x08\x01"


def test_sighup_reloads_the_certificate_and_keeps_it_when_the_new_one_is_broken(tls_server):
    s = tls_server
    ca = s["ca"].path
    assert _served_fingerprint(s["http"], ca) == s["first"]
    assert _served_fingerprint(s["grpc"], ca) == s["first"]
    # A connection opened before the reload keeps working after it.
    before = requests.Session()
    assert before.get(f"{s['base']}/healthz", timeout=5, verify=str(ca)).status_code == 200

    second = s["ca"].issue(s["cert"], s["tls_key"], "second")
    s["proc"].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _served_fingerprint(s["http"], ca) != second:
        assert time.monotonic() < deadline, f"not reloaded\n{s['stderr'].read_text()}"
        time.sleep(0.05)
    assert _served_fingerprint(s["grpc"], ca) == second
    assert before.get(f"{s['base']}/healthz", timeout=5, verify=str(ca)).status_code == 200

    # A renewal that went wrong (the key of another certificate): refused, old pair kept.
    other_cert, other_key = s["cert"].parent / "other.pem", s["cert"].parent / "other.key"
    s["ca"].issue(other_cert, other_key, "other")
    s["tls_key"].write_bytes(other_key.read_bytes())
    s["proc"].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "NOT reloaded" not in s["stderr"].read_text():
        assert time.monotonic() < deadline, s["stderr"].read_text()
        time.sleep(0.05)
    assert "does not belong to the certificate" in s["stderr"].read_text()
    assert s["proc"].poll() is None
    assert _served_fingerprint(s["http"], ca) == second
    metrics = requests.get(f"{s['base']}/metrics", timeout=5, verify=str(ca)).text
    assert 'sealtrail_tls_reloads_total{result="ok"} 1' in metrics
    assert 'sealtrail_tls_reloads_total{result="failed"} 1' in metrics


def test_tls_misconfiguration_stops_the_start_with_a_clear_message(tmp_path):
    ca = Ca(tmp_path)
    cert, key = tmp_path / "a.pem", tmp_path / "a.key"
    ca.issue(cert, key, "a")
    other_cert, other_key = tmp_path / "b.pem", tmp_path / "b.key"
    ca.issue(other_cert, other_key, "b")

    def start(**tls: str) -> str:
        res = subprocess.run(
            [str(BIN), "serve", "--data-dir", str(tmp_path / "data"),
             "--http-addr", f"127.0.0.1:{_free_port()}", "--grpc-addr", f"127.0.0.1:{_free_port()}"],
            capture_output=True, text=True, timeout=30, env=_env(**tls),
        )
        assert res.returncode != 0, res.stderr
        return res.stderr

    assert "tls_cert_file and tls_key_file go together" in start(SEALTRAIL_API_TLS_CERT_FILE=str(cert))
    msg = start(SEALTRAIL_API_TLS_CERT_FILE=str(cert), SEALTRAIL_API_TLS_KEY_FILE=str(other_key))
    assert "does not belong to the certificate" in msg and str(other_key) in msg, msg
    msg = start(SEALTRAIL_API_TLS_CERT_FILE=str(tmp_path / "missing.pem"), SEALTRAIL_API_TLS_KEY_FILE=str(key))
    assert "missing.pem" in msg and "tls_cert_file" in msg, msg
