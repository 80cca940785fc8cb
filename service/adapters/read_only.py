"""Reads outside any command, on SQLAlchemy: who signs in, their factors and credentials, what a
page shows. One short session, nothing to commit; what it loaded stays readable after it ends."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession

from service.adapters.repository import (
    Admins,
    DuoEnrollments,
    DuoSettings,
    Factors,
    PushDevices,
    Users,
    WebauthnCredentials,
)


class ReadOnlyUnitOfWork:
    def __init__(self, session_factory: Callable[[], AsyncSession]) -> None:
        self._session_factory = session_factory

    async def __aenter__(self) -> ReadOnlyUnitOfWork:
        self.session = self._session_factory()
        self.users = Users(self.session)
        self.admins = Admins(self.session)
        self.factors = Factors(self.session)
        self.webauthn = WebauthnCredentials(self.session)
        self.push_devices = PushDevices(self.session)
        self.duo = DuoEnrollments(self.session)
        self.duo_settings = DuoSettings(self.session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() ends the read's transaction and leaves loaded objects readable.
        await self.session.close()
