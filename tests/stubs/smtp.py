"""A real SMTP server (aiosmtpd) on a free loopback port, recording what it accepted."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None
        return str(part.get_content())


@dataclass
class SmtpStub:
    reject: set[str] = field(default_factory=set)  # recipients answered with 550
    tls_context: ssl.SSLContext | None = None  # STARTTLS offered (and required)
    implicit_tls: ssl.SSLContext | None = None  # SMTPS: TLS from the first byte
    credentials: tuple[str, str] | None = None  # AUTH required with these
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.credentials == (data.login.decode(), data.password.decode())
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    def __enter__(self) -> SmtpStub:
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        if self.implicit_tls is not None:
            # aiosmtpd does not count SMTPS as TLS for its AUTH rule; the socket is encrypted all the same.
            kwargs.update(ssl_context=self.implicit_tls, auth_require_tls=False)
        if self.credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()

    def settings(self) -> dict[str, Any]:
        return {
            "MAIL_TYPE": "smtp",
            "MAIL_DEFAULT_SEND_FROM": "Dify <no-reply@dify.example>",
            "SMTP_SERVER": "127.0.0.1",
            "SMTP_PORT": self.port,
            "DIFYMAINT_MAIL_TIMEOUT": 5,
        }
