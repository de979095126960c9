#!/usr/bin/env bash
# One GPU session of at most 9 minutes: what to run first on a GPU box, before gpu-check and days
# of training. Every part has a hard time budget and appends each measurement to
# $OUT/session.jsonl as it is taken, so a part cut short keeps what it measured.
#
#   benchmarks/gpu_session.sh          # on the GPU: real sizes
#   benchmarks/gpu_session.sh --cpu    # every part at toy size on the CPU (CI runs this)
#   OUT=some/folder benchmarks/gpu_session.sh
#
# Out: $OUT/session.jsonl (one JSON object a line, each with a "part" field), $OUT/summary.md,
# and a Chrome trace of the profiled eager steps. Default $OUT: reports/gpu-session/<date>-<device>/.
# Exit status: non-zero only when the canary fails (then the other parts are skipped: the fast
# path is not to be trusted, or there is no CUDA) or summary.md cannot be written. Any other
# part's failure or timeout is written to the jsonl and the session goes on. The budgets
# (canary 60 s, throughput 150, profile 40, check 170, decode 35, summary 20) are for one H100.
#
# The parts are benchmarks/gpu_session.py's functions, one interpreter each, so that `timeout`
# can stop one without losing the others. PYTHON overrides the interpreter (default .venv's).
set -u

cd "$(dirname "$0")/.." || exit 2
CPU=""
for arg in "$@"; do
    case "$arg" in
        --cpu) CPU="--cpu" ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (expected --cpu)" >&2; exit 2 ;;
    esac
done
PY="${PYTHON:-.venv/bin/python}"
if [ -z "$CPU" ] && command -v nvidia-smi >/dev/null 2>&1; then
    DEVICE="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//')"
fi
DEVICE="${DEVICE:-${CPU:+cpu}}"
OUT="${OUT:-reports/gpu-session/$(date -u +%Y-%m-%d-%H%M%S)-${DEVICE:-unknown}}"
mkdir -p "$OUT" || exit 2
JSONL="$OUT/session.jsonl"

# What the shell knows and the part could not write: how long it ran, and whether its budget
# stopped it (timeout's 124, or 137 after the KILL that follows a TERM ignored for 5 s).
note() {  # part, budget, rc, seconds
    local why=""
    case "$3" in 124|137) why=", \"timed_out\": true" ;; esac
    printf '{"part": "%s", "budget_s": %s, "rc": %s, "wall_s": %s%s}\n' "$1" "$2" "$3" "$4" "$why" >> "$JSONL"
}

# The budgets are the GPU session's. With --cpu they are multiplied by CPU_BUDGET_SCALE (default
# 3): a toy part takes seconds on an idle CPU, but a shared CI runner or a loaded 2-core machine
# was measured 5x slower, and the CPU mode is there to show every part works, not to time them.
SCALE=1
[ -n "$CPU" ] && SCALE="${CPU_BUDGET_SCALE:-3}"
# One thread at toy size: torch's OpenMP threads spin while waiting for each other, and on a
# machine whose cores are busy elsewhere they burned 7x the CPU time of an idle run (canary 88 s
# against 12). The toy networks gain nothing from a second thread.
[ -n "$CPU" ] && export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

run_part() {  # part, budget in seconds on the GPU
    local start rc budget=$(( $2 * SCALE ))
    start=$(date +%s)
    echo "== $1 (at most $budget s) -> $JSONL"
    timeout --kill-after=5 "$budget" "$PY" benchmarks/gpu_session.py "$1" --out "$OUT" $CPU
    rc=$?
    note "$1" "$budget" "$rc" "$(( $(date +%s) - start ))"
    return "$rc"
}

status=0
if run_part canary 60; then
    run_part throughput 150
    run_part profile 40
    run_part check 170
    run_part decode 35
else
    status=1
    echo "canary failed: the other parts are skipped (see $JSONL)" >&2
fi
run_part summary 20 || status=1
[ -s "$OUT/summary.md" ] || status=1
echo "session: $OUT (exit $status)"
exit "$status"
