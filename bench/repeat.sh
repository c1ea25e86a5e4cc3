#!/usr/bin/env bash
# Concurrency code is proven by repetition: run the concurrency-heavy test files COUNT times in a row
# (pytest-repeat, random order off), then the whole suite SUITE times. A flake is a bug: any failure
# stops the script with the failing run's output.
#
#   bash bench/repeat.sh            # 20 x the concurrency files, 3 x the whole suite
#   COUNT=5 SUITE=1 bash bench/repeat.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
COUNT=${COUNT:-20}
SUITE=${SUITE:-3}
concurrency_files=(
  tests/test_scope_ownership.py
  tests/test_futures.py
  tests/test_timeouts.py
  tests/test_task_runners.py
  tests/test_sync_stopping.py
  tests/test_generators_and_methods.py
  tests/test_fork_safety.py
  tests/test_signals.py
)
start=$(date +%s)
log=$(mktemp)
run() {  # the summary when it passes, the failures' details when it does not
  if "$python" -m pytest -q -p no:randomly "$@" >"$log" 2>&1; then tail -n 1 "$log"; else
    grep -E "^(E |FAILED|ERROR)|Error|passed|failed" "$log" | tail -n 60; echo "full output: $log"; exit 1; fi
}
echo "+ ${concurrency_files[*]} x $COUNT"
run --count "$COUNT" "${concurrency_files[@]}"
for i in $(seq 1 "$SUITE"); do
  echo "+ whole suite, run $i of $SUITE"
  run
done
echo "all passed in $(( $(date +%s) - start )) s"
