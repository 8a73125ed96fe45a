"""API keys: ``Authorization: Bearer <key>``, each with a name, an access level and the
collections it may reach; kept only as sha256 hashes. `require` is the one dependency that
checks every route.

Keys are compared in constant time against every configured hash and never logged: logs and
metrics name a key by its `name`. With no keys configured the API is open, which
`exposure_check` allows only on a loopback address unless the operator opted in (`allow_open`,
`cdeq serve --open`). Outside loopback every key must also look like a real secret: at least
`MIN_KEY_CHARS` characters and not a placeholder such as .env.example's
`change-me-openssl-rand-hex-32` (a key configured only by its hash cannot be checked).

The scope rule (docs/api-keys.md): a collection outside a key's globs answers 404, as if it
did not exist; a collection inside them that the key may not change answers 403.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from app.api.errors import Forbidden, Unauthorized
from app.api.schemas import read_json
from app.config import ApiKey, ApiSettings
from app.errors import InvalidInput, NotFound
from app.ingest import job_status
from app.logs import api_key_name
from app.names import is_collection_name
from app.service import Cdeq

log = logging.getLogger(__name__)

MIN_KEY_CHARS = 32  # `openssl rand -hex 32` gives 64
_PLACEHOLDERS = ("change-me", "changeme", "replace-me", "your-key", "example")
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Access(IntEnum):
    """Ordered: each level may do what the ones below it may."""

    READ = 1  # search, embed with a collection's context, context info, jobs, list
    WRITE = 2  # + ingest, delete documents
    ADMIN = 3  # + create a collection, rebuild, rollback, prune, drop

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a configured key by its name (never the key), or the open API."""

    name: str
    access: Access
    collections: tuple[str, ...] | None  # glob patterns; None = every collection

    def sees(self, collection: str) -> bool:
        if self.collections is None:
            return True
        return any(fnmatch.fnmatchcase(collection, pattern) for pattern in self.collections)

    @property
    def unscoped(self) -> bool:
        return self.collections is None


OPEN = Caller("(open)", Access.ADMIN, None)  # no keys configured: the API is open


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _caller_of(entry: ApiKey) -> Caller:
    patterns = tuple(entry.collections) if entry.collections is not None else None
    return Caller(entry.name, Access[entry.access.upper()], patterns)


def _digest_of(entry: ApiKey) -> bytes:
    if entry.key is not None:
        return digest(entry.key.get_secret_value().encode("utf-8"))
    assert entry.sha256 is not None  # ApiKey holds exactly one of them
    return bytes.fromhex(entry.sha256.get_secret_value())


def key_problems(api: ApiSettings) -> list[str]:
    """Mistakes of the key configuration that no setting validator can see alone: empty or
    padded keys, two keys with one name, one key configured twice. Names, never keys."""
    problems = []
    entries = api.key_entries()
    for entry in entries:
        if entry.key is not None:
            key = entry.key.get_secret_value()
            if not key.strip() or key != key.strip():
                problems.append(f"{entry.name}: empty, or with surrounding whitespace")
    seen: dict[str, int] = {}
    for entry in entries:
        seen[entry.name] = seen.get(entry.name, 0) + 1
    problems += [f"{name}: {n} keys have this name" for name, n in seen.items() if n > 1]
    by_digest: dict[bytes, list[str]] = {}
    for entry in entries:
        by_digest.setdefault(_digest_of(entry), []).append(entry.name)
    problems += [
        f"{names[1]}: the same key as {names[0]} (one key, one entry)"
        for names in by_digest.values()
        if len(names) > 1
    ]
    return problems


def weak_keys(api: ApiSettings) -> list[str]:
    """Which keys are too short or placeholders (by name, never the key)."""
    return [
        f"{entry.name}: {weakness}"
        for entry in api.key_entries()
        if entry.key is not None and (weakness := weak_key(entry.key.get_secret_value()))
    ]


class KeyRing:
    """The sha256 hashes of the configured keys with who each one is; no key is kept."""

    def __init__(self, entries: Sequence[ApiKey]) -> None:
        self._entries = [(_digest_of(entry), _caller_of(entry)) for entry in entries]
        self.weak: list[str] = []  # which keys are too short or placeholders (names, not keys)

    @classmethod
    def from_settings(cls, api: ApiSettings) -> KeyRing:
        problems = key_problems(api)
        if problems:
            raise InvalidInput(problems, field="api.keys")
        ring = cls(api.key_entries())
        ring.weak = weak_keys(api)
        return ring

    @property
    def open(self) -> bool:
        return not self._entries

    @property
    def callers(self) -> list[Caller]:
        return [caller for _, caller in self._entries]

    def identify(self, key: bytes) -> Caller | None:
        """Who ``key`` is, or None when it is not a configured key."""
        sent = digest(key)
        found: Caller | None = None
        for known, caller in self._entries:  # no early exit: time does not tell which matched
            if hmac.compare_digest(sent, known):
                found = caller
        return found


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


def exposure_problems(api: ApiSettings, keys: KeyRing) -> list[str]:
    """Why serving on ``api.host`` would be unsafe: an open API without the operator's opt-in,
    or weak keys, off loopback."""
    if keys.open:
        if is_loopback(api.host) or api.allow_open:
            return []
        return [
            f"refusing to serve on {api.host} without API keys: set CDEQ_API__KEYS (and "
            "CDEQ_API__READ_ONLY_KEYS), or pass --open (CDEQ_API__ALLOW_OPEN=true) to serve "
            "open on purpose"
        ]
    if is_loopback(api.host):
        return []
    return [f"{weak}; refused when serving on {api.host} (not loopback)" for weak in keys.weak]


