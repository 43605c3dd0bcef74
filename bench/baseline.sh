#!/usr/bin/env bash
# Install tether as it was at REV into its own git worktree and venv, for side-by-side benchmarks:
#   bench/baseline.sh REV [DIR]      (DIR defaults to /tmp/tether-baseline)
# then: .venv/bin/python -m bench --targets tether,old --python old=DIR/.venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/baseline.sh REV [DIR]}
dir=${2:-/tmp/tether-baseline}
if [ -e "$dir" ]; then git worktree remove --force "$dir" 2>/dev/null || rm -rf "$dir"; fi
git worktree prune
git worktree add --detach "$dir" "$rev" >/dev/null
python3 -m venv "$dir/.venv"
# Editable: older trees did not list every data file (close_codes.json) as package data.
"$dir/.venv/bin/python" -m pip install -q -e "$dir" >/dev/null
echo "$dir/.venv/bin/python"
