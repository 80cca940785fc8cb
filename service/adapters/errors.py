"""What the adapters raise in place of a driver's exception: callers never catch SQLAlchemy's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError


class StoreConflict(Exception):
    """The database refused a write that collides with a stored row (a unique or foreign key
    constraint): most often a concurrent request wrote the same email, username or link first.
    The driver's error is its cause; the message quotes no value, as the driver's does."""

    def __init__(self) -> None:
        super().__init__("a write collided with a stored row")


def raise_conflict_of(exc: BaseException | None) -> None:
    """Raises ``StoreConflict`` in place of a driver's integrity error (at the end of a unit of work)."""
    if isinstance(exc, IntegrityError):
        raise StoreConflict() from exc


@contextmanager
def conflicts_translated() -> Iterator[None]:
    """The statements inside raise ``StoreConflict`` where the driver raises an integrity error."""
    try:
        yield
    except IntegrityError as exc:
        raise StoreConflict() from exc
