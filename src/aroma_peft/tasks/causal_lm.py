"""Causal-LM plumbing shared by instruction tasks: loading, default targets, batching, sparse-head loss.

The LM head of a small model is a large share of each step (SmolLM2: 576 x 49,152, about a fifth of
the model's multiply-adds at 256 tokens), yet with response-only loss a few percent of positions carry
loss. So the loss is computed outside the model's forward: hidden states from the decoder, gathered at
the loss positions, then the head on those rows only. Whatever a model's forward would have added to
``outputs.loss`` (AdaLoRA's orthogonal penalty) is added back by ``forward_penalty``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserInputError

IGNORE = -100  # label of a position that carries no loss (the PyTorch / transformers convention)
LLAMA_FAMILY = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2"}
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]  # the AROMA paper's LLaMA targets


def load_causal_lm(name_or_path: str | None) -> tuple[nn.Module, object]:
    """A causal LM and its tokenizer; ``None`` gives the prepared SmolLM2-135M-Instruct (converted once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..prepare import default_causal_lm_path

    path = name_or_path or default_causal_lm_path()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise UserInputError(f"{path}: not a causal LM folder or hub name ({first})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked everywhere: any id will do
    return model, tokenizer


def default_target_modules(model: nn.Module) -> list[str]:
    """q, k, v, up and down projections for LLaMA-family decoders (the paper's choice)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in LLAMA_FAMILY:
        return list(LLAMA_TARGETS)
    raise UserInputError(
        f"no default target modules for model type {model_type!r}: pass --target-modules "
        f"(LLaMA-family defaults: {','.join(LLAMA_TARGETS)})"
    )


def collate_causal(features: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (``IGNORE`` on padding)."""
    length = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), length), pad_id, dtype=torch.long)
    labels = torch.full((len(features), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(features), length), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT or aroma-peft wrapper (adapters stay injected in it)."""
    from transformers import PreTrainedModel

    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    while not isinstance(model, PreTrainedModel) and isinstance(getattr(model, "model", None), nn.Module):
        model = model.model  # aroma-peft's AdaptedModel
    return model


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not ``IGNORE``.

    Equal to ``model(**batch).loss`` (tested) but the head runs on the loss positions only.
    """
    inner = hf_model(model)
    hidden = inner.get_decoder()(
        input_ids=batch.get("input_ids"),
        inputs_embeds=batch.get("inputs_embeds"),  # the bench's frozen floor backpropagates to these
        attention_mask=batch["attention_mask"],
        use_cache=False,
    ).last_hidden_state  # (B, T, H)
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE
    logits = inner.get_output_embeddings()(hidden[:, :-1][keep])  # (N, V), N = loss positions
    return F.cross_entropy(logits.float(), targets[keep]) + forward_penalty(model)


def forward_penalty(model: nn.Module) -> torch.Tensor | float:
    """Loss terms the model's forward adds to ``outputs.loss``, which a loss outside forward would drop.

    PEFT's AdaLoRA adds ``orth_reg_weight * mean_m ||P P^T - I||_F`` (A's rows, B's columns) in
    ``AdaLoraModel.forward``; the same formula is applied here.
    """
    from peft.tuners.adalora import AdaLoraModel

    tuner = getattr(model, "base_model", None)
    if not isinstance(tuner, AdaLoraModel):
        return 0.0
    name = tuner.trainable_adapter_name
    weight = tuner.peft_config[name].orth_reg_weight
    terms = []
    for n, p in tuner.model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and name in n and p.numel() > 0:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(*cov.shape, dtype=cov.dtype)))
    return weight * torch.stack(terms).mean() if terms else 0.0
