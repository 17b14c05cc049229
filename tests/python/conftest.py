"""Fixtures for the end-to-end suites: one real sealtrail server per session.

The server is the binary named by SEALTRAIL_BIN (default
<repo>/target/debug/sealtrail), started in embedded mode on a fresh temporary
data dir with free loopback ports. Its stdout and stderr go to files; the tail
of stderr is attached to every failing test's report.

With SEALTRAIL_MODE=distributed the same suites run against distributed mode
instead: `sealtrail migrate` on fresh topics and keyspace, then a chainer and a
gateway on the Kafka and Cassandra named by SEALTRAIL_KAFKA_BROKERS and
SEALTRAIL_SCYLLA_NODES (default: the local ones `make up` starts); the tests
talk to the gateway.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "sealtrail"
READY_TIMEOUT_S = 30.0
KEY_RE = re.compile(r"^alk_live_\S+$")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, max_chars: int = 6000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return text[-max_chars:] if text else "(empty)"


@dataclass
class Server:
    bin: Path
    data_dir: Path
    http_addr: str
    grpc_addr: str
    proc: subprocess.Popen
    stderr_path: Path
    stdout_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.http_addr}"

    def stderr_tail(self, max_chars: int = 6000) -> str:
        return _tail(self.stderr_path, max_chars)

    def keys_list(self) -> str:
        """`sealtrail keys list` against this server's store: its stdout."""
        cmd = [str(self.bin), "keys", "list"]
        cmd += ["--store", "scylla"] if DISTRIBUTED else ["--data-dir", str(self.data_dir)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=_ENV)
        assert res.returncode == 0, f"`{' '.join(cmd)}` exited {res.returncode}\nstderr:\n{res.stderr}"
        return res.stdout

    def create_key(self, tenant: str, scopes: str = "read,write") -> str:
        """Run `sealtrail keys create` and return the raw key (last stdout line)."""
        cmd = [
            str(self.bin),
            "keys",
            "create",
            "--tenant",
            tenant,
            "--scopes",
            scopes,
        ]
        cmd += ["--store", "scylla"] if DISTRIBUTED else ["--data-dir", str(self.data_dir)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=_ENV)
        assert res.returncode == 0, (
            f"`{' '.join(cmd)}` exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        )
        lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
        assert lines, f"`keys create` printed nothing on stdout; stderr:\n{res.stderr}"
        key = lines[-1]
        assert KEY_RE.match(key), f"last stdout line of `keys create` is not an alk_live_ key: {key!r}"
        return key


_SERVER: Server | None = None

DISTRIBUTED = os.environ.get("SEALTRAIL_MODE") == "distributed"
_ENV = dict(os.environ)
if DISTRIBUTED:
    _NAME = f"py_{uuid.uuid4().hex[:10]}"
    _ENV.update(
        {
            "SEALTRAIL_KAFKA_TOPIC": f"{_NAME}-events",
            "SEALTRAIL_KAFKA_REPLY_TOPIC": f"{_NAME}-replies",
            "SEALTRAIL_KAFKA_REPLY_PARTITIONS": "2",
            "SEALTRAIL_KAFKA_GROUP_ID": _NAME,
            "SEALTRAIL_SCYLLA_KEYSPACE": _NAME,
            # The pruner runs every second (test_retention.py).
            "SEALTRAIL_RETENTION_INTERVAL": "1000ms",
        }
    )


def _wait_healthy(proc: subprocess.Popen, url: str, what: str, stderr_path: Path) -> None:
    deadline = time.monotonic() + 60
    last_err = "no attempt"
    while True:
        rc = proc.poll()
        if rc is not None:
            pytest.fail(f"{what} exited with {rc}\nstderr:\n{_tail(stderr_path)}", pytrace=False)
        try:
            r = requests.get(f"{url}/healthz", timeout=2)
            if r.status_code == 200:
                return
            last_err = f"GET /healthz -> {r.status_code}: {r.text[:200]}"
        except requests.RequestException as exc:
            last_err = repr(exc)
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready in 60 s ({last_err})\nstderr:\n{_tail(stderr_path)}", pytrace=False)
        time.sleep(0.2)


def _distributed_server(bin_path: Path, work: Path):
    """migrate, then one chainer and one gateway; yields the gateway as the Server."""
    res = subprocess.run(
        [str(bin_path), "migrate", "--partitions", "2"], capture_output=True, text=True, timeout=120, env=_ENV
    )
    assert res.returncode == 0, f"migrate failed:\n{res.stderr}"
    procs = []
    files = []
    try:
        chainer_addr = f"127.0.0.1:{_free_port()}"
        chainer_err = work / "chainer.stderr"
        files.append(open(chainer_err, "wb"))
        chainer = subprocess.Popen(
            [str(bin_path), "chainer", "--http-addr", chainer_addr],
            stdout=subprocess.DEVNULL, stderr=files[-1], stdin=subprocess.DEVNULL, env=_ENV,
        )
        procs.append(chainer)
        http_addr = f"127.0.0.1:{_free_port()}"
        grpc_addr = f"127.0.0.1:{_free_port()}"
        stderr_path = work / "gateway.stderr"
        stdout_path = work / "gateway.stdout"
        files.append(open(stderr_path, "wb"))
        files.append(open(stdout_path, "wb"))
        gateway = subprocess.Popen(
            [str(bin_path), "gateway", "--http-addr", http_addr, "--grpc-addr", grpc_addr],
            stdout=files[-1], stderr=files[-2], stdin=subprocess.DEVNULL, env=_ENV,
        )
        procs.append(gateway)
        _wait_healthy(chainer, f"http://{chainer_addr}", "sealtrail chainer", chainer_err)
        _wait_healthy(gateway, f"http://{http_addr}", "sealtrail gateway", stderr_path)
        # The chainer holds its partitions once its /healthz lists them all.
        deadline = time.monotonic() + 60
        while requests.get(f"http://{chainer_addr}/healthz", timeout=2).json().get("partitions") != [0, 1]:
            assert time.monotonic() < deadline, f"partitions never assigned:\n{_tail(chainer_err)}"
            time.sleep(0.2)
        yield Server(bin_path, work, http_addr, grpc_addr, gateway, stderr_path, stdout_path)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in files:
            f.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    global _SERVER
    bin_path = Path(os.environ.get("SEALTRAIL_BIN", str(DEFAULT_BIN)))
    if not bin_path.is_file():
        pytest.fail(
            f"sealtrail binary not found at {bin_path} (build it, or set SEALTRAIL_BIN)",
            pytrace=False,
        )

    work = tmp_path_factory.mktemp("sealtrail")
    if DISTRIBUTED:
        for srv in _distributed_server(bin_path, work):
            _SERVER = srv
            yield srv
        _SERVER = None
        return
    data_dir = work / "data"
    data_dir.mkdir()
    http_port = _free_port()
    grpc_port = _free_port()
    while grpc_port == http_port:
        grpc_port = _free_port()
    http_addr = f"127.0.0.1:{http_port}"
    grpc_addr = f"127.0.0.1:{grpc_port}"
    stderr_path = work / "server.stderr"
    stdout_path = work / "server.stdout"

    cmd = [
        str(bin_path),
        "serve",
        "--data-dir",
        str(data_dir),
        "--http-addr",
        http_addr,
        "--grpc-addr",
        grpc_addr,
    ]
    err_f = open(stderr_path, "wb")
    out_f = open(stdout_path, "wb")
    # The pruner runs every second (test_retention.py); it prunes only tenants with a
    # retention policy of their own.
    env = {**os.environ, "SEALTRAIL_RETENTION_INTERVAL": "1000ms"}
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL, env=env)
    srv = Server(bin_path, data_dir, http_addr, grpc_addr, proc, stderr_path, stdout_path)

    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_err = "no attempt"
        while True:
            rc = proc.poll()
            if rc is not None:
                pytest.fail(
                    f"sealtrail serve exited with {rc} before becoming ready\n"
                    f"command: {' '.join(cmd)}\nstderr:\n{srv.stderr_tail()}",
                    pytrace=False,
                )
            try:
                r = requests.get(f"{srv.base_url}/healthz", timeout=2)
                if r.status_code == 200:
                    break
                last_err = f"GET /healthz -> {r.status_code}: {r.text[:200]}"
            except requests.RequestException as exc:
                last_err = repr(exc)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"sealtrail serve not ready within {READY_TIMEOUT_S}s ({last_err})\n"
                    f"command: {' '.join(cmd)}\nstderr:\n{srv.stderr_tail()}",
                    pytrace=False,
                )
            time.sleep(0.1)

        _SERVER = srv
        yield srv
    finally:
        _SERVER = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        err_f.close()
        out_f.close()
        keep = os.environ.get("SEALTRAIL_KEEP_LOGS")
        if keep:
            dest = Path(keep)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(stderr_path, dest / "server.stderr")
            shutil.copy(stdout_path, dest / "server.stdout")


