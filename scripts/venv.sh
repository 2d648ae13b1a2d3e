#!/bin/bash
# Create/refresh the project venv (.venv) from Debian's python3 so that python3-rados/rbd and
# cloud-init's modules are importable; reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
STAMP=.venv/.hs-stamp
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then exit 0; fi
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
.venv/bin/pip install -q --upgrade pip 'setuptools>=68' wheel
.venv/bin/pip install -q -e '.[test]'
echo "$WANT" > "$STAMP"
