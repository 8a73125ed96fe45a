"""Connecting to Qdrant (server or local mode) and turning qdrant-client failures into cdeq errors.

Every client call in the store runs inside ``translated_errors`` so callers only ever see
``app.errors`` types: StoreUnavailable (retry), NotFound, InvalidInput or a plain CdeqError.
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import math
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
from qdrant_client import QdrantClient
from qdrant_client.common.client_exceptions import QdrantException, ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from app.config import QdrantSettings
from app.errors import CdeqError, InvalidInput, NotFound, StoreUnavailable

DEFAULT_RETRY_AFTER_S = 1.0
# A local folder that is read-only, locked or full usually recovers in seconds (remount, disk
# freed, the other process gone), not milliseconds.
LOCAL_RETRY_AFTER_S = 5.0
# Statuses that mean "the server (or a proxy before it) is busy or restarting", not "you are wrong".
_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
_TRANSIENT_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
_BAD_REQUEST_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def _close_at_exit(client: QdrantClient) -> QdrantClient:
    """Close ``client`` at interpreter exit if nobody did: its ``__del__`` would otherwise run
    during teardown and print "ImportError: sys.meta_path is None" (local mode closes its
    folder there). A weak reference: this keeps no client alive."""
    ref = weakref.ref(client)

    def close() -> None:
        alive = ref()
        if alive is not None:
            with contextlib.suppress(Exception):  # exiting anyway: nothing left to report to
                alive.close()

    atexit.register(close)
    return client


def open_client(settings: QdrantSettings) -> QdrantClient:
    """A client for ``settings.url`` (with api key and timeout) or, when unset, local mode on ``path``.

    Local mode locks its folder to one process; ``":memory:"`` gives a private in-memory store.
    """
    if settings.url:
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        # check_compatibility=False: the version probe is a blocking request at construction
        # time; opening must stay cheap and never fail, the first real call reports trouble.
        return _close_at_exit(
            QdrantClient(
                url=settings.url,
                api_key=api_key,
                timeout=math.ceil(settings.timeout_s),  # the client takes whole seconds
                check_compatibility=False,
            )
        )
    if settings.path == ":memory:":
        return _close_at_exit(QdrantClient(location=":memory:"))
    Path(settings.path).mkdir(parents=True, exist_ok=True)
    try:
        return _close_at_exit(QdrantClient(path=settings.path))
    except RuntimeError as exc:  # local mode refuses a folder another process holds
        raise StoreUnavailable(
            f"Qdrant local folder {settings.path!r} cannot be opened: {str(exc).rstrip('.')}. Local mode serves one "
            "process; run a Qdrant server and set CDEQ_QDRANT__URL to share data.",
            retry_after_s=LOCAL_RETRY_AFTER_S,
        ) from exc


def retry_after_seconds(value: str | None, default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; ``default`` if absent."""
    if value is None or not value.strip():
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def _server_message(exc: UnexpectedResponse) -> str:
    try:
        body: Any = exc.structured()
        return str(body["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return exc.content[:200].decode("utf-8", "replace") or (exc.reason_phrase or "")


def _from_status(exc: UnexpectedResponse, action: str, collection: str | None) -> CdeqError:
    status = exc.status_code or 0
    message = _server_message(exc)
    if status in _TRANSIENT_STATUSES:
        retry_after = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
        return StoreUnavailable(
            f"Qdrant answered {status} while {action}: {message}", retry_after_s=retry_after
        )
    if status == 404:
        if collection is not None:
            return NotFound(f"collection {collection!r} does not exist")
        return NotFound(f"Qdrant: not found while {action}: {message}")
    if status in (400, 409, 413, 422):
        return InvalidInput(f"Qdrant refused the request while {action}: {message}")
    if status in (401, 403):
        return CdeqError(
            f"Qdrant refused access while {action} (check CDEQ_QDRANT__API_KEY): {message}"
        )
    return CdeqError(f"Qdrant failed with {status} while {action}: {message}")


def _from_grpc(exc: grpc.RpcError, action: str, collection: str | None) -> CdeqError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code in _TRANSIENT_GRPC_CODES:
        return StoreUnavailable(f"Qdrant (gRPC {code}) while {action}: {details}")
    if code == grpc.StatusCode.NOT_FOUND:
        if collection is not None:
            return NotFound(f"collection {collection!r} does not exist")
        return NotFound(f"Qdrant: not found while {action}: {details}")
    if code in _BAD_REQUEST_GRPC_CODES:
        return InvalidInput(f"Qdrant refused the request while {action}: {details}")
    return CdeqError(f"Qdrant (gRPC {code}) failed while {action}: {details}")


@contextmanager
def translated_errors(action: str, *, collection: str | None = None) -> Iterator[None]:
    """Re-raise qdrant-client, transport and local-mode failures as cdeq errors (chained).

    ``action`` reads as "while <action>"; ``collection`` names the user collection for NotFound.
    """
    try:
        yield
    except CdeqError:
        raise  # already ours (InvalidInput is also a ValueError: keep it out of the branch below)
    except ResourceExhaustedResponse as exc:
        raise StoreUnavailable(
            f"Qdrant is overloaded while {action}: {exc}", retry_after_s=float(exc.retry_after_s)
        ) from exc
    except UnexpectedResponse as exc:
        raise _from_status(exc, action, collection) from exc
    except ResponseHandlingException as exc:
        # qdrant-client wraps every transport failure (refused, reset, timeout) in this type.
        if isinstance(exc.source, httpx.TransportError | OSError):
            raise StoreUnavailable(
                f"Qdrant did not answer while {action}: {type(exc.source).__name__}: {exc.source}"
            ) from exc
        raise CdeqError(
            f"Qdrant sent a response cdeq cannot read while {action}: {exc.source}"
        ) from exc
    except grpc.RpcError as exc:
        raise _from_grpc(exc, action, collection) from exc
    except (
        httpx.TransportError,
        OSError,
    ) as exc:  # OSError covers ConnectionError and TimeoutError
        raise StoreUnavailable(f"Qdrant did not answer while {action}: {exc}") from exc
    except QdrantException as exc:
        raise CdeqError(f"Qdrant client failed while {action}: {exc}") from exc
    except sqlite3.Error as exc:
        # Local mode persists points in SQLite: a read-only, locked or full folder is a fault of
        # the storage, not of the request, and an upsert is safe to repeat once it is fixed.
        raise StoreUnavailable(
            f"the local Qdrant folder could not be written while {action}: "
            f"{type(exc).__name__}: {exc} (read-only, locked or full?)",
            retry_after_s=LOCAL_RETRY_AFTER_S,
        ) from exc
    except ValueError as exc:
        # Local mode reports a missing collection and every bad request as a plain ValueError.
        text = str(exc)
        if "not found" in text.lower() and text.lower().startswith("collection"):
            if collection is not None:
                raise NotFound(f"collection {collection!r} does not exist") from exc
            raise NotFound(f"Qdrant: {text}") from exc
        raise InvalidInput(f"Qdrant refused the request while {action}: {text}") from exc
    except RuntimeError as exc:  # local mode: client closed, or its folder held by another process
        raise CdeqError(f"Qdrant client failed while {action}: {exc}") from exc
