"""The independent checker scim2-tester, run by scim2-cli against a real adminlink process on
loopback: every check must report SUCCESS, in both delete modes of a SCIM integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, free_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
STATUSES = ("SUCCESS", "COMPLIANT", "ACCEPTABLE", "DEVIATION", "ERROR", "CRITICAL", "SKIPPED")


def _environment(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMINLINK_")}
    env.update({
        "ADMINLINK_DATA_DIR": str(tmp_path / "data"),
        "ADMINLINK_PORT": str(port),
        "ADMINLINK_HOST": "127.0.0.1",
        "ADMINLINK_SECRET_KEY": "scim-tester-secret-key-" + "x" * 32,
        "ADMINLINK_LOG_LEVEL": "WARNING",
    })
    if TEST_DATABASE_URL:
        env["ADMINLINK_DATABASE_URL"] = TEST_DATABASE_URL
    if TEST_REDIS_URL:
        env["ADMINLINK_REDIS_URL"] = TEST_REDIS_URL
        env["ADMINLINK_QUEUE_NAME"] = f"adminlink:scim-tester:{port}"
    return env


def _request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())


@pytest.fixture
def adminlink(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real ``adminlink serve`` process; yields its URL and an Administrator with Billing's key."""
    port = free_port()
    env = _environment(tmp_path, port)
    made = subprocess.run(
        [sys.executable, "-m", "service.cli", "bootstrap", "--org", "SCIM checks",
         "--email", "owner@scim-checks.test", "--migrate"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    key = json.loads(made.stdout)["api_key"]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                _request(f"{url}/healthz")
                break
            except OSError:
                if process.poll() is not None:
                    raise AssertionError((tmp_path / "serve.log").read_text()) from None
                time.sleep(0.1)
        yield url, {"x-api-key": key}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _results(output: str) -> list[tuple[str, str]]:
    """(status, check title) for every check the CLI printed."""
    found = []
    for line in output.splitlines():
        status, _, title = line.partition(" ")
        if status in STATUSES:
            found.append((status, title))
    return found


@pytest.mark.parametrize("delete_mode", ["suspend", "delete"])
def test_every_scim2_tester_check_succeeds(adminlink: tuple[str, dict[str, str]], delete_mode: str) -> None:
    url, headers = adminlink
    integration = _request(f"{url}/api/v1/integrations", {
        "kind": "scim", "name": f"scim2-tester {delete_mode}", "role": "Administrator with Billing",
        "delete_mode": delete_mode}, headers)
    run = subprocess.run(
        [str(BIN / "scim2"), "--url", f"{url}/scim/v2", "-h", f"Authorization: Bearer {integration['token']}",
         "test"],
        capture_output=True, text=True, timeout=600,
    )
    results = _results(run.stdout)
    failures = [(status, title) for status, title in results if status != "SUCCESS"]
    assert len(results) > 100, run.stdout + run.stderr
    assert not failures and run.returncode == 0, run.stdout
