"""Commonsense evaluation: LLM-Adapters' generate-and-extract, and label log-likelihood.

``generate``: greedy decoding (beams optional), at most 32 new tokens, stop at EOS, batched with left
padding and the attention mask (LLM-Adapters' batched call drops the mask, so their scripts run batch
size 1 with 4 beams); then their ``extract_answer``: the text after "### Response:", the first match
of the set's label family (case-sensitive, not word-bounded); no match is wrong.

``loglik``: each candidate label scored by the sum of its tokens' log-probabilities after the prompt
and "the correct answer is " (no length normalisation; ties go to the first candidate). The prompt and
the label tokens every candidate shares run once, the LM head only at the positions scored; a candidate
with more than one token of its own continues from a copy of the prompt's KV cache.
"""

from __future__ import annotations

import inspect
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .causal_lm import hf_model
from .commonsense_data import ANSWER_PREFIX, FAMILIES, Example, label_family

MODES = ("loglik", "generate")


def extract_answer(text: str, family: str) -> str:
    """LLM-Adapters' answer extraction; ``""`` when the response holds no label of ``family``."""
    parts = text.split("### Response:")
    response = (parts[1] if len(parts) > 1 else parts[0]).strip()
    found = re.findall("|".join(FAMILIES[family]), response)
    return found[0] if found else ""


