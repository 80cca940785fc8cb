"""Prints each package whose installed version differs from uv.lock, for `make test-latest`.

Reads `uv export --format requirements-txt` on standard input; a locked package whose marker
does not apply to this interpreter and platform is left out. Run with the venv's Python."""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.markers import Marker
from packaging.utils import canonicalize_name


def locked(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        requirement, _, marker = line.partition(";")
        name, sep, version = requirement.strip().partition("==")
        if not sep or (marker.strip() and not Marker(marker.strip()).evaluate()):
            continue
        pins[canonicalize_name(name)] = version.strip()
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def main() -> int:
    pins, have = locked(sys.stdin.read().splitlines()), installed()
    drift = [f"{name}: {pins[name]} locked, {have.get(name, 'not installed')} newest allowed"
             for name in sorted(pins) if have.get(name) != pins[name]]
    drift += [f"{name}: not locked, {have[name]} installed" for name in sorted(set(have) - set(pins))
              if name not in ("adminlink", "pip")]
    print("\n".join(drift) or "nothing: uv.lock holds the newest releases the ranges allow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