@pytest.fixture(scope="session")
def base_url(server: Server) -> str:
    return server.base_url


@dataclass
class Tenant:
    name: str
    key: str  # read,write

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _tenant_name(request) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_key(server: Server):
    """make_key(tenant, scopes="read,write") -> raw key."""

    def _make(tenant: str, scopes: str = "read,write") -> str:
        return server.create_key(tenant, scopes)

    return _make


@pytest.fixture
def new_tenant(server: Server, request):
    """new_tenant(suffix="") -> Tenant with a fresh unique name and a read,write key."""
    counter = {"n": 0}

    def _new(suffix: str = "") -> Tenant:
        counter["n"] += 1
        name = _tenant_name(request) + (f"-{suffix}" if suffix else f"-{counter['n']}")
        return Tenant(name=name, key=server.create_key(name, "read,write"))

    return _new


@pytest.fixture
def tenant(new_tenant) -> Tenant:
    """A fresh tenant (unique per test) with a read,write key."""
    return new_tenant()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVER is not None:
        report.sections.append(("sealtrail server stderr (tail)", _SERVER.stderr_tail(4000)))


class Embedded:
    """A private embedded server (SQLite store by default) that a test can stop, SIGKILL,
    edit behind and start again, with its own environment (`env`, on top of a clean one:
    the suite's SEALTRAIL_* variables are left out)."""

    def __init__(self, work: Path, env: dict[str, str] | None = None, store: str = "sqlite"):
        self.bin = Path(os.environ.get("SEALTRAIL_BIN", str(DEFAULT_BIN)))
        self.data = work / "data"
        self.work = work
        self.store = store
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEALTRAIL_") or k == "SEALTRAIL_BIN"}
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.grpc_addr = ""

    def start(self, *extra: str) -> None:
        port = _free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.grpc_addr = f"127.0.0.1:{_free_port()}"
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--store", self.store, "--data-dir", str(self.data),
             "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", self.grpc_addr, *extra],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "server.stderr", "ab"), env=self.env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, _tail(self.work / "server.stderr")
            try:
                if requests.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError("the private server did not start:\n" + _tail(self.work / "server.stderr"))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def stderr(self) -> str:
        return _tail(self.work / "server.stderr")

    def create_key(self, tenant: str, scopes: str = "read,write") -> str:
        out = subprocess.run(
            [str(self.bin), "keys", "create", "--tenant", tenant, "--scopes", scopes,
             "--store", self.store, "--data-dir", str(self.data)],
            capture_output=True, text=True, timeout=30, check=True, env=self.env,
        )
        return out.stdout.strip().splitlines()[-1]
