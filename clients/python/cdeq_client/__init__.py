"""cdeq-client: a small HTTP client of `cdeq serve` (contextual document embeddings), with
LangChain (`cdeq_client.langchain`) and LlamaIndex (`cdeq_client.llamaindex`) adapters."""

from cdeq_client.client import AsyncClient, Client
from cdeq_client.errors import (
    AuthenticationError,
    BadRequest,
    CdeqAPIError,
    CdeqConnectionError,
    Conflict,
    JobTimeout,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)
from cdeq_client.types import CollectionInfo, ContextInfo, Document, Hit, Job, SearchResults

# The server's version (pyproject.toml of cdeq, app.__version__): the two are released together.
__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "CdeqAPIError",
    "CdeqConnectionError",
    "Client",
    "CollectionInfo",
    "Conflict",
    "ContextInfo",
    "Document",
    "Hit",
    "Job",
    "JobTimeout",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "SearchResults",
    "ServerError",
    "ServiceUnavailable",
    "__version__",
]
