#!/usr/bin/env bash
# Before a GPU session: the wheels the device machine lacks, for its Python (3.12), into ./.whl (git-ignored).
# The device tool carries them with `carry: [".whl"]`; run.sh installs them to /tmp/site. Today: PyAV, which
# the gpu tests that write and decode real mp4 files need (without it they skip).
#
#   benchmarks/gpu/wheels.sh            PYTHON_VERSION=3.12 PLATFORM=manylinux_2_28_x86_64 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
"$PY" -m pip download av --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
  --platform "${PLATFORM:-manylinux_2_28_x86_64}" -d .whl
ls -l .whl
