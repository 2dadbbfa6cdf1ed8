#!/usr/bin/env bash
# kdbench's one entry point.
#   ./run_all.sh                    set up, run the default suite (Fashion-MNIST, CPU-sized), then report on it
#   ./run_all.sh test [ARGS]        set up, then run the test suite (ARGS go to pytest)
#   ./run_all.sh run SUITE [OPTS]   set up, then `kdbench run SUITE OPTS`
#   ./run_all.sh report SUITE [OPTS]  set up, then `kdbench report SUITE OPTS` (report/SUITE/leaderboard.md)
# Set-up: a .venv with the pinned torch/torchvision and the project, and Fashion-MNIST from Debian
# when it is missing and this machine can install it. KDBENCH_PYTHON=/path/to/python skips the venv
# and uses an interpreter that already has torch (a GPU machine with a preinstalled stack).
set -euo pipefail
cd "$(dirname "$0")"

TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
FMNIST_DIR=/usr/share/datasets/fashion-mnist

setup_python() {
  if [ -n "${KDBENCH_PYTHON:-}" ]; then
    PY="$KDBENCH_PYTHON"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    return
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
  # Reinstall only when the pins or pyproject.toml change.
  stamp=".venv/.kdbench-$( (echo "$TORCH_PIN"; cat pyproject.toml) | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "run_all.sh: installing $TORCH_PIN and kdbench into .venv (first time: a few minutes)" >&2
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q $TORCH_PIN
    "$PY" -m pip install -q -e ".[test]"
    rm -f .venv/.kdbench-*
    touch "$stamp"
  fi
}

setup_data() {
  [ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "run_all.sh: installing Fashion-MNIST from Debian (dataset-fashion-mnist)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "run_all.sh: could not install dataset-fashion-mnist; pass --data-dir" >&2
  else
    echo "run_all.sh: Fashion-MNIST not in $FMNIST_DIR; install dataset-fashion-mnist or pass --data-dir" >&2
  fi
}

setup_python
setup_data
case "${1:-}" in
  test) shift; exec "$PY" -m pytest "$@" ;;
  run) shift; exec "$PY" -m benchmarks run "$@" ;;
  report) shift; exec "$PY" -m benchmarks report "$@" ;;
  "") "$PY" -m benchmarks run default; exec "$PY" -m benchmarks report default ;;
  *) echo "usage: ./run_all.sh [test [pytest args] | run SUITE [options] | report SUITE [options]]" >&2; exit 2 ;;
esac
