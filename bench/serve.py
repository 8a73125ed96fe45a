"""Serving latency and throughput of a real `cdeq serve`: the batching model server against the
per-request path (`CDEQ_SERVE__BATCHING=false`), in the same run.

    .venv/bin/python bench/serve.py [--model DIR | --size mid] [--device cpu|cuda]
                                    [--clients 1,8,32] [--requests N] [--json FILE] [--dry-run]
                                    [--modes batched,batched-2,per-request]

For each mode the script starts `cdeq serve` (local Qdrant folder, no Redis, query cache off so
every request runs the model), ingests a collection of real texts (bench/data/docs.txt), warms
up, then for each client count N runs N threads that together send `--requests` single-query
requests, alternating `POST /v1/collections/{name}/search` and `POST /v1/embeddings`
(`input_type: query`, against that collection). Each request has its own text, so nothing is
cached. Reported per (mode, clients): p50/p95/p99 latency and requests per second; then the
ratios the targets are about: throughput at the most clients, batching / per-request, and
p50 at one client.

On CUDA it also reports the MFU of the batched forwards (useful stage-2 FLOPs from the server's
own /metrics — tokens and forward time — against the dense bf16 matmul rate measured here, as
bench/embed.py does). `--dry-run`: the tiny model, few requests — checks the script end to end
in seconds. Progress goes to stderr; one markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx  # noqa: E402

OUT = ROOT / "bench" / "out"
CORPUS = ROOT / "bench" / "data" / "docs.txt"
COLLECTION = "bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def checkpoint(size: str) -> Path:
    """A random checkpoint of `size` (cached under bench/out/), its tokenizer trained on the
    benchmark corpus so token counts are realistic."""
    from app.model.tiny import make_checkpoint

    folder = OUT / f"{size}-model"
    if not (folder / "config.json").is_file():
        log(f"making a random {size} checkpoint in {folder} …")
        make_checkpoint(folder, size=size, seed=0, corpus=read_corpus())
    return folder


def read_corpus() -> list[str]:
    return [
        line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(
    model: Path, device: str, batching: bool, tmp: Path, model_threads: int | None = None
) -> Iterator[str]:
    """A real `cdeq serve` in one mode; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    env.update(
        PYTHONPATH=str(ROOT),
        CDEQ_QDRANT__PATH=str(tmp / f"qdrant-{batching}-{model_threads}"),
        CDEQ_SERVE__BATCHING=str(batching).lower(),
        CDEQ_SERVE__CACHE_SIZE="0",  # measure the model, not the cache
        CDEQ_SERVE__MAX_QUEUE_TOKENS=str(100_000_000),  # no 429s in a benchmark
        CDEQ_LOG_LEVEL="WARNING",
    )
    if model_threads is not None:
        env["CDEQ_SERVE__MODEL_THREADS"] = str(model_threads)
    out = (tmp / f"server-{batching}-{model_threads}.log").open("wb")
    cmd = [sys.executable, "-m", "app.cli", "serve", "--model", str(model), "--device", device]
    process = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"cdeq serve exited with {process.returncode}; see {out.name}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("cdeq serve did not come up in 300 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        out.close()


def request(http: httpx.Client, url: str, i: int, text: str) -> float:
    """One single-query request (search or embeddings, alternating); its latency in seconds."""
    started = time.perf_counter()
    if i % 2 == 0:
        r = http.post(f"{url}/v1/collections/{COLLECTION}/search", json={"text": text, "top_k": 5})
    else:
        body = {"input": text, "input_type": "query", "collection": COLLECTION}
        r = http.post(f"{url}/v1/embeddings", json=body)
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        raise SystemExit(f"request {i} failed: {r.status_code} {r.text[:300]}")
    return elapsed


def drive(url: str, clients: int, texts: Sequence[str]) -> dict[str, float]:
    """`clients` threads share `texts` (one request each); latency percentiles and req/s."""
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(len(texts)))
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            barrier.wait()
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                seconds = request(http, url, i, texts[i])
                with lock:
                    latencies.append(seconds)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * q[94],
        "p99_ms": 1000 * q[98],
        "rps": len(latencies) / wall,
    }