def _chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def generate_responses(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int = 8,
    num_beams: int = 1,
    max_new_tokens: int = 32,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Prompt + decoded continuation for every prompt (batches of similar length, order kept).

    transformers' ``generate`` keeps the KV cache, runs the LM head on the last position only
    (``logits_to_keep=1``) and stops a batch once every row has emitted EOS.
    """
    inner = hf_model(model)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)  # in tokens: least padding
    texts: list[str] = [""] * len(prompts)
    try:
        for chunk in tqdm(_chunks(order, batch_size), desc=desc, disable=not progress, leave=False):
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True)
            out = inner.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=num_beams,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, t in zip(chunk, new):
                texts[i] = prompts[i] + t
    finally:
        tokenizer.padding_side = side
    return texts


def candidate_tokens(
    tokenizer: Any, context: str, labels: Sequence[str]
) -> tuple[list[int], list[list[int]]]:
    """The shared prefix ids of ``context + label`` and each label's remaining ids.

    Labels are tokenized after the context, not alone, so they get the ids training saw (" answer1"
    is one word to a BPE tokenizer, "answer1" another).
    """
    ctx = tokenizer(context)["input_ids"]
    fulls = [tokenizer(context + label)["input_ids"] for label in labels]
    n = len(ctx)
    for f in fulls:  # a trailing-space token of the context is not shared: it merges into the label
        n = next((k for k in range(min(n, len(f))) if f[k] != ctx[k]), min(n, len(f)))
    return ctx[:n], [f[n:] for f in fulls]


def _shared(candidates: Sequence[list[int]]) -> int:
    """Leading tokens every candidate shares, leaving each at least one token of its own."""
    n = min(len(c) for c in candidates) - 1
    first = candidates[0]
    return next((k for k in range(n) if any(c[k] != first[k] for c in candidates)), n)


@torch.no_grad()
def loglik_scores(
    model: nn.Module, prefixes: Sequence[list[int]], candidates: Sequence[Sequence[list[int]]], pad_id: int
) -> list[list[float]]:
    """``scores[i][j] = sum_t log p(candidates[i][j][t] | prefixes[i], candidates[i][j][:t])``.

    The tokens all candidates of an item share (" answer" of " answer1" ... " answer4") join its
    prefix, so one forward of the left-padded prefixes, with the LM head on their last few positions
    only, scores the shared tokens and every candidate's first own token. Only candidates with more
    own tokens left run a second forward, on a copy of their item's KV cache (none in the LLM-Adapters
    sets: with SmolLM2's tokenizer every label there ends in one token of its own).
    """
    inner = hf_model(model)
    shared = [_shared(cands) for cands in candidates]
    full = [list(p) + list(cands[0][:s]) for p, cands, s in zip(prefixes, candidates, shared)]
    n_pre = torch.tensor([len(p) for p in full])
    width, keep = int(n_pre.max()), max(shared) + 1
    ids = torch.full((len(full), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(full):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = inner(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=keep)
    logp = F.log_softmax(out.logits.float(), dim=-1)  # (B, keep, V): the last `keep` positions
    scores: list[list[float]] = []
    for i, (cands, s) in enumerate(zip(candidates, shared)):
        # position keep-1-s+t predicts shared token t; the last position predicts each own first token
        common = sum(logp[i, keep - 1 - s + t, cands[0][t]].item() for t in range(s))
        scores.append([common + logp[i, -1, c[s]].item() for c in cands])

    pairs = [(i, j) for i, (cands, s) in enumerate(zip(candidates, shared)) for j, c in enumerate(cands)]
    pairs = [(i, j) for i, j in pairs if len(candidates[i][j]) > shared[i] + 1]
    if not pairs:
        return scores
    rests = [candidates[i][j][shared[i] :] for i, j in pairs]  # own tokens, the first already scored
    item = torch.tensor([i for i, _ in pairs])
    length = max(len(r) for r in rests)
    cand = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    cand_mask = torch.zeros_like(cand)
    for k, r in enumerate(rests):
        cand[k, : len(r)] = torch.tensor(r)
        cand_mask[k, : len(r)] = 1
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.reorder_cache(item)  # (K, ...): each pair gets its item's prefix keys and values
    rest = inner(
        input_ids=cand[:, :-1],
        attention_mask=torch.cat([mask[item], cand_mask[:, :-1]], dim=1),
        position_ids=n_pre[item, None] + torch.arange(length - 1),
        **{_cache_argument(inner): cache},
    ).logits  # (K, L-1, V): position t predicts own token t+1
    token_logp = F.log_softmax(rest.float(), dim=-1).gather(2, cand[:, 1:, None]).squeeze(2)
    for (i, j), extra in zip(pairs, (token_logp * cand_mask[:, 1:]).sum(1).tolist()):
        scores[i][j] += extra
    return scores


def _cache_argument(model: nn.Module) -> str:
    """``cache`` from transformers 5.x (``past_key_values`` is deprecated there), else the old name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def loglik_predictions(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    batch_size: int = 8,
    desc: str = "loglik",
    progress: bool = True,
) -> list[str]:
    """The best-scoring offered label of every example (first on ties)."""
    split = [candidate_tokens(tokenizer, e.prompt + ANSWER_PREFIX, e.candidates) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(split[i][0]))
    preds = [""] * len(examples)
    for chunk in tqdm(_chunks(order, batch_size), desc=desc, disable=not progress, leave=False):
        scores = loglik_scores(
            model, [split[i][0] for i in chunk], [split[i][1] for i in chunk], tokenizer.pad_token_id
        )
        for i, s in zip(chunk, scores):
            preds[i] = examples[i].candidates[max(range(len(s)), key=s.__getitem__)]
    return preds


def evaluate_sets(
    model: nn.Module,
    tokenizer: Any,
    sets: dict[str, list[Example]],
    mode: str = "loglik",
    batch_size: int = 8,
    num_beams: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Accuracy (%) per set, their unweighted average, and per set the predictions' counts."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid: use one of {', '.join(MODES)}")
    training = model.training
    model.eval()
    per_set: dict[str, dict[str, Any]] = {}
    try:
        for name, examples in sets.items():
            start = time.perf_counter()
            family = label_family(examples)
            if mode == "generate":
                texts = generate_responses(
                    model,
                    tokenizer,
                    [e.prompt for e in examples],
                    batch_size,
                    num_beams,
                    desc=name,
                    progress=progress,
                )
                preds = [extract_answer(t, family) for t in texts]
            else:
                preds = loglik_predictions(
                    model, tokenizer, examples, batch_size, desc=name, progress=progress
                )
            correct = sum(p == e.answer for p, e in zip(preds, examples))
            majority = Counter(e.answer for e in examples).most_common(1)[0][1]
            per_set[name] = {
                "accuracy": 100.0 * correct / len(examples),
                "n": len(examples),
                "family": family,
                "valid": sum(bool(p) for p in preds),
                "predictions": dict(Counter(p or "(none)" for p in preds).most_common()),
                "majority_class": 100.0 * majority / len(examples),
                "seconds": time.perf_counter() - start,
            }
    finally:
        model.train(training)
    average = sum(s["accuracy"] for s in per_set.values()) / len(per_set)
    return {"mode": mode, "num_beams": num_beams, "sets": per_set, "average": average}
