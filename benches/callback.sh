#!/usr/bin/env bash
# Callback verify + decrypt + parse: closeloop vs wechatpy on the same bytes, same run.
# Usage: bash benches/callback.sh   (installs wechatpy from PyPI when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench callback
python3 -c "import wechatpy" 2>/dev/null || pip install --quiet wechatpy
python3 benches/wechatpy_callback.py
