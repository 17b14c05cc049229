"""The official fact0 SDK, unmodified, retries through sealtrail's `429` + `Retry-After`.

Starts its own embedded server (the binary of SEALTRAIL_BIN) with a per-key rate of
2 requests/s (bursts of 4), in either suite mode: the rate limit is the same code in
embedded and distributed mode, and the session server's generous limits are never hit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import fact0
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def limited_server(tmp_path):
    bin_path = Path(os.environ.get("SEALTRAIL_BIN", REPO_ROOT / "target" / "debug" / "sealtrail"))
    data = tmp_path / "data"
    http = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, SEALTRAIL_API_RATE_LIMIT_PER_KEY="2", SEALTRAIL_API_RATE_LIMIT_PER_TENANT="0")
    for k in [k for k in env if k.startswith("SEALTRAIL_") and k not in (
        "SEALTRAIL_API_RATE_LIMIT_PER_KEY", "SEALTRAIL_API_RATE_LIMIT_PER_TENANT", "SEALTRAIL_BIN"
    )]:
        del env[k]  # the distributed suite's settings are not for this server
    key = subprocess.run(
        [str(bin_path), "keys", "create", "--tenant", "limited", "--scopes", "read,write",
         "--data-dir", str(data)],
        capture_output=True, text=True, timeout=30, env=env, check=True,
    ).stdout.strip().splitlines()[-1]
    err = open(tmp_path / "server.stderr", "wb")
    proc = subprocess.Popen(
        [str(bin_path), "serve", "--data-dir", str(data), "--http-addr", http,
         "--grpc-addr", f"127.0.0.1:{_free_port()}"],
        stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env,
    )
    base = f"http://{http}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None, (tmp_path / "server.stderr").read_text()
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.05)
    yield base, key
    proc.terminate()
    proc.wait(timeout=30)
    err.close()


def test_the_sdk_retries_through_429(limited_server):
    base, key = limited_server
    # The raw answer first: 429 in the JSON envelope, with Retry-After.
    codes = []
    for _ in range(8):
        r = requests.get(f"{base}/v1/events", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        codes.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1
    assert 429 in codes, codes

    client = fact0.Client(api_key=key, base_url=base, raise_on_error=True)
    try:
        started = time.monotonic()
        res = client.audit.log_batch(
            [{"id": f"rl-{i}", "actor": {"id": "u", "type": "human"}, "action": "a.b",
              "resource": {"id": "r", "type": "doc"}, "outcome": "success"} for i in range(3)]
        )
        assert res["accepted"] == 3
        for i in range(6):
            rec = client.audit.get_event(event_id=f"rl-{i % 3}")
            assert rec["id"] == f"rl-{i % 3}"
        # Eight requests at 2/s after the burst was spent: the SDK waited, as told.
        assert time.monotonic() - started >= 2.0
    finally:
        client.close()
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert "sealtrail_rate_limited_total" in metrics
