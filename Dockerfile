# cdeq images. Two targets, built by docker-compose.yml:
#
#   docker build --target api    -t cdeq-api    .   # CPU: HTTP API + `cdeq migrate`
#   docker build --target worker -t cdeq-worker .   # CUDA: Celery ingest workers
#
# pyproject.toml pins torch==2.13.0. PyPI's default torch wheel is not the
# build we want in either image, so each target first installs that exact
# version from the PyTorch wheel index for its device (--index-url
# https://download.pytorch.org/whl/cu126 or .../whl/cpu). The local version
# label (+cu126 / +cpu) is ignored when pip checks `torch==2.13.0`, so the
# later `pip install .` sees the pin as satisfied and leaves torch alone.
#
# The api embeds on CPU: it only embeds queries and small synchronous
# /v1/embeddings requests. Bulk ingest runs on the GPU workers.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# A `-base` CUDA image is enough: torch's CUDA wheels bring their own CUDA
# user-space libraries (cuBLAS, cuDNN, ... as nvidia-* wheels), and the NVIDIA
# container toolkit mounts the driver from the host at run time. A `-runtime`
# image also works but adds ~2 GB of duplicate libraries.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu22.04
ARG TORCH_VERSION=2.13.0
# cu126: the CUDA 12 build of torch 2.13.0 with the widest driver support
# (any CUDA 12 driver, >= 525, thanks to minor-version compatibility; >= 560
# recommended). Override with --build-arg for another CUDA line.
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu126
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# --------------------------------------------------------------------------
# api: python:3.11-slim with CPU-only torch
# --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS api
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models

RUN python -m venv /opt/venv

# Heavy and rarely changing: its own layer, before any project file.
RUN pip install --no-cache-dir --index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /tmp/src
# Dependencies from pyproject.toml only, so editing app code keeps this layer.
COPY pyproject.toml README.md* ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --no-cache-dir -r requirements.txt

COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir . \
 && python -c "import torch; assert not torch.version.cuda, torch.__version__" \
 && cd / && rm -rf /tmp/src

# Non-root (uid/gid 10001 in both images, so they can share volumes).
# /models is created here, owned by the app user, so a new named
# volume mounted there inherits that ownership and the HF cache is writable.
RUN groupadd --system --gid 10001 cdeq \
 && useradd --system --uid 10001 --gid cdeq --create-home --home-dir /home/cdeq cdeq \
 && mkdir -p /models \
 && chown cdeq:cdeq /models
USER cdeq
WORKDIR /home/cdeq

EXPOSE 8000
CMD ["cdeq", "serve", "--host", "0.0.0.0", "--port", "8000"]

# --------------------------------------------------------------------------
# worker: CUDA 12 base (Ubuntu 22.04) + Python 3.11 + CUDA torch
# --------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS worker
ARG TORCH_VERSION
ARG TORCH_CUDA_INDEX

ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models

# Ubuntu 22.04's own python3.11 (universe); the venv keeps pip off the system
# Python, and its pip (22.0 from Ubuntu) is upgraded.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && pip install --no-cache-dir --upgrade pip

RUN pip install --no-cache-dir --index-url "${TORCH_CUDA_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /tmp/src
COPY pyproject.toml README.md* ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --no-cache-dir -r requirements.txt

COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir . \
 && python -c "import torch; assert torch.version.cuda, torch.__version__" \
 && cd / && rm -rf /tmp/src

RUN groupadd --system --gid 10001 cdeq \
 && useradd --system --uid 10001 --gid cdeq --create-home --home-dir /home/cdeq cdeq \
 && mkdir -p /models \
 && chown cdeq:cdeq /models
USER cdeq
WORKDIR /home/cdeq

CMD ["cdeq", "worker"]
