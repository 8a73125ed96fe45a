#!/usr/bin/env bash
# Every GPU number in one go, bounded to ~8 minutes: for whoever has a GPU for a few minutes.
#
#   bench/gpu.sh [OUT_DIR]            # default OUT_DIR: bench/out/gpu-<date>
#   bench/gpu.sh --dry-run [OUT_DIR]  # the same steps on CPU with the tiny model, in seconds
#
# 1. bench/embed.py --device cuda         stage-2 throughput and bf16 MFU     → embed.json
# 2. bench/serve.py --device cuda         p50/p95/p99 and req/s at 1/8/32 clients, batched vs
#                                         per-request, MFU of the batched forwards → serve.json
# 3. the GPU-path tests (tests/unit/test_model.py, test_serving.py, test_api_serving.py with
#    the model on CUDA)                                                       → tests.txt
# Each step has its own time limit, so one slow step cannot eat the others' time; a step that
# fails or times out is recorded in summary.txt and the script goes on.
set -u
cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-bench/out/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
[[ -x .venv/bin/python && -z "${PYTHON:-}" ]] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ $DRY == 1 ]]; then
  DEVICE=cpu
  EMBED_ARGS=(--device cpu --dtypes float32 --n-docs 4 --context-docs 8 --repeat 1 --no-naive
              --model "$OUT/tiny-model")
  SERVE_ARGS=(--dry-run --device cpu --clients 1,8)
  TEST_ENV=()
  "$PY" -m app.cli make-tiny-model "$OUT/tiny-model" >/dev/null
  LIMITS=(180 240 300)  # generous: a shared CPU is slow
else
  DEVICE=cuda
  EMBED_ARGS=(--device cuda)
  SERVE_ARGS=(--device cuda --size full --clients 1,8,32 --requests 256 --rounds 2)
  TEST_ENV=(CDEQ_TEST_DEVICE=cuda)
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "no CUDA device: use --dry-run" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1
  LIMITS=(150 240 90)
fi

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record rc and time
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - started)) limit=$limit" | tee -a "$OUT/summary.txt"
}

: > "$OUT/summary.txt"
echo "device=$DEVICE dry_run=$DRY out=$OUT" | tee -a "$OUT/summary.txt"
step embed "${LIMITS[0]}" "$PY" bench/embed.py "${EMBED_ARGS[@]}" --json "$OUT/embed.json" \
  > "$OUT/embed.md" 2> "$OUT/embed.log"
step serve "${LIMITS[1]}" "$PY" bench/serve.py "${SERVE_ARGS[@]}" --json "$OUT/serve.json" \
  > "$OUT/serve.md" 2> "$OUT/serve.log"
step tests "${LIMITS[2]}" env "${TEST_ENV[@]}" "$PY" -m pytest -q -p no:cacheprovider \
  tests/unit/test_model.py tests/unit/test_serving.py tests/unit/test_api_serving.py \
  > "$OUT/tests.txt" 2>&1
cat "$OUT/embed.md" "$OUT/serve.md" 2>/dev/null
echo "results in $OUT"
