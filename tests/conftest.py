"""Shared fixtures: tiny random checkpoints made by the project itself, loaded once."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.config import QdrantSettings
from app.model import CdeEmbedder
from app.model.tiny import make_checkpoint
from app.store import META_COLLECTION, QdrantStore, open_client

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "cde-v1-tiny"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint in the official layout (hidden 64, 2 layers, context 16)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-model"), size="tiny", seed=1)


@pytest.fixture(scope="session")
def embedder(tiny_model_dir: Path) -> CdeEmbedder:
    """One fp32 embedder for the whole session; tests must not mutate it. On CPU, unless
    CDEQ_TEST_DEVICE names another device (bench/gpu.sh runs the GPU-path tests with cuda)."""
    device = os.environ.get("CDEQ_TEST_DEVICE", "cpu")
    return CdeEmbedder.from_pretrained(tiny_model_dir, device=device, dtype="float32")


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may break."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


# ---- Qdrant store: one fixture over every backend that answers ("congruence tests") ----------
# local mode (in memory and on disk) always; a server when QDRANT_URL is set; a testcontainers
# Qdrant when a Docker engine answers. Remote backends get private names, removed afterwards.

STORE_BACKENDS = ["local-memory", "local-path", "server", "container"]


@pytest.fixture(scope="session")
def qdrant_container_url() -> Iterator[str]:
    """URL of a throwaway Qdrant container, or a skip when no Docker engine answers."""
    docker = pytest.importorskip("docker")
    try:
        docker.from_env(timeout=3).ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}), so no Qdrant container")
    from testcontainers.qdrant import QdrantContainer

    with QdrantContainer() as container:
        host = container.get_container_host_ip()
        yield f"http://{host}:{container.get_exposed_port(6333)}"


@pytest.fixture()
def store_token() -> str:
    """A per-test suffix that keeps collection names apart on a shared server."""
    return uuid.uuid4().hex[:10]


@pytest.fixture()
def uniq(store_token: str) -> Callable[[str], str]:
    """``uniq("docs")`` -> a collection name private to this test."""
    return lambda base: f"{base}-{store_token}"


@pytest.fixture(params=STORE_BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, store_token: str
) -> Iterator[QdrantStore]:
    """A dim-4 QdrantStore, never migrated, on each backend in turn."""
    backend = request.param
    remote = backend in ("server", "container")
    if backend == "local-memory":
        settings = QdrantSettings(path=":memory:")
    elif backend == "local-path":
        settings = QdrantSettings(path=str(tmp_path / "qdrant"))
    elif backend == "server":
        if not os.environ.get("QDRANT_URL"):
            pytest.skip("QDRANT_URL is not set, so no Qdrant server to test against")
        settings = QdrantSettings(
            url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY") or None
        )
    else:
        settings = QdrantSettings(url=request.getfixturevalue("qdrant_container_url"))
    meta = f"cdeq_meta-{store_token}" if remote else META_COLLECTION
    qstore = QdrantStore(open_client(settings), dim=4, meta_collection=meta)
    yield qstore
    if remote:  # leave a shared server as we found it (deleting a collection drops its aliases)
        for collection in qstore.client.get_collections().collections:
            if store_token in collection.name:
                qstore.client.delete_collection(collection.name)
    qstore.close()


# ---- HTTP API (tests/unit/test_api*.py, tests/integration/test_api*.py) --------------------------------------------------------------
@pytest.fixture(scope="module")
def api_service(
    tmp_path_factory: pytest.TempPathFactory, embedder: CdeEmbedder
) -> Iterator[object]:
    """An in-process service (no Redis) over a private local Qdrant folder, for one module.

    Settings groups are passed explicitly, so CDEQ_* variables of the environment cannot leak in."""
    from app.config import ApiSettings, QdrantSettings, RedisSettings, Settings
    from app.service import Cdeq

    settings = Settings(
        qdrant=QdrantSettings(path=str(tmp_path_factory.mktemp("api-qdrant"))),
        redis=RedisSettings(url=None),
        api=ApiSettings(),
    )
    service = Cdeq(settings, embedder=embedder)
    yield service
    service.close()