def exposure_check(api: ApiSettings, keys: KeyRing) -> None:
    """Refuse an open API, or one guarded by weak keys, on a non-loopback address (an open
    one is allowed when the operator opted in)."""
    problems = exposure_problems(api, keys)
    if problems:
        raise InvalidInput(problems, field="api.keys")
    if not keys.open:
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
    log.warning(
        "no API keys configured and --open given: the API on %s is OPEN to the network", api.host
    )


_bearer = HTTPBearer(
    auto_error=False, description="an API key from CDEQ_API__KEYS or CDEQ_API__READ_ONLY_KEYS"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _refused(request: Request, key_name: str, status: int) -> None:
    request.app.state.metrics.auth_refusals.labels(key_name, str(status)).inc()


def _identify(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    keys: KeyRing = request.app.state.keys
    if keys.open:
        return OPEN
    if credentials is None:
        _refused(request, "(missing)", 401)
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    # Starlette decodes header bytes as latin-1; encoding back gives the bytes the client sent.
    caller = keys.identify(credentials.credentials.encode("latin-1"))
    if caller is None:
        _refused(request, "(invalid)", 401)
        raise Unauthorized("invalid API key")
    return caller


def _unknown_job(job_id: str, service: Cdeq) -> NotFound:
    # The job stores' own words, so a job out of scope reads exactly like one that never was.
    if service.queued:
        return NotFound(f"job {job_id!r} not found (unknown or expired)")
    return NotFound(f"job {job_id!r} not found (unknown, or forgotten by this process)")


async def _collection_of(request: Request) -> tuple[str | None, bool]:
    """The collection a request is about, and whether it names a job: the path's `{name}`,
    the collection of the path's `{job_id}`, or a JSON body's `collection`; None for none."""
    params = request.path_params
    if isinstance(params.get("name"), str):
        return params["name"], False
    if isinstance(params.get("job_id"), str):
        job_id = params["job_id"]
        if not JOB_ID.fullmatch(job_id):
            return None, True  # the route answers 404 for a malformed id
        service: Cdeq = request.app.state.service
        try:
            status = await run_in_threadpool(lambda: job_status(job_id, service=service))
        except NotFound:
            return None, True  # the route answers its own 404
        return status.collection, True
    if request.method in _BODY_METHODS:
        # The route reads the same body (read_json keeps what it parsed): one parse, one rule.
        body = await read_json(request)
        if isinstance(body, dict) and isinstance(body.get("collection"), str):
            return body["collection"], False
    return None, False


def require(
    need: Access, *, creates: bool = False
) -> Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[Caller]]:
    """The dependency of every keyed route: who calls (401 for no or an unknown key), then
    whether that caller may do ``need`` on the collection the request is about.

    No collection: any valid key (or ``need`` itself, above read). Out of the key's globs:
    404, as for a collection (or job) that does not exist. In them but ``need`` above the
    key's access: 403. ``creates``: the route creates a collection that does not exist yet,
    which takes an admin key."""

    async def dependency(request: Request, credentials: Credentials) -> Caller:
        caller = _identify(request, credentials)
        api_key_name.set(caller.name)
        if caller is not OPEN:
            request.app.state.metrics.key_requests.labels(caller.name).inc()
        if caller.unscoped and caller.access >= (Access.ADMIN if creates else need):
            return caller  # may do this to every collection: no need to look for one
        collection, is_job = await _collection_of(request)
        if collection is not None and not caller.sees(collection):
            _refused(request, caller.name, 404)
            log.info("API key %r: collection %r is out of its scope", caller.name, collection)
            if is_job:
                raise _unknown_job(request.path_params["job_id"], request.app.state.service)
            raise NotFound(f"collection {collection!r} does not exist")
        if caller.access < need:
            _refused(request, caller.name, 403)
            where = f" on collection {collection!r}" if collection is not None else ""
            raise Forbidden(
                f"API key {caller.name!r} has {caller.access} access{where}; this route needs "
                f"{need} (docs/api-keys.md)"
            )
        if creates and collection is not None and caller.access < Access.ADMIN:
            if not is_collection_name(collection):
                return caller  # never a collection: the route's 400 to give, not a creation
            service: Cdeq = request.app.state.service
            exists = await run_in_threadpool(lambda: service.store.resolve(collection) is not None)
            if not exists:
                _refused(request, caller.name, 403)
                raise Forbidden(
                    f"collection {collection!r} does not exist, and creating a collection needs "
                    f"an admin key; API key {caller.name!r} has {caller.access} access"
                )
        return caller

    return dependency


# What routes declare (`dependencies=[ReadAccess]`, or `caller: Annotated[Caller, ReadAccess]`
# to see who calls); the collection is found by `_collection_of`, the same for every route.
ReadAccess: Any = Depends(require(Access.READ))
WriteAccess: Any = Depends(require(Access.WRITE))
CreateAccess: Any = Depends(require(Access.WRITE, creates=True))  # ingest: may create
AdminAccess: Any = Depends(require(Access.ADMIN))
