#!/usr/bin/env bash
# The whole test suite, with ruff (lint and format check), on a fresh or an existing machine.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
# tests/test_slurm.py runs launch/slurm.sbatch under a one-node Slurm cluster of its own (Debian's
# slurm-wlm and munge); installed here when that is possible, else that test is skipped
if ! PATH="$PATH:/usr/sbin:/sbin" command -v slurmctld >/dev/null && command -v apt-get >/dev/null \
  && [[ $(id -u) == 0 ]]; then
  echo "installing Debian's slurm-wlm and munge ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) \
    >/dev/null 2>&1 || echo "could not install slurm-wlm and munge; tests/test_slurm.py is skipped"
fi
ruff check .
ruff format --check .
python -m pytest "$@"
