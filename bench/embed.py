"""Embedding throughput of cde-small-v1/v2 (full size, random weights) on this machine.

    .venv/bin/python bench/embed.py [--corpus FILE] [--device cpu|cuda] [--dtypes float32,bfloat16]
                                    [--n-docs N] [--model DIR] [--family v1|v2|v1,v2] [--dry-run]

The corpus is bench/data/docs.txt (600 real texts) unless --corpus names another file.

For each model family (`--family v1,v2` puts v2 next to v1 in one run) and dtype, stage-2
throughput of `CdeEmbedder.embed_documents` against a naive baseline in the same run (batches
of 32 in arrival order, padded to the longest, calling the model's second stage directly), and
model FLOP utilisation (MFU) against the dense matmul rate measured here in the same dtype. Also stage-1 throughput, and the peak RSS of a fresh process that has
loaded the full model in fp32. Prints one markdown table; progress goes to stderr.
See bench/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.model import (  # noqa: E402
    DOCUMENT_PREFIX,
    CdeEmbedder,
    Family,
    ModernBertBackboneConfig,
    sample_context,
)

OUT = ROOT / "bench" / "out"
DEFAULT_CORPUS = ROOT / "bench" / "data" / "docs.txt"  # 600 real texts; see bench/data/README.md
R = TypeVar("R")
NAIVE_BATCH = 32


# Defaults sized so the whole run takes ≤ ~10 minutes on a 2-core CPU (~1 s per document
# in fp32 there: every text costs 520 prefix tokens + its own through 12 layers).
@dataclass(frozen=True)
class Defaults:
    n_docs: int  # stage-2 documents
    context_docs: int  # stage-1 documents
    dtypes: str
    repeat: int  # timed repetitions, best kept


DEFAULTS = {
    "cpu": Defaults(n_docs=48, context_docs=64, dtypes="float32,bfloat16", repeat=2),
    "cuda": Defaults(n_docs=2048, context_docs=512, dtypes="bfloat16", repeat=3),
}
# Matmul shapes of the models' projections (M tokens × K → N): Wqkv, out_proj (both), then
# v1's fc11/fc12 and fc2, v2's Wi (the same shape as Wqkv) and Wo. One rate for both families.
MATMUL_SHAPES = [
    (2048, 768, 2304), (2048, 768, 768), (2048, 768, 3072), (2048, 3072, 768), (2048, 1152, 768),
]  # fmt: skip
FAMILIES = ("v1", "v2")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- corpus ------------------------------------------------------------------------------------
def read_corpus(path: Path) -> list[str]:
    """One text per line ('\\n' only: a stray '\\r' stays inside its text); blank lines dropped."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return [line for line in lines if line.strip()]


def display_path(path: Path) -> str:
    """The path relative to the repository when it is inside it (reports stay portable)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def sample_docs(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """n texts in random (arrival) order: without replacement while the corpus lasts."""
    rng = random.Random(seed)
    if n <= len(texts):
        return rng.sample(list(texts), n)
    return [rng.choice(texts) for _ in range(n)]


# ---- checkpoint --------------------------------------------------------------------------------
def full_checkpoint(texts: list[str], corpus_name: str, family: Family = "v1") -> Path:
    """A full-size random checkpoint whose tokenizer is trained on `texts`, cached in bench/out/."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    kind = "cde-full" if family == "v1" else "cde-v2-full"  # v1 keeps its earlier cache name
    folder = OUT / f"{kind}-{Path(corpus_name).stem}-{digest}"
    done = folder / ".complete"
    if done.is_file():
        log(f"reusing checkpoint {folder.relative_to(ROOT)}")
        return folder
    from app.model.tiny import make_checkpoint

    log(f"building full-size random {family} checkpoint in {folder.relative_to(ROOT)} (~1.2 GB)")
    make_checkpoint(folder, size="full", seed=0, corpus=texts, family=family)
    done.write_text("ok\n")
    return folder


