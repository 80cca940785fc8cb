"""``adminlink worker --check`` (and ``python -m workers.health``, the compose healthcheck): exit 0
only while a worker on the queue keeps arq's health-check key fresh in Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import cli
from service.bootstrap import Services
from tests.conftest import TEST_REDIS_URL
from workers import health
from workers.running import InProcessWorker
from workers.settings import worker_options

ROOT = Path(__file__).resolve().parents[2]
real_redis = pytest.mark.skipif(not TEST_REDIS_URL,
                                reason="the CLI reaches Redis by URL: needs ADMINLINK_TEST_REDIS_URL")


async def until_reported(services: Services, within: float = 10.0) -> str:
    for _ in range(int(within / 0.05)):
        report = await health.worker_health(services.redis, services.settings.queue_name)
        if report is not None:
            return report
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never wrote its health-check key")


async def test_the_key_is_the_one_arqs_worker_writes(services: Services) -> None:
    worker = InProcessWorker(services)
    assert health.health_check_key(services.settings.queue_name) == worker.worker.health_check_key


async def test_the_report_lives_while_the_worker_runs(services: Services) -> None:
    queue = services.settings.queue_name
    assert await health.worker_health(services.redis, queue) is None
    worker = InProcessWorker(services)
    worker.start()
    try:
        assert "j_complete=" in await until_reported(services)
        # It expires on its own one second after the interval: a worker that stops polling (hung,
        # killed) fails the check within that time.
        ttl_ms = await services.redis.pttl(health.health_check_key(queue))
        assert 0 < ttl_ms <= (worker_options(services.settings)["health_check_interval"] + 1) * 1000
    finally:
        await worker.stop()
    assert await health.worker_health(services.redis, queue) is None  # a stopped worker deletes it


def cli_check(monkeypatch: pytest.MonkeyPatch, services: Services, tmp_path: Path, redis_url: str) -> int:
    """``adminlink worker --check`` as the CLI runs it, with only the settings it reads."""
    for name in [n for n in os.environ if n.startswith("ADMINLINK_") and not n.startswith("ADMINLINK_TEST_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ADMINLINK_DATA_DIR", str(tmp_path / "check"))
    monkeypatch.setenv("ADMINLINK_SECRET_KEY", services.settings.secret_key.decode())
    monkeypatch.setenv("ADMINLINK_QUEUE_NAME", services.settings.queue_name)
    monkeypatch.setenv("ADMINLINK_REDIS_URL", redis_url)
    return cli.main(["worker", "--check"])


@real_redis
async def test_the_cli_check_passes_only_while_a_worker_runs(services: Services, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    async def check() -> int:
        assert TEST_REDIS_URL
        return await asyncio.to_thread(cli_check, monkeypatch, services, tmp_path, TEST_REDIS_URL)

    assert await check() == 1
    assert "unhealthy: no worker has reported" in capsys.readouterr().err
    worker = InProcessWorker(services)
    worker.start()
    try:
        await until_reported(services)
        assert await check() == 0
        assert capsys.readouterr().out.startswith("healthy: ")
    finally:
        await worker.stop()
    assert await check() == 1


async def test_the_cli_check_fails_when_redis_does_not_answer(services: Services, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    nothing_listens = "redis://127.0.0.1:1/0"
    assert await asyncio.to_thread(cli_check, monkeypatch, services, tmp_path, nothing_listens) == 1
    assert "unhealthy: Redis did not answer" in capsys.readouterr().err


def test_the_compose_healthcheck_command_fails_without_a_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMINLINK_")}
    env.update({"ADMINLINK_DATA_DIR": str(tmp_path), "ADMINLINK_SECRET_KEY": "k" * 40,
                "ADMINLINK_QUEUE_NAME": "adminlink:no-worker-here",
                "ADMINLINK_REDIS_URL": TEST_REDIS_URL or "redis://127.0.0.1:1/0"})
    done = subprocess.run([sys.executable, "-m", "workers.health"], cwd=ROOT, env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("unhealthy: ")
