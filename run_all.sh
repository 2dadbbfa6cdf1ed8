#!/usr/bin/env bash
# kdbench's one entry point.
#   ./run_all.sh                    set up, run the default suite (Fashion-MNIST, CPU-sized), then report on it
#   ./run_all.sh test [ARGS]        set up, then run the test suite (ARGS go to pytest)
#   ./run_all.sh COMMAND [ARGS]     set up, then `kdbench COMMAND ARGS` (run, report, methods, suites, bench, --help)
# Set-up: a .venv with the pinned torch/torchvision and the project, and Fashion-MNIST from Debian
# when it is missing and this machine can install it. KDBENCH_PYTHON=/path/to/python skips the venv
# and uses an interpreter that already has torch (a GPU machine with a preinstalled stack); nothing
# is installed into it: benchmarks/ goes on PYTHONPATH, with one link for the plugins' mapping.
set -euo pipefail
if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
  export GOMP_SPINCOUNT=1000  # waiting OpenMP threads spin briefly, then sleep (docs/speed.md)
fi
cd "$(dirname "$0")"

TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
FMNIST_DIR=/usr/share/datasets/fashion-mnist

# The import name `kdbench` without installing: benchmarks/ is the source root, and the one mapping
# pyproject.toml states (methods/ installs as kdbench.methods) becomes a link, ignored by git.
link_plugins() {
  ln -sfn ../../methods benchmarks/kdbench/methods
}

setup_python() {
  if [ -n "${KDBENCH_PYTHON:-}" ]; then
    PY="$KDBENCH_PYTHON"
    link_plugins
    export PYTHONPATH="$PWD/benchmarks:$PWD${PYTHONPATH:+:$PYTHONPATH}"
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
    "$PY" -m pip install -q -e ".[test,cluster,models]"
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
  "") "$PY" -m kdbench run default; exec "$PY" -m kdbench report default ;;
  *) exec "$PY" -m kdbench "$@" ;;
esac
