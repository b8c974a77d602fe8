#!/usr/bin/env bash
# Installs Label Studio into its own virtual environment for the tests that run a real server
# (tests/label_studio_server.py). It is kept out of .venv: its pins clash with the project's, and
# the project's constraints.txt is deliberately not used here.
#
# Idempotent: a stamp file naming the installed version makes a second run instant.
# On failure it prints one line saying why and exits non-zero.
#
#   scripts/setup-label-studio.sh            # installs into .cache/label-studio/venv
#   BIFOCAL_LABEL_STUDIO_VENV=DIR scripts/setup-label-studio.sh
set -euo pipefail

VERSION="1.23.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BIFOCAL_LABEL_STUDIO_VENV:-$ROOT/.cache/label-studio/venv}"
STAMP="$VENV/.label-studio-$VERSION"
PYTHON="${PYTHON:-python3}"

fail() {
    echo "setup-label-studio: $1" >&2
    exit 1
}

if [[ -f "$STAMP" && -x "$VENV/bin/label-studio" ]]; then
    exit 0
fi

command -v "$PYTHON" >/dev/null || fail "$PYTHON not found"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV" >"$LOG" 2>&1 || fail "cannot create the venv $VENV: $(tail -1 "$LOG")"
"$VENV/bin/python" -m pip install -q "label-studio==$VERSION" >"$LOG" 2>&1 \
    || fail "pip install label-studio==$VERSION failed: $(grep -m1 -E 'ERROR' "$LOG" || tail -1 "$LOG")"
# not `label-studio --version`: it migrates a database under ~/.local/share
"$VENV/bin/python" -c "import label_studio, sys; sys.exit(label_studio.__version__ != '$VERSION')" \
    >"$LOG" 2>&1 || fail "label-studio $VERSION does not import after install: $(tail -1 "$LOG")"
touch "$STAMP"
echo "setup-label-studio: label-studio $VERSION installed in $VENV"