def peak_rss_after_load(model_dir: Path) -> dict[str, float]:
    """Load the model in fp32 on CPU in a fresh process; its memory before any activation."""
    code = f"""
import json, resource, sys
sys.path.insert(0, {str(ROOT)!r})
def status():
    fields = dict(l.split(':', 1) for l in open('/proc/self/status'))
    return {{k: int(fields[k].split()[0]) / 1024 for k in ('VmHWM', 'VmRSS')}}
import torch
from app.model import CdeEmbedder
before = status()
e = CdeEmbedder.from_pretrained({str(model_dir)!r}, device='cpu', dtype='float32')
loaded = status()
# safetensors maps the file: weights become resident as they are first read. Read them all
# (no activations, no copies) to see what a serving process holds.
with torch.inference_mode():
    for p in e.model.parameters():
        p.sum()
touched = status()
params = sum(p.numel() * p.element_size() for p in e.model.parameters()) / 2**20
print(json.dumps({{'imports_rss_mib': before['VmRSS'], 'loaded_peak_mib': loaded['VmHWM'],
                  'peak_rss_mib': touched['VmHWM'], 'weights_mib': params,
                  'ru_maxrss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- measurement -------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], R], device: torch.device, repeat: int = 1) -> tuple[float, R]:
    """Best wall time of `repeat` (≥ 1) calls, and the last result."""
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times), result


def matmul_rate(dtype: torch.dtype, device: torch.device, reps: int = 5) -> float:
    """Dense matmul GFLOP/s: the best shape's best-of-`reps` over the model's projection shapes."""
    best = 0.0
    for M, K, N in MATMUL_SHAPES:
        a = torch.randn(M, K, dtype=dtype, device=device)
        b = torch.randn(K, N, dtype=dtype, device=device)
        torch.matmul(a, b)  # warm-up (library init, caches)
        seconds, _ = timed(partial(torch.matmul, a, b), device, repeat=reps)
        best = max(best, 2 * M * K * N / seconds / 1e9)
    return best


@dataclass(frozen=True)
class Shape:
    """Sizes that fix the FLOP count."""

    d: int = 768
    inner: int = 3072
    layers: int = 12
    prefix: int = 520
    # v2 (ModernBERT): layers i % global_every != 0 attend to keys within ±half_window only
    half_window: int | None = None
    global_every: int = 1


def shape_of(embedder: CdeEmbedder) -> Shape:
    cfg = embedder.config
    if isinstance(cfg.backbone, ModernBertBackboneConfig):
        b = cfg.backbone
        return Shape(b.hidden_size, b.intermediate_size, b.num_hidden_layers, cfg.prefix_length,
                     b.local_attention // 2, b.global_attn_every_n_layers)  # fmt: skip
    v1 = cfg.backbone
    return Shape(v1.n_embd, v1.n_inner, v1.n_layer, cfg.prefix_length)


def attended_keys(T: int, rows: range, half_window: int | None) -> int:
    """(query, key) pairs a layer needs for the query rows `rows` of a T-token sequence."""
    if half_window is None:
        return len(rows) * T
    return sum(min(T - 1, i + half_window) - max(0, i - half_window) + 1 for i in rows)


def stage2_flops(text_tokens: int, s: Shape) -> float:
    """Useful FLOPs of one stage-2 text of `text_tokens` tokens (no padding).

    Per layer and sequence of T = prefix + text tokens: 2·T·(D·3D + D·D + 3·D·inner) for the
    projections (v1 SwiGLU fc11/fc12/fc2 and v2 GeGLU Wi/Wo both cost 3·D·inner) and 4·D per
    attended (query, key) pair for scores and weighted sum: T² in global layers, only the keys
    within ±half_window in v2's local ones. The last layer only needs what pooling reads: keys
    and values at all T positions, but queries, attention rows, out_proj and MLP at the text
    positions alone — counted so (v1 skips the rest; v2 runs transformers' ModernBertModel,
    which computes every position, so its MFU pays for that). Plus the output projection (two
    D×D layers)."""
    d, inner, T, L = s.d, s.inner, s.prefix + text_tokens, text_tokens
    total = 2 * 2 * d * d
    for layer in range(s.layers):
        window = None if layer % s.global_every == 0 else s.half_window
        if layer < s.layers - 1:
            total += 2 * T * (d * 3 * d + d * d + 3 * d * inner)
            total += 4 * d * attended_keys(T, range(T), window)
        else:
            total += 2 * T * d * 2 * d + 2 * L * (d * d + d * d + 3 * d * inner)
            total += 4 * d * attended_keys(T, range(T - L, T), window)
    return total


def naive_embed(
    embedder: CdeEmbedder, ids: list[list[int]], prefix: torch.Tensor, dtype: torch.dtype
) -> np.ndarray:
    """The baseline: batches of 32 in arrival order, right-padded to the batch's longest text,
    straight through the model's second stage."""
    stage2 = embedder.model.second_stage_model
    pad = int(embedder.tokenizer.pad_token_id or 0)
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), NAIVE_BATCH):
            batch = ids[start : start + NAIVE_BATCH]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
            raw = stage2(input_ids.to(embedder.device), mask.to(embedder.device), prefix.to(dtype))
            out.append(torch.nn.functional.normalize(raw.float(), dim=-1).cpu().numpy())
    return np.concatenate(out)


