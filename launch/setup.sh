# Sourced by the launch scripts: create or reuse .venv with the project installed, and make sure
# the real Fashion-MNIST is on this machine (Debian's dataset-fashion-mnist) when that is possible.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "setting up .venv (torch, torchvision, wandb, pytest, ruff) ..."
  "$PY" -m venv .venv
fi
stamp=.venv/.alexnet2012-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
FMNIST=/usr/share/datasets/fashion-mnist
if [[ ! -f $FMNIST/t10k-labels-idx1-ubyte.gz ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  echo "installing Debian's dataset-fashion-mnist ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
    >/dev/null 2>&1 || echo "could not install dataset-fashion-mnist; tests that need it are skipped"
fi
export PATH="$ROOT/.venv/bin:$PATH"
source "$ROOT/launch/nccl.sh"  # TORCH_NCCL_* settings
