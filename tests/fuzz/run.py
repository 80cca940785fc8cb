"""``make fuzz``: schemathesis against a real adminlink on PostgreSQL, every operation of
``/openapi.json``, a fixed seed and a bounded number of examples per operation.

It lives under tests/ because it is a test of the whole service, but it is not a pytest module:
it needs a server process of its own (``adminlink serve``, web app and worker) on a free port,
the database given in ADMINLINK_FUZZ_DATABASE_URL (Redis in ADMINLINK_FUZZ_REDIS_URL, emptied
first, or the embedded one), an organization bootstrapped there, and a SCIM integration, so that the
operations behind an API key and behind a SCIM bearer token are reached past authentication.
The credentials go to schemathesis through tests/fuzz/schemathesis.toml, by security scheme.

Exit status: schemathesis's (non-zero on any failed check). FUZZ_SEED and FUZZ_MAX_EXAMPLES
change the seed and the bound; FUZZ_ARGS adds schemathesis options.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SEED = os.environ.get("FUZZ_SEED", "15")
MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "10")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: str, port: int) -> dict[str, str]:
    database = os.environ.get("ADMINLINK_FUZZ_DATABASE_URL")
    if not database:
        sys.exit("make fuzz: set ADMINLINK_FUZZ_DATABASE_URL to a PostgreSQL database it may write to")
    env = {**os.environ, "ADMINLINK_DATABASE_URL": database, "ADMINLINK_DATA_DIR": data_dir,
           "ADMINLINK_SECRET_KEY": secrets.token_hex(32), "ADMINLINK_HOST": "127.0.0.1",
           "ADMINLINK_PORT": str(port), "ADMINLINK_COOKIE_SECURE": "false", "ADMINLINK_LOG_LEVEL": "WARNING"}
    if os.environ.get("ADMINLINK_FUZZ_REDIS_URL"):
        env["ADMINLINK_REDIS_URL"] = os.environ["ADMINLINK_FUZZ_REDIS_URL"]
    return env


def empty_redis(env: dict[str, str]) -> None:
    """The Redis database given is the run's own, as the test suite's is: queued jobs of an earlier
    run (or of the tests) would reach this run's worker, which would not find their rows."""
    if "ADMINLINK_REDIS_URL" in env:
        client = redis.Redis.from_url(env["ADMINLINK_REDIS_URL"])
        client.flushdb()
        client.close()


def call(base: str, method: str, path: str, key: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode(),
                                     headers={"x-api-key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, object] = json.load(response)
        return answer


def wait_until_up(base: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if server.poll() is not None:
            sys.exit("make fuzz: the server stopped while starting")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("make fuzz: the server did not answer /healthz in 30 s")


def bootstrap(adminlink: str, env: dict[str, str]) -> dict[str, object]:
    """A new organization and its first admin, whose API key the answer holds."""
    answer = subprocess.run([adminlink, "bootstrap", "--org", f"fuzz {secrets.token_hex(4)}",
                             "--email", "fuzz@fuzz.test"], env=env, check=True, capture_output=True).stdout
    created: dict[str, object] = json.loads(answer)
    return created


def logged_error(line: str) -> bool:
    """A JSON log line at level error or above (an unhandled exception is logged so). aiohttp's
    HTTP parser logs the requests it refuses itself (a NUL byte in a header, which schemathesis
    sends on purpose) at error level too, with a 400 answer: those are not the service's errors."""
    try:
        record = json.loads(line)
    except ValueError:
        return "Traceback" in line
    if not isinstance(record, dict) or record.get("level") not in ("error", "critical"):
        return False
    return not (record.get("logger") == "aiohttp.server" and "aiohttp.http_exceptions." in str(record.get("exc")))


def main() -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="adminlink-fuzz-") as data_dir:
        env = server_env(data_dir, port)
        adminlink = str(BIN / "adminlink")
        empty_redis(env)
        subprocess.run([adminlink, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        created, scim_org = (bootstrap(adminlink, env) for _ in range(2))
        log = open(Path(data_dir) / "server.log", "wb")  # closed below, once the server has stopped
        server = subprocess.Popen([adminlink, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(base, server)
            # The SCIM integration belongs to another organization than the API key, so that the
            # fuzzed management API cannot rotate or delete its token halfway through the run.
            scim = call(base, "POST", "/api/v1/integrations", str(scim_org["api_key"]),
                        {"kind": "scim", "name": "fuzz", "role": "Administrator with Billing"})
            command = [str(BIN / "schemathesis"), "--config-file", str(ROOT / "tests/fuzz/schemathesis.toml"),
                       "run", f"{base}/openapi.json", "--checks", "all", "--seed", SEED,
                       # Two workers test two operations at a time: each operation's cases follow from the
                       # seed, though what the server holds when they arrive may differ between runs.
                       "--max-examples", MAX_EXAMPLES, "--workers", "2", "--no-color",
                       # No examples stored between runs: the same seed gives the same run.
                       "--generation-database", "none",
                       *shlex.split(os.environ.get("FUZZ_ARGS", ""))]
            print("make fuzz:", " ".join(command), flush=True)
            # Run in the temporary directory: schemathesis and Hypothesis leave folders where they run.
            status = subprocess.run(command, cwd=data_dir, env={
                **os.environ, "FUZZ_API_KEY": str(created["api_key"]), "FUZZ_SCIM_TOKEN": str(scim["token"]),
            }).returncode
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
        errors = [line for line in (Path(data_dir) / "server.log").read_text().splitlines() if logged_error(line)]
        if errors:
            print("make fuzz: the server logged errors:", *errors[:20], sep="\n")
            status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
