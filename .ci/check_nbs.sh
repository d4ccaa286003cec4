#!/usr/bin/env bash
# Notebooks are the source: exporting and cleaning them must change nothing that is committed.
set -euo pipefail
nbdev_export
nbdev_clean
if [ -n "$(git status --porcelain)" ]; then
  echo "Notebooks and exported modules disagree (or a notebook is not cleaned):" >&2
  git status --porcelain >&2; git --no-pager diff --stat >&2
  exit 1
fi
echo "notebooks and modules agree"
# Every notebook is committed executed: its outputs are those of its current code (tools/run_nbs.py).
python tools/check_nb_outputs.py
