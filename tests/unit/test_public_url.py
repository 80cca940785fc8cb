"""ADMINLINK_PUBLIC_URL: the WebAuthn relying party id and origins and the Duo redirect URI follow
it (and, when it is unset, where the server listens); each stays overridable on its own."""

from __future__ import annotations

import pytest

from service import config


def load(**env: str) -> config.Settings:
    return config.load({"ADMINLINK_SECRET_KEY": "k" * 40, "ADMINLINK_DATA_DIR": "/nonexistent",
                        **{f"ADMINLINK_{name.upper()}": value for name, value in env.items()}})


def derived(settings: config.Settings) -> tuple[str, str, tuple[str, ...], str]:
    return (settings.public_url, settings.webauthn_rp_id, settings.webauthn_origins, settings.duo_redirect_uri)


def test_the_default_follows_the_port() -> None:
    assert derived(load(port="9090")) == (
        "http://localhost:9090", "localhost", ("http://localhost:9090",), "http://localhost:9090/auth/duo/callback",
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "::"])  # noqa: S104 (a listen address, not a bind)
def test_a_loopback_or_wildcard_listener_is_reached_as_localhost(host: str) -> None:
    # WebAuthn refuses an IP address as relying party id.
    assert load(host=host).public_url == "http://localhost:8080"


def test_a_named_listener_is_reached_by_its_name() -> None:
    assert derived(load(host="adminlink.corp.example", port="8443"))[:2] == (
        "http://adminlink.corp.example:8443", "adminlink.corp.example",
    )


def test_an_ipv6_listener_is_bracketed() -> None:
    assert load(host="fd00::7").public_url == "http://[fd00::7]:8080"


def test_everything_follows_the_public_url() -> None:
    assert derived(load(public_url="https://Admin.Acme.Example/", port="9090")) == (
        "https://admin.acme.example", "admin.acme.example", ("https://admin.acme.example",),
        "https://admin.acme.example/auth/duo/callback",
    )


def test_origins_are_written_as_browsers_report_them() -> None:
    # A default port is left out of an origin; another one is kept.
    assert load(public_url="https://localhost:443").webauthn_origins == ("https://localhost",)
    assert load(public_url="https://localhost:8443").webauthn_origins == ("https://localhost:8443",)


def test_each_derived_setting_stays_overridable() -> None:
    settings = load(public_url="https://admin.acme.example", webauthn_rp_id="acme.example",
                    webauthn_origins="https://a.acme.example, https://b.acme.example",
                    duo_redirect_uri="https://sso.acme.example/auth/duo/callback")
    assert derived(settings) == (
        "https://admin.acme.example", "acme.example", ("https://a.acme.example", "https://b.acme.example"),
        "https://sso.acme.example/auth/duo/callback",
    )


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://localhost", "https://", "https://acme.example/admin",
                                  "https://acme.example/?x=1", "https://user:pw@acme.example",
                                  "https://acme.example:99999"])
def test_an_unusable_public_url_is_refused_at_start(url: str) -> None:
    with pytest.raises(config.ConfigError, match="ADMINLINK_PUBLIC_URL"):
        load(public_url=url)
