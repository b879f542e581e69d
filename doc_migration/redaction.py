"""Secrets never reach a log, a report, metadata or an exception message: everything that prints free
text that may carry one (a libpq or HTTP error, a URL, a parser's message) passes it through
:func:`redact`; a URL to show goes through :func:`redact_url` (password masked) or
:func:`display_url` (credentials and query dropped)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

# Secrets are matched three ways, most specific first: exact values known from the environment
# (any form: raw and percent-encoded), then shapes that only secrets have (URL userinfo, libpq
# ``password=``, ``Authorization: Bearer``, OpenAI-style keys), so a secret this process has never
# seen (a legacy database URL echoed by a library, a key in a third-party message) is hidden too.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s'\"]*):(?P<pw>[^/\s'\"]*)@")
_KEYWORD_PASSWORD = re.compile(
    r"""(?P<key>\b(?:password|passwd|pwd|sslpassword|api[_-]?key|secret|token|access[_-]?token)\b\s*[=:]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;,'"]+)""",
    re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>\b(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
# Environment variables whose values are secrets by name (Kubernetes Secrets arrive as env vars).
_SECRET_ENV_NAME = re.compile(r"(?:PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|APIKEY|CREDENTIALS?)$", re.IGNORECASE)
_MIN_SECRET_LEN = 4
MASK = "***"


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Hide passwords, API keys and tokens in free text (error messages, URLs, conninfo strings).

    ``secrets`` defaults to :func:`known_secrets` (every secret in this process's environment);
    they are replaced first, longest first, so a password that contains ``@`` or ``/`` or is
    echoed inside a libpq token (``invalid percent-encoded token: "..."``) is hidden whole.
    """
    out = str(text)
    values = secrets if secrets is not None else known_secrets()
    for secret in sorted({v for v in values if v and len(v) >= _MIN_SECRET_LEN}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@" if m["pw"] else m[0], out)
    out = _KEYWORD_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m['key']}{MASK}", out)
    return _OPENAI_KEY.sub(MASK, out)


def _forms(value: str) -> list[str]:
    """A secret as it may appear in text: raw, percent-decoded and percent-encoded."""
    forms = {value, unquote(value), quote(value, safe=""), quote(unquote(value), safe="")}
    return [f for f in forms if f]


def conninfo_passwords(conninfo: str) -> list[str]:
    """Every password a libpq connection string carries: URL userinfo, ``?password=`` and the
    key/value form ``password=...`` (never raises: a malformed string is still scanned)."""
    found: list[str] = []
    if "://" in conninfo:
        try:
            parts = urlsplit(conninfo)
            if parts.password:
                found.append(parts.password)
            for key, value in parse_qsl(parts.query, keep_blank_values=False):
                if key.lower() in ("password", "sslpassword"):
                    found.append(value)
        except ValueError:
            pass
        m = re.search(r"://[^:/@\s]*:([^/\s]*)@", conninfo)  # what urlsplit refused (e.g. bad IPv6 host)
        if m:
            found.append(m.group(1))
    for m in _KEYWORD_PASSWORD.finditer(conninfo):
        value = m["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found.append(value)
    return [form for pw in found if pw for form in _forms(pw)]


def known_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secret values present in this process's environment, for scrubbing free text.

    DATABASE_URL's password (every form), OPENAI_API_KEY, PGPASSWORD, the password of any other
    variable holding a connection URL (legacy databases named by ``url_env``, Dagster's storage)
    and any variable named like a secret (``*_PASSWORD``, ``*_TOKEN``, ``*_API_KEY``, ...).
    """
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name, value in env.items():
        if not value:
            continue
        if name in ("OPENAI_API_KEY", "PGPASSWORD") or (_SECRET_ENV_NAME.search(name) and len(value) >= 8):
            found.extend(_forms(value))
        if name == "DATABASE_URL" or "://" in value or "password=" in value.lower():
            found.extend(conninfo_passwords(value))
    return sorted({s for s in found if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)


def redact_url(url: str) -> str:
    """A connection or HTTP URL safe to print: the password (userinfo or query) masked, the rest kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url, conninfo_passwords(url))
    if parts.password:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    return redact(url, conninfo_passwords(url) + known_secrets())


def display_url(url: str) -> str:
    """Scheme, host, port and path only: what an error message needs to name a server."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts._replace(query=""))
