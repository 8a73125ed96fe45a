"""The one error hierarchy of cdeq.

Core code raises these; entry points (CLI, HTTP, Celery tasks) map them to exit codes,
status codes or retries, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence


class CdeqError(Exception):
    """Root of every error cdeq raises on purpose."""


class InvalidInput(CdeqError, ValueError):
    """Input broke a rule. ``problems`` lists every violation, each naming the item and rule."""

    def __init__(self, problems: str | Sequence[str], *, field: str | None = None) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        self.field = field
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            shown = self.problems[:50]
            more = len(self.problems) - len(shown)
            message = f"{len(self.problems)} problems: " + "; ".join(shown)
            if more:
                message += f"; … and {more} more"
        super().__init__(message)


class ModelLoadError(CdeqError):
    """A checkpoint could not be found, downloaded or loaded exactly."""


class NotFound(CdeqError):
    """A named collection, job or document does not exist."""


class Conflict(CdeqError):
    """The request clashes with the collection's current state (e.g. a rebuild already runs)."""


class ModelMismatch(Conflict):
    """The collection was embedded with another model than the one this process serves."""


class ContextNotReady(CdeqError):
    """A collection's context is being built by another worker; try again shortly."""

    def __init__(self, message: str, *, retry_after_s: float = 2.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(CdeqError):
    """Qdrant or Redis did not answer; the operation is safe to retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ResourceBusy(CdeqError):
    """A local resource cdeq needs is held by another process: a local Qdrant folder, or the
    port `cdeq serve` should listen on. Not retried: another process owns it."""


class Overloaded(CdeqError):
    """Too much work in flight; the caller should come back after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InputTooLong(InvalidInput):
    """A text is longer than the model's limit and the caller asked not to truncate it."""


class DeviceOutOfMemory(CdeqError):
    """A single text does not fit in the accelerator's memory even alone (batches are split
    first); the device may have room again after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# Errors that pass: a batch that meets one is tried again later instead of failing its documents.
TRANSIENT_ERRORS = (StoreUnavailable, ContextNotReady)
