"""Run by tests/integration/test_client_package.py with the python of a fresh venv that has
only cdeq-client installed: drives a real `cdeq serve` and prints what it got as JSON."""

import asyncio
import json
import os
import sys

from cdeq_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    NotFound,
    PayloadTooLarge,
)

URL = os.environ["CDEQ_URL"]  # CDEQ_API_KEY holds the key: the client reads it itself
QUESTION = "when is high tide in region 3?"
TEXTS = ["the moon pulls the sea", "ebb and flow", "harbours and boats"]
out: dict[str, object] = {}

try:
    import torch  # noqa: F401

    out["torch"] = True
except ImportError:
    out["torch"] = False
try:
    import app  # noqa: F401

    out["app"] = True
except ImportError:
    out["app"] = False

documents = json.loads(sys.stdin.read())
with Client(URL) as cdeq:
    job = cdeq.ingest("venv-tides", documents, wait=True, timeout=300)
    out["job"] = {"state": job.state, "succeeded": job.succeeded, "total": job.total}
    hits = cdeq.search("venv-tides", QUESTION, top_k=3, filter={"metadata.parity": "odd"})
    out["hits"] = [[h.id, h.score, h.payload["metadata"]["parity"]] for h in hits]
    out["query"] = cdeq.embed([QUESTION], input_type="query", collection="venv-tides")
    out["documents"] = cdeq.embed(TEXTS, collection="venv-tides")
    out["generic"] = cdeq.embed(TEXTS, input_type="document")
    out["collections"] = {c.name: c.points for c in cdeq.collections()}
    out["context_version"] = cdeq.context_show("venv-tides").version
    errors: dict[str, object] = {}
    try:
        Client(URL, api_key="not-the-key").collections()
    except AuthenticationError as exc:
        errors["401"] = [exc.status, exc.code, exc.message]
    try:
        cdeq.search("no-such-collection", QUESTION)
    except NotFound as exc:
        errors["404"] = [exc.status, exc.code, exc.message]
    try:
        cdeq.embed(["tide " * 700], truncate=False)
    except PayloadTooLarge as exc:
        errors["413"] = [exc.status, exc.code, exc.param]
    out["errors"] = errors
    out["deleted"] = cdeq.delete("venv-tides", ["d0", "d2"])  # even: the search filter skips them


async def main() -> None:
    async with AsyncClient(URL) as cdeq:
        out["async_query"] = await cdeq.embed(QUESTION, input_type="query", collection="venv-tides")
        out["async_hits"] = [h.id for h in await cdeq.search("venv-tides", QUESTION, top_k=3)]


asyncio.run(main())
print(json.dumps(out))
