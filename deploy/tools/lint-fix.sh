#!/bin/sh
# After merging the helpers' branches: apply the repository's lint fixes and formatting once, everywhere.
#   sh deploy/tools/lint-fix.sh          (from the repository root; needs `make lint` to have installed the tools)
# Then review `git diff`, run `make lint` for what is left (mypy, and the lint rules ruff cannot fix itself),
# and commit the result as one change of form, not of behaviour.
set -eu
BIN="${BIN:-.venv/bin}"
test -x "$BIN/ruff" || { echo "no $BIN/ruff: run 'make lint' once (it installs ruff and mypy into .venv)"; exit 1; }
"$BIN/ruff" check --fix .
"$BIN/ruff" format .
echo "remaining, for a person:"
"$BIN/ruff" check --statistics . || true
"$BIN/mypy" | tail -1 || true