def scrape(url: str) -> dict[str, float]:
    """Sums of the model server's metrics (tokens, rows, forward seconds)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for name in (
        "cdeq_serve_tokens_total",
        "cdeq_serve_batch_size_sum",
        "cdeq_serve_batch_size_count",
        "cdeq_serve_forward_seconds_sum",
    ):
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        found[name] = float(match.group(1)) if match else 0.0
    return found


def mfu(
    before: dict[str, float], after: dict[str, float], model: Path, device: str
) -> dict[str, float]:
    """MFU of the forwards between two scrapes: useful FLOPs / forward time / bf16 matmul rate."""
    import torch
    from embed import Shape, matmul_rate, stage2_flops  # bench/embed.py

    from app.model.checkpoint import read_config

    cfg = read_config(model)
    b = cfg.backbone
    shape = Shape(d=b.n_embd, inner=b.n_inner, layers=b.n_layer, prefix=cfg.prefix_length)
    rows = after["cdeq_serve_batch_size_sum"] - before["cdeq_serve_batch_size_sum"]
    tokens = after["cdeq_serve_tokens_total"] - before["cdeq_serve_tokens_total"]
    seconds = after["cdeq_serve_forward_seconds_sum"] - before["cdeq_serve_forward_seconds_sum"]
    forwards = after["cdeq_serve_batch_size_count"] - before["cdeq_serve_batch_size_count"]
    if rows <= 0 or seconds <= 0:
        return {}
    text_tokens = tokens / rows - cfg.prefix_length
    useful = rows * stage2_flops(round(text_tokens), shape)
    peak = matmul_rate(torch.bfloat16, torch.device(device)) * 1e9
    return {
        "mfu": useful / seconds / peak,
        "useful_tflops": useful / seconds / 1e12,
        "matmul_tflops": peak / 1e12,
        "rows_per_forward": rows / max(forwards, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a checkpoint folder (default: --size)")
    parser.add_argument("--size", default="mid", choices=["tiny", "mid", "full"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=128, help="requests per row and round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds; each runs every (clients, mode) once, modes interleaved; the table "
        "shows medians over rounds",
    )
    parser.add_argument(
        "--modes",
        default="batched,per-request",
        help="batched (the server's default model threads), batched-N (N model threads), "
        "per-request",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--dry-run", action="store_true", help="tiny model, 8 requests: a check")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.size, args.requests, args.rounds, args.model = "tiny", 8, 1, None
    model = args.model or checkpoint(args.size)
    clients = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",")
    corpus = read_corpus()
    documents = [{"id": f"d{i}", "text": t} for i, t in enumerate(corpus[:200])]
    # query texts: sentences of the corpus, each used once per (round, mode, clients)
    words = " ".join(corpus[200:]).split()
    queries = [" ".join(words[i * 12 : i * 12 + 12]) for i in range(args.requests)]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as servers:
        tmp = Path(tmp_name)
        urls: dict[str, str] = {}
        for mode in modes:  # every mode's server up at once: idle ones cost nothing
            batching = mode.startswith("batched")
            threads = int(mode.split("-")[1]) if mode.startswith("batched-") else None
            url = servers.enter_context(server(model, args.device, batching, tmp, threads))
            log(f"[{mode}] ingesting {len(documents)} documents …")
            r = httpx.post(
                f"{url}/v1/collections/{COLLECTION}/documents",
                json={"documents": documents},
                timeout=1800,
            )
            r.raise_for_status()
            drive(url, 4, [f"warm-up {i} {q}" for i, q in enumerate(queries[:8])])
            urls[mode] = url
        for round_ in range(args.rounds):
            for n in clients:
                # modes take turns, the first one rotating: a slow minute of a noisy machine
                # falls on every mode alike
                turn = (round_ + clients.index(n)) % len(modes)
                for mode in modes[turn:] + modes[:turn]:
                    url = urls[mode]
                    before = scrape(url)
                    row: dict[str, Any] = {"mode": mode, "clients": n, "round": round_}
                    texts = [f"{q} ({mode} {n} {round_})" for q in queries]
                    row.update(drive(url, n, texts))
                    if mode.startswith("batched") and args.device.startswith("cuda"):
                        row.update(mfu(before, scrape(url), model, args.device))
                    runs.append(row)
                    log(f"[{mode}] round {round_}, {n} clients: {row}")
    results = summarize(runs, modes, clients)
    print(report(results, runs, args, model))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": str(model),
            "device": args.device,
            "requests": args.requests,
            "rounds": args.rounds,
        }
        payload = {"meta": meta, "results": results, "runs": runs}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def summarize(
    runs: list[dict[str, Any]], modes: list[str], clients: list[int]
) -> list[dict[str, Any]]:
    """Per (mode, clients): the median of each number over the rounds."""
    results = []
    for mode in modes:
        for n in clients:
            mine = [r for r in runs if r["mode"] == mode and r["clients"] == n]
            row: dict[str, Any] = {"mode": mode, "clients": n, "rounds": len(mine)}
            for name in mine[0]:
                if name not in row and name != "round":
                    row[name] = statistics.median(r[name] for r in mine)
            results.append(row)
    return results


def round_ratios(runs: list[dict[str, Any]], mode: str, clients: int, field: str) -> list[float]:
    """`field` of `mode` ÷ the per-request path's, round by round (same minutes of the run)."""
    by = {(r["mode"], r["clients"], r["round"]): r[field] for r in runs}
    return [
        value / by[("per-request", clients, k)]
        for (m, n, k), value in by.items()
        if m == mode and n == clients and ("per-request", clients, k) in by
    ]


def report(
    results: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    model: Path,
) -> str:
    lines = [
        f"Serving: {model.name} on {args.device} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs), {args.requests} single-query requests per row and round "
        "(search and /v1/embeddings alternating), query cache off; medians of "
        f"{args.rounds} round(s), modes interleaved",
        "",
        "| mode | clients | p50 ms | p95 ms | p99 ms | req/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        mfu_cell = f"{r['mfu']:.0%}" if "mfu" in r else "–"
        lines.append(
            f"| {r['mode']} | {r['clients']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['rps']:.1f} | {mfu_cell} |"
        )
    most, least = max(r["clients"] for r in results), min(r["clients"] for r in results)
    batched = [m for m in dict.fromkeys(r["mode"] for r in results) if m.startswith("batched")]
    lines.append("")
    for mode in batched:
        rps = round_ratios(runs, mode, most, "rps")
        p50 = round_ratios(runs, mode, least, "p50_ms")
        if not rps or not p50:
            continue
        each = ", ".join(f"{x:.2f}" for x in rps)
        lines += [
            f"- throughput at {most} clients, {mode} / per-request: "
            f"**{statistics.median(rps):.2f}×** (median; rounds: {each})",
            f"- p50 at {least} client(s), {mode} / per-request: "
            f"**{statistics.median(p50):.2f}×** (median; < 1 is faster)",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
