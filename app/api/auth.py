"""API keys: ``Authorization: Bearer <key>``, read-write and read-only, kept only as sha256 hashes.

Keys are compared in constant time against every configured hash and never logged. With no
keys configured the API is open, which `exposure_check` allows only on a loopback address
unless the operator opted in (`allow_open`, `cdeq serve --open`). Outside loopback every key
must also look like a real secret: at least `MIN_KEY_CHARS` characters and not a placeholder
such as .env.example's `change-me-openssl-rand-hex-32`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable
from enum import Enum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import Forbidden, Unauthorized
from app.config import ApiSettings
from app.errors import InvalidInput

log = logging.getLogger(__name__)

MIN_KEY_CHARS = 32  # `openssl rand -hex 32` gives 64
_PLACEHOLDERS = ("change-me", "changeme", "replace-me", "your-key", "example")


class Access(Enum):
    OPEN = "open"  # no keys configured
    READ = "read"
    WRITE = "write"


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _matches(digest: bytes, hashes: Iterable[bytes]) -> bool:
    found = False
    for known in hashes:  # no early exit: time does not tell which key (or whether any) matched
        found |= hmac.compare_digest(digest, known)
    return found


class KeyRing:
    """The sha256 hashes of the configured keys; the keys themselves are not kept."""

    def __init__(self, read_write: Iterable[str], read_only: Iterable[str]) -> None:
        self._read_write = [_digest(k.encode("utf-8")) for k in read_write]
        self._read_only = [_digest(k.encode("utf-8")) for k in read_only]
        self.weak: list[str] = []  # which keys are too short or placeholders (names, not keys)

    @classmethod
    def from_settings(cls, api: ApiSettings) -> KeyRing:
        read_write = [k.get_secret_value() for k in api.keys]
        read_only = [k.get_secret_value() for k in api.read_only_keys]
        problems = []
        for name, keys in (("api.keys", read_write), ("api.read_only_keys", read_only)):
            for i, key in enumerate(keys):
                if not key.strip() or key != key.strip():
                    problems.append(f"{name}[{i}]: empty, or with surrounding whitespace")
        if set(read_write) & set(read_only):
            problems.append("api.read_only_keys: a key is listed as both read-write and read-only")
        if problems:
            raise InvalidInput(problems, field="api.keys")
        ring = cls(read_write, read_only)
        for name, keys in (("CDEQ_API__KEYS", read_write), ("CDEQ_API__READ_ONLY_KEYS", read_only)):
            for i, key in enumerate(keys):
                if weakness := weak_key(key):
                    ring.weak.append(f"{name}[{i}]: {weakness}")
        return ring

    @property
    def open(self) -> bool:
        return not self._read_write and not self._read_only

    def access(self, key: bytes) -> Access | None:
        """What ``key`` may do, or None when it is not a configured key."""
        digest = _digest(key)
        write = _matches(digest, self._read_write)
        read = _matches(digest, self._read_only)
        if write:
            return Access.WRITE
        if read:
            return Access.READ
        return None


def weak_key(key: str) -> str | None:
    """Why ``key`` is not fit to guard a network-facing API, or None when it is."""
    lowered = key.lower()
    if any(word in lowered for word in _PLACEHOLDERS):
        return "a placeholder, not a secret (generate one: openssl rand -hex 32)"
    if len(key) < MIN_KEY_CHARS:
        return f"{len(key)} characters, fewer than {MIN_KEY_CHARS} (generate one: openssl rand -hex 32)"
    return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def exposure_check(api: ApiSettings, keys: KeyRing) -> None:
    """Refuse an open API, or one guarded by weak keys, on a non-loopback address (an open
    one is allowed when the operator opted in)."""
    if not keys.open:
        if keys.weak and not is_loopback(api.host):
            raise InvalidInput(
                [
                    f"{weak}; refused when serving on {api.host} (not loopback)"
                    for weak in keys.weak
                ],
                field="api.keys",
            )
        if keys.weak:
            log.warning("weak API keys, accepted on loopback only: %s", "; ".join(keys.weak))
        return
    if is_loopback(api.host):
        log.warning(
            "no API keys configured: the API on %s is OPEN to every local process "
            "(set CDEQ_API__KEYS to require a key)",
            api.host,
        )
        return
    if not api.allow_open:
        raise InvalidInput(
            f"refusing to serve on {api.host} without API keys: set CDEQ_API__KEYS (and "
            "CDEQ_API__READ_ONLY_KEYS), or pass --open (CDEQ_API__ALLOW_OPEN=true) to serve "
            "open on purpose",
            field="api.keys",
        )
    log.warning(
        "no API keys configured and --open given: the API on %s is OPEN to the network", api.host
    )


_bearer = HTTPBearer(
    auto_error=False, description="an API key from CDEQ_API__KEYS or CDEQ_API__READ_ONLY_KEYS"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _access(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Access:
    keys: KeyRing = request.app.state.keys
    if keys.open:
        return Access.OPEN
    if credentials is None:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    # Starlette decodes header bytes as latin-1; encoding back gives the bytes the client sent.
    access = keys.access(credentials.credentials.encode("latin-1"))
    if access is None:
        raise Unauthorized("invalid API key")
    return access


def require_read(request: Request, credentials: Credentials) -> Access:
    return _access(request, credentials)


def require_write(request: Request, credentials: Credentials) -> Access:
    access = _access(request, credentials)
    if access is Access.READ:
        raise Forbidden(
            "this API key is read-only; this route changes data and needs a read-write key"
        )
    return access


ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
