#!/usr/bin/env bash
# The whole test suite, with ruff (lint and format check), on a fresh or an existing machine.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
ruff check .
ruff format --check .
python -m pytest "$@"