def dataset_embeddings(
    embedder: CdeEmbedder, context_docs: list[str], device: torch.device, repeat: int
) -> tuple[np.ndarray, float]:
    """Stage 1 over `context_docs`; their outputs fill the 512 context slots the way
    `sample_context` fills a small corpus. Returns the (512, D) embeddings and docs/s."""
    if len(context_docs) == embedder.context_size:
        seconds, ds = timed(lambda: embedder.embed_context(context_docs), device, repeat)
        return np.asarray(ds), len(context_docs) / seconds
    # Fewer documents than a context holds (a CPU-sized run): time stage 1 on them through the
    # embedder's own batching, then reuse their outputs to fill the context.
    ids, _ = embedder.tokenize(context_docs, DOCUMENT_PREFIX)
    seconds, out = timed(
        lambda: embedder._run(ids, embedder.model.first_stage_model, 0, None), device, repeat
    )
    picks = sample_context(list(range(len(context_docs))), embedder.context_size, seed=0)
    return np.asarray(out)[picks], len(context_docs) / seconds


# ---- the run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the table."""

    family: str
    dtype: str
    pipeline: str  # "cdeq" or "naive"
    seconds: float
    docs_per_s: float
    tokens_per_s: float
    gflops: float  # useful GFLOP/s
    matmul: float  # dense matmul GFLOP/s in the same dtype


@dataclass
class DtypeRun:
    family: str
    dtype: str
    rows: list[Row]  # one per pipeline: cdeq, naive
    stage1_docs_per_s: float
    context: np.ndarray  # (512, D) dataset embeddings used for stage 2
    vectors: np.ndarray  # cdeq's stage-2 vectors
    agreement: float | None  # min cosine cdeq vs naive
    text_tokens: int
    prefix: int
    useful: float  # useful stage-2 FLOPs of the whole sample


@dataclass
class Setup:
    """One (family, dtype) ready to time: its embedder, stage-1 result and pipelines."""

    name: str  # "v2 bfloat16", for the log
    family: str
    dtype: torch.dtype
    stage1_docs_per_s: float
    context: np.ndarray
    pipelines: dict[str, Callable[[], np.ndarray]]
    text_tokens: int
    tokens: int  # text tokens + the prefix of every text
    prefix: int
    useful: float


def prepare(
    name: str,
    model_dir: Path,
    device: torch.device,
    docs: list[str],
    context_docs: list[str],
    *,
    context: np.ndarray | None,
    token_budget: int | None,
    repeat: int,
    naive: bool,
) -> Setup:
    """Load one (family, dtype), run and time its stage 1, and build its stage-2 pipelines."""
    dtype = getattr(torch, name)
    log(f"{name}: loading {model_dir.name}")
    embedder = CdeEmbedder.from_pretrained(
        model_dir, device=device, dtype=dtype, token_budget=token_budget
    )
    name = f"{embedder.family} {name}"
    shape = shape_of(embedder)
    log(f"{name}: stage 1 on {len(context_docs)} docs")
    stage1_repeat = repeat if device.type == "cuda" else 1  # CPU: one pass is long enough
    ds, stage1 = dataset_embeddings(embedder, context_docs, device, stage1_repeat)
    ds = ds if context is None else context

    ids, _ = embedder.tokenize(docs, DOCUMENT_PREFIX)
    text_tokens = [len(x) for x in ids]
    embedder.embed_documents(docs[:4], ds)  # warm-up: kernels, allocator
    prefix = embedder.model.second_stage_model.prefix(embedder.check_dataset_embeddings(ds))
    pipelines: dict[str, Callable[[], np.ndarray]] = {
        "cdeq": lambda: np.asarray(embedder.embed_documents(docs, ds)),
        "naive": lambda: naive_embed(embedder, ids, prefix, dtype),
    }
    if not naive:
        del pipelines["naive"]
    return Setup(
        name, embedder.family, dtype, stage1, ds, pipelines, sum(text_tokens),
        sum(text_tokens) + shape.prefix * len(ids), shape.prefix,
        sum(stage2_flops(n, shape) for n in text_tokens),
    )  # fmt: skip


