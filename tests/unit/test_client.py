"""cdeq-client's retries against a real cdeq app served by uvicorn (the tiny model, local
Qdrant) whose model server is held full: 429 with Retry-After is retried `max_retries` times,
then raised as RateLimited; a Retry-After over `max_backoff_s` is raised at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cdeq_client import AsyncClient, Client, RateLimited

from app.api import create_app
from app.config import QdrantSettings, RedisSettings, ServeSettings, Settings
from app.model import CdeEmbedder
from app.service import Cdeq
from app.serving import QUERY, ServedEmbedder
from tests.helpers.builders import free_port
from tests.helpers.faults import GatedEmbedder


def rejected(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("cdeq_serve_rejected_total "):
            return float(line.split()[1])
    raise AssertionError("no cdeq_serve_rejected_total in /metrics")


@pytest.fixture()
def full_server(embedder: CdeEmbedder, tmp_path: Path) -> Iterator[str]:
    """A cdeq app on a real port whose queue is full: one query held in the model's forward."""
    gated = GatedEmbedder(embedder)
    texts = ["held question"]
    room = sum(ServedEmbedder(embedder, ServeSettings()).costs(texts, QUERY))
    settings = Settings(
        qdrant=QdrantSettings(path=str(tmp_path / "q")),
        redis=RedisSettings(url=None),
        serve=ServeSettings(max_wait_ms=0, max_queue_tokens=room),
    )
    service = Cdeq(settings, embedder=gated)  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, service), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    held: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: None)
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            threading.Event().wait(0.05)
        body = {"input": texts, "input_type": "query"}
        holder = threading.Thread(
            target=lambda: held.append(httpx.post(f"{url}/v1/embeddings", json=body, timeout=60))
        )
        holder.start()
        assert gated.entered.wait(30)  # its forward is running and held: the queue is full
        yield url
    finally:
        gated.gate.set()
        holder.join(30)
        server.should_exit = True
        thread.join(30)
        service.close()
    assert held and held[0].status_code == 200  # the held request was never lost


def test_429_is_retried_then_raised(full_server: str) -> None:
    before = rejected(full_server)
    client = Client(full_server, max_retries=2, backoff_s=0, max_backoff_s=60)
    with pytest.raises(RateLimited) as exc:
        client.embed(["one more"])
    assert exc.value.status == 429 and exc.value.code == "overloaded"
    assert exc.value.retry_after_s is not None and exc.value.retry_after_s >= 1
    assert rejected(full_server) == before + 3  # the first try and two retries

    async def async_try() -> None:
        async with AsyncClient(full_server, max_retries=1, max_backoff_s=60) as aclient:
            await aclient.embed(["one more"], input_type="query")

    with pytest.raises(RateLimited):
        asyncio.run(async_try())
    assert rejected(full_server) == before + 5


def test_a_longer_retry_after_than_allowed_is_raised_at_once(full_server: str) -> None:
    before = rejected(full_server)
    client = Client(full_server, max_retries=5, max_backoff_s=0.5)  # the server asks for >= 1 s
    with pytest.raises(RateLimited):
        client.embed(["one more"])
    assert rejected(full_server) == before + 1
    no_retries = Client(full_server, max_retries=0)
    with pytest.raises(RateLimited):
        no_retries.embed(["one more"])
    assert rejected(full_server) == before + 2
