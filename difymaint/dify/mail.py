"""Mail, configured with Dify's variables (docs/dify-reference.md#mail): SMTP (smtplib) or Resend (HTTP), plus
templates.

``MAIL_TYPE`` unset means mail is disabled, as in Dify: :func:`mail_sender` returns None and the caller
decides what that means. Templates are Jinja2 files in ``difymaint/templates`` (HTML autoescaped).
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from functools import cache
from typing import IO, Any, Protocol

import httpx
import jinja2

from difymaint.core.errors import ConfigError, DifymaintError
from difymaint.core.settings import Settings


class MailError(DifymaintError):
    """A mail could not be handed to the mail service."""

    reference = "mail-failed"


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    html: str
    text: str | None = None


class MailSender(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, mail: Mail) -> None:
        """Deliver one mail to the mail service, or raise MailError."""


def mime(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = mail.subject
    message["From"] = sender
    message["To"] = mail.to
    if mail.text is not None:
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
    else:
        message.set_content(mail.html, subtype="html")
    return message


@dataclass
class SmtpSender:
    """Dify's SMTPClient: SMTP_USE_TLS alone → implicit TLS (SMTP_SSL); with SMTP_OPPORTUNISTIC_TLS → STARTTLS."""

    server: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    opportunistic_tls: bool = False
    local_hostname: str | None = None
    timeout_s: float = 30.0
    ssl_context: Any = None  # tests pass one that trusts their certificate

    @property
    def name(self) -> str:
        mode = "STARTTLS" if self.use_tls and self.opportunistic_tls else "TLS" if self.use_tls else "plain"
        return f"smtp://{self.server}:{self.port} ({mode})"

    def _connect(self) -> smtplib.SMTP:
        if self.use_tls and not self.opportunistic_tls:
            return smtplib.SMTP_SSL(
                self.server,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout_s,
                context=self.ssl_context,
            )
        smtp = smtplib.SMTP(self.server, self.port, local_hostname=self.local_hostname, timeout=self.timeout_s)
        if self.use_tls:
            smtp.ehlo(self.server)
            smtp.starttls(context=self.ssl_context)
            smtp.ehlo(self.server)
        return smtp

    def send(self, mail: Mail) -> None:
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"cannot connect to SMTP server {self.server}:{self.port}: {exc}") from None
        try:
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(mime(mail, self.sender), from_addr=self.sender, to_addrs=[mail.to])
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(
                f"SMTP server {self.server}:{self.port} did not accept the mail to {mail.to}: {exc}"
            ) from None
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


