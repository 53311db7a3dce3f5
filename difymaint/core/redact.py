"""Keeping secrets out of every line difymaint prints.

Two complementary nets, because either alone leaks:

* :func:`mask_urls` hides the password of any ``scheme://user:password@host`` URL in a text, whatever
  produced it (a driver's error, a pydantic message quoting the input, a repr in a traceback);
* :func:`scrub` additionally replaces every *known* secret value (DB_PASSWORD, the billing key, SMTP and
  Resend keys, …) wherever it appears, also URL-encoded, since a library may quote it without a URL around.

The known values live in a process-wide registry (:func:`register_secrets`) that the CLI fills from the
environment and the flags before loading settings, and from :meth:`Settings.secret_values` after; the log
filter (:class:`RedactingFilter`) and the runner's error ladder read it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
# Shorter values would turn ordinary words into *** (a password "a" is no secret worth hiding that way);
# URL passwords are masked by position whatever their length.
MIN_SECRET_LENGTH = 4

# scheme://[user]:password@ — the password runs to the last "@" before the host part (passwords may hold
# unencoded "@" or ":"), stopping at whitespace, quotes and list separators (Sentinel lists) so that a URL
# inside a sentence, a repr or a list ends. A password holding those is still hidden by the registry.
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s'\"<>;,]*):(?P<password>[^\s'\"<>;,]*)@"
)
# Setting names whose values are secrets even when not declared SecretStr (Dify adds such settings often).
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|PRIVATE_KEY|API_KEY|ACCESS_TOKEN|_TOKEN$|_DSN$|CREDENTIAL)", re.I)

_registry: set[str] = set()
_registry_lock = threading.Lock()


def mask_urls(text: str) -> str:
    """``redis://:pw@host:6379/0`` → ``redis://:***@host:6379/0``, for every URL in ``text``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def url_password(value: str) -> str | None:
    """The (decoded) password inside a URL, or None."""
    if "://" not in value:
        return None
    try:
        password = urlsplit(value.strip()).password
    except ValueError:
        # An unparsable URL (bad port, …) may still carry a password: take it by position.
        match = _URL_CREDENTIALS.search(value)
        password = match["password"] if match else None
    return unquote(password) if password else None


def secrets_in(mapping: Mapping[str, object]) -> set[str]:
    """Secret values among raw settings (environment, flags): secret-named keys and URL passwords."""
    found: set[str] = set()
    for name, raw in mapping.items():
        if raw is None:
            continue
        value = raw.get_secret_value() if hasattr(raw, "get_secret_value") else raw
        if not isinstance(value, str) or not value:
            continue
        if SECRET_NAME.search(name) and "://" not in value:
            found.add(value)
        if name.upper().endswith("PING_URL"):
            found.add(value)  # a dead-man ping URL carries its check's key in the path
        if password := url_password(value):
            found.add(password)
    return found


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values for the rest of the process (every later :func:`scrub` hides them)."""
    with _registry_lock:
        _registry.update(value for value in values if value and len(value) >= MIN_SECRET_LENGTH)


def clear_secrets() -> None:
    """Forget the registry (tests running several CLI invocations in one process)."""
    with _registry_lock:
        _registry.clear()


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with URL passwords masked and every known secret (``secrets`` plus the registry) replaced."""
    with _registry_lock:
        known = set(_registry)
    known.update(value for value in (secrets or ()) if value and len(value) >= MIN_SECRET_LENGTH)
    # Longest first, so that a secret containing another is replaced whole.
    for secret in sorted(known, key=len, reverse=True):
        forms = {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1], json.dumps(secret)[1:-1]}
        for form in forms:
            if form in text:
                text = text.replace(form, MASK)
    return mask_urls(text)


class RedactingFilter(logging.Filter):
    """Scrubs every record's message (and its structured fields) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback is formatted later from exc_info; render it now, scrubbed, instead.
            import traceback

            record.msg = f"{record.msg}\n{scrub(''.join(traceback.format_exception(*record.exc_info)))}"
            record.exc_info = None
            record.exc_text = None
        return True