def measure(setups: list[Setup], device: torch.device, repeat: int, n_docs: int) -> list[DtypeRun]:
    """Time every setup's pipelines in turn, `repeat` rounds, each keeping its best time: a
    burst of other work on the machine then hurts every family, dtype and pipeline alike
    instead of whichever happened to run during it."""
    rates = {s.dtype: matmul_rate(s.dtype, device) for s in setups}
    best = {(i, impl): float("inf") for i, s in enumerate(setups) for impl in s.pipelines}
    vectors: dict[tuple[int, str], np.ndarray] = {}
    for r in range(repeat):
        for i, setup in enumerate(setups):
            for impl, run in setup.pipelines.items():
                log(f"{setup.name}: {impl} on {n_docs} docs, round {r + 1}/{repeat}")
                seconds, vectors[i, impl] = timed(run, device)
                best[i, impl] = min(best[i, impl], seconds)
        for dtype in rates:
            rates[dtype] = max(rates[dtype], matmul_rate(dtype, device))
    runs = []
    for i, s in enumerate(setups):
        agreement = None
        if "naive" in s.pipelines:
            agreement = float((vectors[i, "cdeq"] * vectors[i, "naive"]).sum(1).min())
            log(f"{s.name}: min cosine cdeq vs naive {agreement:.7f}")
        dtype_name = str(s.dtype).removeprefix("torch.")
        rate = rates[s.dtype]
        rows = [
            Row(s.family, dtype_name, impl, best[i, impl], n_docs / best[i, impl],
                s.tokens / best[i, impl], s.useful / best[i, impl] / 1e9, rate)
            for impl in s.pipelines
        ]  # fmt: skip
        runs.append(
            DtypeRun(s.family, dtype_name, rows, s.stage1_docs_per_s, s.context,
                     vectors[i, "cdeq"], agreement, s.text_tokens, s.prefix, s.useful)
        )  # fmt: skip
    return runs