@dataclass
class ResendSender:
    """Resend's HTTP API (what the ``resend`` package Dify uses does): POST {RESEND_API_URL}/emails."""

    api_key: str
    sender: str
    api_url: str = "https://api.resend.com"
    timeout_s: float = 30.0
    transport: httpx.BaseTransport | None = None

    @property
    def name(self) -> str:
        return f"resend ({self.api_url})"

    def send(self, mail: Mail) -> None:
        body: dict[str, Any] = {"from": self.sender, "to": mail.to, "subject": mail.subject, "html": mail.html}
        if mail.text is not None:
            body["text"] = mail.text
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self.transport) as client:
                response = client.post(
                    f"{self.api_url.rstrip('/')}/emails",
                    json=body,
                    headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise MailError(f"cannot reach Resend at {self.api_url}: {exc!r}") from None
        if response.status_code >= 300:
            raise MailError(f"Resend refused the mail to {mail.to}: HTTP {response.status_code} {response.text[:200]}")


@dataclass
class SendGridSender:
    """SendGrid's v3 API (what the ``sendgrid`` package Dify uses does): POST {api_url}/v3/mail/send, 202."""

    api_key: str
    sender: str
    api_url: str = "https://api.sendgrid.com"
    timeout_s: float = 30.0

    @property
    def name(self) -> str:
        return f"sendgrid ({self.api_url})"

    def send(self, mail: Mail) -> None:
        # SendGrid wants the display name apart: "Dify <no-reply@x>" → {"name": "Dify", "email": "no-reply@x"}.
        display, address = parseaddr(self.sender)
        sender: dict[str, str] = {"email": address or self.sender}
        if display:
            sender["name"] = display
        content = [{"type": "text/html", "value": mail.html}]
        if mail.text is not None:  # SendGrid requires text/plain first when both are sent
            content.insert(0, {"type": "text/plain", "value": mail.text})
        body = {
            "personalizations": [{"to": [{"email": mail.to}]}],
            "from": sender,
            "subject": mail.subject,
            "content": content,
        }
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                response = client.post(
                    f"{self.api_url.rstrip('/')}/v3/mail/send",
                    json=body,
                    headers={"Authorization": f"Bearer {self.api_key}"},
                )
        except httpx.HTTPError as exc:
            raise MailError(f"cannot reach SendGrid at {self.api_url}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise MailError(
                f"SendGrid refused the mail to {mail.to}: HTTP {response.status_code} {response.text[:200]}",
                hint="check SENDGRID_API_KEY and that MAIL_DEFAULT_SEND_FROM is a verified sender"
                if response.status_code in (401, 403)
                else None,
            )


@dataclass
class PreviewSender:
    """Dry run: write each rendered mail to a stream instead of sending it."""

    stream: IO[str]
    sent: int = 0

    @property
    def name(self) -> str:
        return "preview (dry run)"

    def send(self, mail: Mail) -> None:
        self.sent += 1
        self.stream.write(f"--- mail {self.sent} ---\nTo: {mail.to}\nSubject: {mail.subject}\n\n")
        self.stream.write((mail.text if mail.text is not None else mail.html).rstrip() + "\n\n")
        self.stream.flush()


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def mail_sender(settings: Settings) -> MailSender | None:
    """The sender ``MAIL_TYPE`` selects; None when MAIL_TYPE is unset (mail disabled, as in Dify)."""
    mail_type = (settings.MAIL_TYPE or "").strip().lower()
    if not mail_type:
        return None
    if mail_type not in ("smtp", "resend", "sendgrid"):
        raise ConfigError(
            f"MAIL_TYPE={settings.MAIL_TYPE!r} is not supported", hint="use smtp, resend or sendgrid, as in Dify"
        )
    if not settings.MAIL_DEFAULT_SEND_FROM:
        raise ConfigError(
            f"MAIL_TYPE={mail_type} needs MAIL_DEFAULT_SEND_FROM", hint="e.g. Dify <no-reply@example.com>"
        )
    if mail_type == "resend":
        key = _secret(settings.RESEND_API_KEY)
        if not key:
            raise ConfigError("MAIL_TYPE=resend needs RESEND_API_KEY")
        return ResendSender(
            api_key=key,
            sender=settings.MAIL_DEFAULT_SEND_FROM,
            api_url=settings.RESEND_API_URL or "https://api.resend.com",
            timeout_s=settings.DIFYMAINT_MAIL_TIMEOUT,
        )
    if mail_type == "sendgrid":
        key = _secret(settings.SENDGRID_API_KEY)
        if not key:
            raise ConfigError("MAIL_TYPE=sendgrid needs SENDGRID_API_KEY")
        return SendGridSender(
            api_key=key,
            sender=settings.MAIL_DEFAULT_SEND_FROM,
            api_url=settings.DIFYMAINT_SENDGRID_API_URL,
            timeout_s=settings.DIFYMAINT_MAIL_TIMEOUT,
        )
    if not settings.SMTP_SERVER:
        raise ConfigError("MAIL_TYPE=smtp needs SMTP_SERVER (and SMTP_PORT, default 465)")
    if settings.SMTP_OPPORTUNISTIC_TLS and not settings.SMTP_USE_TLS:
        raise ConfigError("SMTP_OPPORTUNISTIC_TLS needs SMTP_USE_TLS=true (Dify refuses this combination too)")
    return SmtpSender(
        server=settings.SMTP_SERVER,
        port=settings.SMTP_PORT,
        sender=settings.MAIL_DEFAULT_SEND_FROM,
        username=settings.SMTP_USERNAME,
        password=_secret(settings.SMTP_PASSWORD),
        use_tls=settings.SMTP_USE_TLS,
        opportunistic_tls=settings.SMTP_OPPORTUNISTIC_TLS,
        local_hostname=settings.SMTP_LOCAL_HOSTNAME,
        timeout_s=settings.DIFYMAINT_MAIL_TIMEOUT,
    )


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("difymaint", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string in a mail
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``difymaint/templates/<template>``."""
    return _templates().get_template(template).render(**context)
