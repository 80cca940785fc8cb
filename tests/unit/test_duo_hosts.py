"""The server connects to an organization's Duo API host: only hosts matching
ADMINLINK_DUO_API_HOSTS (Duo's own, by default) are taken."""

from __future__ import annotations

import pytest

from service import config
from service.adapters.mfa.duo import validate

CLIENT_ID, SECRET = "D" * 20, "s" * 40


def allowed(env: dict[str, str] | None = None) -> tuple[str, ...]:
    return config.load({"ADMINLINK_SECRET_KEY": "k" * 40, "ADMINLINK_DATA_DIR": "/nonexistent", **(env or {})}) \
        .duo_api_hosts


@pytest.mark.parametrize("host", ["api-1a2b3c4d.duosecurity.com", "api-deadbeef.duosecurity.com"])
def test_duo_hosts_are_taken(host: str) -> None:
    validate(CLIENT_ID, SECRET, host, allowed())


@pytest.mark.parametrize("host", ["10.0.0.7", "localhost:6379", "metadata.google.internal",
                                  "api-1a2b3c4d.duosecurity.com.evil.test", "api-1a2b3c4d.duosecurity.com:8443",
                                  "duosecurity.com", "api-x.notduosecurity.com"])
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="api_host must match"):
        validate(CLIENT_ID, SECRET, host, allowed())


def test_the_list_is_configurable() -> None:
    hosts = allowed({"ADMINLINK_DUO_API_HOSTS": "duo-proxy.corp.example:443, API-*.duosecurity.com"})
    assert hosts == ("duo-proxy.corp.example:443", "api-*.duosecurity.com")
    validate(CLIENT_ID, SECRET, "duo-proxy.corp.example:443", hosts)
    with pytest.raises(ValueError):
        validate(CLIENT_ID, SECRET, "duo-proxy.corp.example:444", hosts)
