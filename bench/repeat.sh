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
echo "+ ${concurrency_files[*]} x $COUNT"
"$python" -m pytest -q -p no:randomly --count "$COUNT" "${concurrency_files[@]}" | tail -3
for i in $(seq 1 "$SUITE"); do
  echo "+ whole suite, run $i of $SUITE"
  "$python" -m pytest -q -p no:randomly | tail -3
done
echo "all passed in $(( $(date +%s) - start )) s"