def machine(device: torch.device) -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"- CPU: {cpu}, {cores} cores available (os.cpu_count {os.cpu_count()})",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"Python {platform.python_version()}",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS,
        help="one text per line (default: bench/data/docs.txt, 600 texts of the CDE authors' "
        "random_docs.txt; pass that whole file for all 4,364)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--dtypes", help="comma-separated (cpu: float32,bfloat16; cuda: bfloat16)")
    parser.add_argument("--n-docs", type=int, help="stage-2 documents (cpu 48, cuda 2048)")
    parser.add_argument("--context-docs", type=int, help="stage-1 documents (cpu 64, cuda 512)")
    parser.add_argument("--model", type=Path, help="an existing checkpoint instead of a random one")
    parser.add_argument(
        "--family", default="v1", help="v1, v2 or v1,v2 (one table): random full-size models"
    )
    parser.add_argument("--token-budget", type=int, help="override the device's default budget")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--repeat", type=int, help="timed rounds, best kept (cpu 2, cuda 3)")
    parser.add_argument("--no-naive", action="store_true", help="skip the baseline (faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="a check in seconds: the tiny model on CPU, float32, 4 documents, one round",
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.dtypes, args.repeat = "cpu", args.dtypes or "float32", 1
        args.n_docs, args.context_docs, args.no_naive = (
            args.n_docs or 4,
            args.context_docs or 8,
            True,
        )
        if args.model is None:
            from app.model.tiny import make_checkpoint

            tmp = tempfile.mkdtemp(prefix="cdeq-bench-embed-")
            atexit.register(shutil.rmtree, tmp, ignore_errors=True)
            args.model = Path(tmp) / "tiny"
            make_checkpoint(args.model)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    defaults = DEFAULTS[device.type]
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [d.strip() for d in (args.dtypes or defaults.dtypes).split(",") if d.strip()]
    n_docs = args.n_docs or defaults.n_docs
    n_context = args.context_docs or defaults.context_docs
    repeat = args.repeat or defaults.repeat
    families = [f.strip() for f in args.family.split(",") if f.strip()]
    if not families or set(families) - set(FAMILIES):
        parser.error(f"--family: comma-separated {' / '.join(FAMILIES)}, got {args.family!r}")
    started = time.perf_counter()

    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")
    texts, corpus_name = read_corpus(args.corpus), display_path(args.corpus)
    if args.model:  # its family is the checkpoint's
        from app.model.checkpoint import read_config

        model_dirs = {read_config(args.model).family: args.model}
    else:
        model_dirs = {f: full_checkpoint(texts, corpus_name, f) for f in families}
    rss: dict[str, dict[str, float]] = {}
    for family, model_dir in model_dirs.items():
        log(f"peak RSS of a fresh process loading {model_dir.name} in fp32 ...")
        rss[family] = peak_rss_after_load(model_dir)

    docs = sample_docs(texts, n_docs, args.seed)
    context_docs = sample_docs(texts, n_context, args.seed + 1)
    load_before = os.getloadavg()
    setups: list[Setup] = []
    for model_dir in model_dirs.values():
        first_of_family: Setup | None = None
        for name in dtypes:
            # one context for every stage-2 run of a family (its first dtype's), so dtypes
            # differ in stage 2 only
            setup = prepare(
                name,
                model_dir,
                device,
                docs,
                context_docs,
                context=first_of_family.context if first_of_family else None,
                token_budget=args.token_budget,
                repeat=repeat,
                naive=not args.no_naive,
            )
            first_of_family = first_of_family or setup
            setups.append(setup)
    runs = measure(setups, device, repeat, len(docs))
    del setups
    gc.collect()

    # ---- report ----------------------------------------------------------------------------
    rows = [row for run in runs for row in run.rows]
    naive_rate = {(r.family, r.dtype): r.docs_per_s for r in rows if r.pipeline == "naive"}
    title = " and ".join(f"cde-small-{f}" for f in model_dirs)
    print(f"## {title} embedding throughput ({device.type})\n")
    print("\n".join(machine(device)))
    tokens = {run.family: run.text_tokens for run in runs}
    print(
        f"- corpus: {corpus_name} ({len(texts)} texts); stage 2 on {len(docs)} sampled documents "
        f"in arrival order; "
        + ", ".join(f"{f}: {n} text tokens" for f, n in tokens.items())
        + f" + {runs[0].prefix}-token prefix each; token budget {args.token_budget or 'default'}"
    )
    print(
        f"- load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(other work on the machine skews every number)\n"
    )
    print(
        "| model | dtype | pipeline | docs/s | tokens/s | speedup vs naive | vs naive fp32 | MFU "
        "| matmul GFLOP/s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        same = naive_rate.get((r.family, r.dtype))
        fp32 = naive_rate.get((r.family, "float32"))
        speedup = f"{r.docs_per_s / same:.2f}x" if same else "-"
        vs_fp32 = f"{r.docs_per_s / fp32:.2f}x" if fp32 else "-"
        label = "cdeq `embed_documents`" if r.pipeline == "cdeq" else "naive (32/batch, padded)"
        print(
            f"| {r.family} | {r.dtype} | {label} | {r.docs_per_s:.2f} | {r.tokens_per_s:,.0f} "
            f"| {speedup} | {vs_fp32} | {r.gflops / r.matmul:.0%} | {r.matmul:.0f} |"
        )
    print()
    for run in runs:
        print(
            f"- {run.family} stage 1 (`embed_context` batching), {run.dtype}: "
            f"{run.stage1_docs_per_s:.2f} docs/s on {len(context_docs)} docs"
        )
    agree = {f"{r.family} {r.dtype}": r.agreement for r in runs if r.agreement is not None}
    if agree:
        print(
            "- same texts, cdeq batches vs naive batches (batch composition must not matter): "
            "min cosine " + ", ".join(f"{v:.7f} ({k})" for k, v in agree.items())
        )
    useful = {run.family: run.useful / len(docs) / 1e9 for run in runs}
    print(
        "- MFU = useful FLOPs / time / matmul GFLOP/s; useful = "
        + ", ".join(f"{f}: {g:.0f}" for f, g in useful.items())
        + " GFLOP per document on average (real tokens only; see `stage2_flops`); matmul = "
        "best dense matmul rate of the models' projection shapes, measured before and after"
    )
    for family in model_dirs:
        reference = {run.dtype: run.vectors for run in runs if run.family == family}
        if "float32" in reference and "bfloat16" in reference:
            cos = (reference["float32"] * reference["bfloat16"]).sum(1)
            print(
                f"- {family} stage 2, bfloat16 vs float32 vectors (same context): min cosine "
                f"{cos.min():.5f}, mean {cos.mean():.5f}"
            )
    for family, r in rss.items():
        print(
            f"- {family}: peak RSS of a fresh process that loaded the full model in fp32 and read "
            f"every weight once (no activations): {r['peak_rss_mib']:,.0f} MiB (VmHWM; fp32 "
            f"weights {r['weights_mib']:,.0f} MiB, torch + imports {r['imports_rss_mib']:,.0f} "
            f"MiB; right after `from_pretrained`, before the memory-mapped weights are read: "
            f"{r['loaded_peak_mib']:,.0f} MiB)"
        )
    print(f"- wall time of this run: {time.perf_counter() - started:.0f} s")
    if args.json:
        stage1 = {f"{run.family} {run.dtype}": run.stage1_docs_per_s for run in runs}
        table = [dataclasses.asdict(r) for r in rows]
        args.json.write_text(json.dumps({"rows": table, "stage1": stage1, "rss": rss}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
