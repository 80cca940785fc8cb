"""Mail delivery: SMTP through aiosmtplib, or (embedded default) the outbox table alone."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib


class Mailer(Protocol):
    delivers: bool

    async def send(self, sender: str, recipient: str, subject: str, body: str, message_id: str) -> None: ...


class OutboxOnly:
    """No SMTP configured: messages stay in the outbox, readable by API and CLI."""

    delivers = False

    async def send(self, sender: str, recipient: str, subject: str, body: str, message_id: str) -> None:
        return None


class SmtpMailer:
    """``smtp://user:pass@host:port`` (STARTTLS when offered) or ``smtps://`` (TLS from the start)."""

    delivers = True

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("SMTP URL must look like smtp://host:port or smtps://host:port")
        self.hostname = parts.hostname
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.use_tls = parts.scheme == "smtps"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    async def send(self, sender: str, recipient: str, subject: str, body: str, message_id: str) -> None:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = recipient
        message["Subject"] = subject
        # The same Message-ID on a retry lets receiving servers drop a duplicate.
        message["Message-ID"] = message_id
        message.set_content(body)
        await aiosmtplib.send(
            message,
            hostname=self.hostname,
            port=self.port,
            use_tls=self.use_tls,
            username=self.username,
            password=self.password,
            timeout=30,
        )
