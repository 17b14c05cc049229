"""The web console (`/console`, issue 16) in a real browser.

Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium against
the real server: sign in, filter, page, the live tail receiving an event sent during the
test, the browser's own verification passing on an honest log and failing, with the
failing step named, once a record is changed behind the server. A screenshot of each page
goes to `target/console-screenshots/` (CI keeps it as an artifact).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import REPO_ROOT, Embedded, _free_port
from e2e_util import jcs_hash

SHOTS = REPO_ROOT / "target" / "console-screenshots"
DOWNLOADS = SHOTS / "downloads"
WAIT_S = 20


def _find(program: str, fallback: str) -> str:
    found = shutil.which(program) or fallback
    if not Path(found).exists():
        pytest.fail(f"{program} not found: install Debian's chromium and chromium-driver", pytrace=False)
    return found


@pytest.fixture(scope="module")
def browser():
    opts = Options()
    opts.binary_location = _find("chromium", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1100"):
        opts.add_argument(arg)
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    opts.add_experimental_option("prefs", {"download.default_directory": str(DOWNLOADS)})
    driver = webdriver.Chrome(service=ChromeService(_find("chromedriver", "/usr/bin/chromedriver")), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(DOWNLOADS)})
    try:
        yield driver
    finally:
        driver.quit()


def downloaded(name: str) -> Path | bool:
    """The finished download `name`, or False while it is missing or in progress."""
    path = DOWNLOADS / name
    if path.exists() and not (DOWNLOADS / (name + ".crdownload")).exists() and path.stat().st_size > 0:
        return path
    return False


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver, condition, what: str):
    try:
        return WebDriverWait(driver, WAIT_S).until(condition)
    except Exception as exc:  # pragma: no cover - the message is what matters
        shot(driver, "failure-" + uuid.uuid4().hex[:6])
        logs = ""
        try:
            logs = "\n".join(str(e) for e in driver.get_log("browser"))
        except Exception:
            pass
        raise AssertionError(f"timed out waiting for {what}\nbrowser log:\n{logs}") from exc


def by_id(driver, element_id: str):
    return driver.find_element(By.ID, element_id)


def rows(driver) -> list[int]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#events tbody tr'), tr => Number(tr.dataset.seq))"
    )


def sign_in(driver, base_url: str, key: str) -> None:
    driver.get(base_url + "/console")
    driver.execute_script("sessionStorage.clear(); localStorage.clear();")
    driver.get(base_url + "/console")
    field = by_id(driver, "apikey")
    field.clear()
    field.send_keys(key)
    by_id(driver, "signin-form").submit()
    wait(driver, lambda d: by_id(d, "app").is_displayed() and rows(d), "the events table after signing in")


def post(base_url: str, key: str, events: list[dict]) -> None:
    r = requests.post(
        f"{base_url}/v1/events/batch?sync=true",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def event(i: int, action: str, outcome: str = "success") -> dict:
    return {
        "actor": {"id": f"user-{i % 3}", "type": "human"},
        "action": action,
        "resource": {"id": f"doc-{i}", "type": "document"},
        "outcome": outcome,
        "metadata": {"i": i, "note": "<b>not html</b>"},
    }


def steps(driver, list_id: str, count: int) -> dict[str, str]:
    """Waits until `count` steps have a result; returns {step name: result}."""

    def done(d):
        items = d.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]), li =>"
            " [li.querySelector('.name').textContent, li.dataset.result || '', li.querySelector('.detail').textContent])",
            f"#{list_id} li",
        )
        results = [r for _, r, _ in items]
        if "fail" in results or (len(items) >= count and all(results)):
            for name, result, detail in items:
                print(f"{list_id}: {result or '...'} {name}: {detail}")
            return {name: result for name, result, _ in items}
        return False

    return wait(driver, done, f"{count} verification steps in #{list_id}")


def step_detail(driver, list_id: str, name_part: str) -> str:
    for li in driver.find_elements(By.CSS_SELECTOR, f"#{list_id} li"):
        if name_part in li.find_element(By.CSS_SELECTOR, ".name").text:
            return li.find_element(By.CSS_SELECTOR, ".detail").text
    raise AssertionError(f"no step named like {name_part!r}")


def open_event(driver, seq: int) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#events button[aria-label="Open event {seq}"]').click()
    wait(driver, lambda d: by_id(d, "detail").is_displayed(), f"event #{seq}'s view")


def test_sign_in_filter_page_and_live_tail(browser, base_url, make_key):
    key = make_key(f"console-{uuid.uuid4().hex[:8]}")
    post(base_url, key, [event(i, "document.delete" if i % 2 else "document.read") for i in range(60)])

    browser.get(base_url + "/console")
    browser.execute_script("sessionStorage.clear(); localStorage.clear();")
    browser.get(base_url + "/console")
    shot(browser, "sign-in")
    by_id(browser, "apikey").send_keys("alk_live_not_a_real_key")
    by_id(browser, "signin-form").submit()
    wait(browser, lambda d: "401" in by_id(d, "signin-error").text, "the 401 message")
    assert not by_id(browser, "app").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('sealtrail.key')") is None, "a refused key is not kept"

    sign_in(browser, base_url, key)
    assert rows(browser) == list(range(1, 51)), "the first page, in sequence order"
    assert "60 matching events" in by_id(browser, "summary").text
    # event content is shown as text, never as markup
    assert not browser.find_elements(By.CSS_SELECTOR, "#events b")
    shot(browser, "events")

    by_id(browser, "next").click()
    wait(browser, lambda d: rows(d) == list(range(51, 61)), "the second page")
    by_id(browser, "prev").click()
    wait(browser, lambda d: rows(d) == list(range(1, 51)), "the first page again")

    by_id(browser, "filters").find_element(By.NAME, "action").send_keys("document.delete")
    Select(by_id(browser, "filters").find_element(By.NAME, "page_size")).select_by_visible_text("25")
    by_id(browser, "filters").submit()
    wait(browser, lambda d: rows(d) == list(range(2, 51, 2)), "the filtered first page")
    assert "30 matching events" in by_id(browser, "summary").text
    actions = {td.text for td in browser.find_elements(By.CSS_SELECTOR, "#events tbody td:nth-child(4)")}
    assert actions == {"document.delete"}
    by_id(browser, "next").click()
    wait(browser, lambda d: rows(d) == list(range(52, 61, 2)), "the filtered second page")

    # Export what the filter matches (all pages), and the evidence pack.
    for name in ("events.csv", "events.jsonl", "evidence-pack.zip"):
        (DOWNLOADS / name).unlink(missing_ok=True)
    by_id(browser, "export-csv").click()
    csv_file = wait(browser, lambda d: downloaded("events.csv"), "events.csv")
    table = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    assert [int(r["sequence_number"]) for r in table] == list(range(2, 61, 2))
    assert {r["action"] for r in table} == {"document.delete"}
    by_id(browser, "export-jsonl").click()
    jsonl = wait(browser, lambda d: downloaded("events.jsonl"), "events.jsonl")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["sequence_number"] for r in records] == list(range(2, 61, 2))
    assert all(jcs_hash(r) == r["hash"] for r in records), "records exported as committed"
    by_id(browser, "export-pack").click()
    pack = wait(browser, lambda d: downloaded("evidence-pack.zip"), "evidence-pack.zip")
    assert zipfile.is_zipfile(pack)

    by_id(browser, "clear").click()
    wait(browser, lambda d: rows(d) == list(range(1, 51)), "the unfiltered first page")
    by_id(browser, "tail").click()
    assert by_id(browser, "tail").get_attribute("aria-pressed") == "true"
    time.sleep(1.0)  # the stream opens at the head; what commits after it arrives
    post(base_url, key, [event(99, "tail.arrived")])
    wait(browser, lambda d: 61 in rows(d), "the tailed event #61")
    last = browser.find_element(By.CSS_SELECTOR, '#events tr[data-seq="61"]')
    assert "tail.arrived" in last.text
    shot(browser, "live-tail")
    by_id(browser, "tail").click()
    assert by_id(browser, "tail").get_attribute("aria-pressed") == "false"


def test_the_browser_verifies_an_event_and_the_chain(browser, base_url, make_key):
    key = make_key(f"console-{uuid.uuid4().hex[:8]}")
    post(base_url, key, [event(i, "user.login", "failure" if i == 4 else "success") for i in range(12)])
    sign_in(browser, base_url, key)

    open_event(browser, 5)
    assert '"sequence_number": 5' in by_id(browser, "record-json").text
    by_id(browser, "verify-event").click()
    result = steps(browser, "steps", 6)
    assert "fail" not in result.values(), by_id(browser, "steps").text
    assert result["Record hash (SHA-256 of its JCS form)"] == "pass"
    assert result["Checkpoint signature (Ed25519)"] == "pass"
    assert result["Inclusion proof (RFC 9162) to the checkpoint's root"] == "pass"
    assert result["Log key"] == "warn", "an unpinned key is only the server's word"
    wait(browser, lambda d: '"valid": true' in by_id(d, "server-verify").text, "the server's own verdict beside")

    # Pin the key the operator published: the signature is then checked against it.
    vkey = requests.get(f"{base_url}/v1/log/key", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()[
        "verifier_key"
    ]
    by_id(browser, "pinned").clear()
    by_id(browser, "pinned").send_keys(vkey)
    by_id(browser, "pin-form").submit()
    wait(browser, lambda d: "Pinned" in by_id(d, "pin-status").text, "the pinned key")
    post(base_url, key, [event(99, "user.logout")])  # the next checkpoint is larger
    by_id(browser, "verify-event").click()
    time.sleep(0.2)
    result = steps(browser, "steps", 6)
    assert set(result.values()) == {"pass"}, result
    assert "extends the tree of size 12" in step_detail(browser, "steps", "Consistent")
    shot(browser, "verify-event")

    # A key that is not the log's: the signature step fails and says so.
    name, _, raw_key = vkey.split("+", 2)
    other = f"{name}+00000000+{raw_key}"
    browser.execute_script("localStorage.setItem('sealtrail.pinnedKey', arguments[0])", other)
    by_id(browser, "verify-event").click()
    time.sleep(0.2)
    result = steps(browser, "steps", 2)
    assert result["Log key"] == "fail", result
    browser.execute_script("localStorage.setItem('sealtrail.pinnedKey', arguments[0])", vkey)

    # A tree of the same size with another root remembered from before: a fork, named.
    origin = browser.execute_script("return Object.keys(JSON.parse(localStorage.getItem('sealtrail.checkpoints')))[0]")
    browser.execute_script(
        "localStorage.setItem('sealtrail.checkpoints', JSON.stringify({[arguments[0]]: {size: 13, root: '00'.repeat(32)}}))",
        origin,
    )
    by_id(browser, "verify-event").click()
    time.sleep(0.2)
    result = steps(browser, "steps", 5)
    assert result["Consistent with the checkpoints this browser saw before"] == "fail", result
    assert "a fork" in step_detail(browser, "steps", "Consistent")
    browser.execute_script("localStorage.removeItem('sealtrail.checkpoints')")

    by_id(browser, "verify-chain").click()
    wait(browser, lambda d: "The log verifies" in by_id(d, "chain-status").text, "the chain verification")
    assert by_id(browser, "chain-progress").get_attribute("value") == "13"
    result = steps(browser, "chain-steps", 6)
    assert set(result.values()) == {"pass"}, result
    wait(browser, lambda d: '"valid": true' in by_id(d, "chain-server").text, "the server's chain verdict beside")
    shot(browser, "verify-chain")

    # Keyboard only: tab to an event's link and open it with Enter.
    from selenium.webdriver.common.keys import Keys

    by_id(browser, "close-detail").click()
    link = browser.find_element(By.CSS_SELECTOR, '#events button[aria-label="Open event 7"]')
    browser.execute_script("arguments[0].focus()", link)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda d: by_id(d, "detail-title").text == "Event #7", "event #7 opened from the keyboard")
    assert browser.switch_to.active_element.get_attribute("id") == "verify-event", "focus moves to the next action"

    # Dark theme, and a phone's width.
    by_id(browser, "theme").click()
    theme = browser.execute_script("return document.documentElement.dataset.theme")
    assert theme in ("dark", "light")
    shot(browser, f"events-{theme}")
    browser.set_window_size(390, 844)
    shot(browser, "phone")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    wide = browser.execute_script(
        "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > 400)"
        ".slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"
    )
    assert width <= 400, f"the page fits a phone's width ({width} px; wider: {wide})"
    browser.set_window_size(1400, 1100)
    browser.execute_script("localStorage.removeItem('sealtrail.theme')")


# ------------------------------------------------------------------ a record changed behind the server


def test_the_browser_names_a_record_changed_behind_the_server(browser, tmp_path):
    srv = Embedded(tmp_path)
    key = srv.create_key("acme")
    srv.start()
    try:
        post(srv.base_url, key, [event(i, "invoice.pay") for i in range(6)])
        srv.stop()
        # Whoever controls the database turns record 3's outcome into a failure.
        db = sqlite3.connect(srv.data / "sealtrail.db")
        (body,) = db.execute("SELECT body FROM events WHERE tenant_id='acme' AND seq=3").fetchone()
        edited = bytes(body).replace(b'"success"', b'"failure"')
        assert edited != bytes(body)
        db.execute("UPDATE events SET body=? WHERE tenant_id='acme' AND seq=3", (edited,))
        db.commit()
        db.close()
        srv.start()

        sign_in(browser, srv.base_url, key)
        open_event(browser, 3)
        by_id(browser, "verify-event").click()
        result = steps(browser, "steps", 1)
        assert result["Record hash (SHA-256 of its JCS form)"] == "fail", result
        assert "changed after it was committed" in step_detail(browser, "steps", "Record hash")
        shot(browser, "verify-tampered-event")

        open_event(browser, 2)
        by_id(browser, "verify-event").click()
        time.sleep(0.2)
        assert set(steps(browser, "steps", 6).values()) <= {"pass", "warn"}, "an untouched record still verifies"

        by_id(browser, "verify-chain").click()
        wait(browser, lambda d: "FAILED at: Every record" in by_id(d, "chain-status").text, "the chain verification to fail")
        assert "record #3" in step_detail(browser, "chain-steps", "Every record")
        shot(browser, "verify-tampered-chain")
    finally:
        srv.stop()


def _wait_up(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited"
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not start")


def test_the_browser_checks_the_witness_cosignatures_it_is_given(browser, tmp_path):
    srv = Embedded(tmp_path)
    key = srv.create_key("acme")
    auth = {"Authorization": f"Bearer {key}"}
    srv.start()
    vkey = requests.get(srv.base_url + "/v1/log/key", headers=auth, timeout=10).json()["verifier_key"]
    srv.stop()

    def init(name: str, where: Path) -> str:
        out = subprocess.run(
            [str(srv.bin), "witness", "init", "--name", name, "--data-dir", str(where)],
            capture_output=True, text=True, timeout=30, check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    wkey = init("w1.example", tmp_path / "w1")
    stranger = init("w2.example", tmp_path / "w2")
    wurl = f"http://127.0.0.1:{_free_port()}"
    witness = subprocess.Popen(
        [str(srv.bin), "witness", "serve", "--addr", wurl.removeprefix("http://"),
         "--data-dir", str(tmp_path / "w1"), "--log", vkey],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "witness.stderr", "ab"),
    )
    try:
        _wait_up(wurl, witness, "the witness")
        srv.start("--witness", f"{wurl}={wkey}")
        post(srv.base_url, key, [event(i, "key.rotate") for i in range(5)])
        sign_in(browser, srv.base_url, key)
        browser.execute_script(
            "localStorage.setItem('sealtrail.pinnedKey', arguments[0]);"
            "localStorage.setItem('sealtrail.witnessKeys', arguments[1]);",
            vkey, wkey,
        )
        open_event(browser, 3)
        by_id(browser, "verify-event").click()
        result = steps(browser, "steps", 7)
        assert set(result.values()) == {"pass"}, result
        assert "w1.example at " in step_detail(browser, "steps", "Witness cosignatures")
        shot(browser, "verify-witnessed")

        # A witness the log never sent its checkpoints to: its cosignature is missing.
        browser.execute_script("localStorage.setItem('sealtrail.witnessKeys', arguments[0])", stranger)
        by_id(browser, "verify-event").click()
        time.sleep(0.2)
        result = steps(browser, "steps", 4)
        assert result["Witness cosignatures (C2SP tlog-cosignature)"] == "fail", result
        assert "no cosignature by the witness w2.example" in step_detail(browser, "steps", "Witness cosignatures")
    finally:
        srv.stop()
        witness.terminate()
        witness.wait(timeout=20)
