#!/usr/bin/env bash
# Creates .venv with the package and its test tools, and makes sure Stockfish is there.
# Called by `make`; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Take a pinned torch first: an unpinned one would let pip pick the newest release,
# which on Linux is a multi-GB CUDA build. 2.13.0 is the CPU build on our machines;
# on a GPU box install the torch you want into .venv before running make.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e '.[dev,rllib]'

# Stockfish: the chess tasks' opponent. Debian/Ubuntu ship it as `stockfish` (in /usr/games).
if command -v stockfish >/dev/null 2>&1 || [ -x /usr/games/stockfish ] || [ -n "${LMRL_STOCKFISH:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Stockfish with apt-get (Debian package 'stockfish')"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stockfish
elif command -v brew >/dev/null 2>&1; then
  brew install stockfish
else
  echo "setup: Stockfish not found; install it (Debian: apt-get install stockfish;" \
       "macOS: brew install stockfish) or point LMRL_STOCKFISH at the binary." >&2
  exit 1
fi
