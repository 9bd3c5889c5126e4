"""Commonsense evaluation: LLM-Adapters' answer extraction, the log-likelihood scorer, batched generation."""

from __future__ import annotations

import pytest
import torch
from tiny_llm import random_llama, tiny_llm_dir  # noqa: F401
from torch.nn import functional as F

from aroma_peft.tasks import commonsense_eval
from aroma_peft.tasks.commonsense_data import Example
from aroma_peft.tasks.commonsense_eval import (
    candidate_tokens,
    evaluate_sets,
    extract_answer,
    generate_responses,
    loglik_predictions,
    loglik_scores,
)

PROMPT = (
    "### Instruction:\nAnswer format: true/false answer1/answer2 solution1 option1 ending1\n\n### Response:\n"
)


@pytest.mark.parametrize(
    "response, family, expected",
    [
        ("the correct answer is true", "true/false", "true"),
        ("false, not true", "true/false", "false"),  # the first match, not the first label
        ("True", "true/false", ""),  # case-sensitive
        ("untrue", "true/false", "true"),  # not word-bounded
        ("the correct answer is solution2", "solution", "solution2"),
        ("solution3 then solution1", "solution", "solution1"),
        ("the correct answer is answer5", "answer", "answer5"),
        ("answer12", "answer", "answer1"),
        ("Answer2", "answer", ""),
        ("option2", "option", "option2"),
        ("ending4 or ending1", "ending", "ending4"),
        ("ending5", "ending", ""),
        ("I do not know", "answer", ""),
    ],
)
def test_extract_answer_every_family(response, family, expected):
    # labels in the instruction (before "### Response:") are never taken
    assert extract_answer(PROMPT + response, family) == expected


def _hand_score(model, prefix: list[int], cand: list[int]) -> float:
    logp = F.log_softmax(model(torch.tensor([prefix + cand])).logits[0].float(), dim=-1)
    return sum(logp[len(prefix) - 1 + t, tok].item() for t, tok in enumerate(cand))


@torch.no_grad()
def test_loglik_score_against_hand_computation():
    model = random_llama()
    prefix, cands = [5, 9, 2, 17], [[3], [40, 8], [40, 9, 11]]
    logits = model(torch.tensor([prefix + [40, 8]])).logits[0]
    lp = torch.log_softmax(logits, dim=-1)
    by_hand = lp[3, 40] + lp[4, 8]  # log p(40 | prefix) + log p(8 | prefix, 40)
    scores = loglik_scores(model, [prefix], [cands], pad_id=0)[0]
    assert scores[1] == pytest.approx(by_hand.item(), abs=1e-4)
    assert scores[0] == pytest.approx(lp[3, 3].item(), abs=1e-4)


@torch.no_grad()
def test_cached_prefix_scoring_equals_full_scoring_in_a_padded_batch():
    model = random_llama(seed=1)
    g = torch.Generator().manual_seed(0)
    prefixes = [torch.randint(1, 64, (n,), generator=g).tolist() for n in (3, 11, 6)]
    cands = [
        [[7], [8, 9]],
        [[1, 2, 3], [4], [5, 6], [10, 11], [12]],
        [[20, 21], [22, 23], [24, 25, 26, 27]],
    ]
    scores = loglik_scores(model, prefixes, cands, pad_id=0)
    for prefix, cs, got in zip(prefixes, cands, scores):
        assert got == pytest.approx([_hand_score(model, prefix, c) for c in cs], abs=1e-4)


def test_candidate_tokens_keep_the_label_word_with_its_space(tiny_llm_dir):  # noqa: F811
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    context = "Q?\n### Response:\nthe correct answer is "
    prefix, cands = candidate_tokens(tok, context, ["true", "false"])
    for label, c in zip(["true", "false"], cands):
        assert prefix + c == tok(context + label)["input_ids"]
        assert tok.decode(c) == " " + label  # the space belongs to the label, as in training text


def test_ties_go_to_the_first_candidate(tiny_llm_dir, monkeypatch):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    monkeypatch.setattr(commonsense_eval, "loglik_scores", lambda m, p, c, pad: [[-1.0, -0.5, -0.5, -2.0]])
    ex = Example("Q? Answer format: answer1/answer2/answer3/answer4", "", "", "answer3")
    assert loglik_predictions(model, tok, [ex], progress=False) == ["answer2"]


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_llm_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir).eval()
    prompts = [
        Example(q, "", "", "true").prompt for q in ("Is it?", "Is the answer here longer than that?", "No")
    ]
    batched = generate_responses(model, tok, prompts, batch_size=3, max_new_tokens=6, progress=False)
    single = generate_responses(model, tok, prompts, batch_size=1, max_new_tokens=6, progress=False)
    assert batched == single
    assert all(b.startswith(p) and len(b) > len(p) for b, p in zip(batched, prompts))
    beams = generate_responses(
        model, tok, prompts[:2], batch_size=2, num_beams=2, max_new_tokens=4, progress=False
    )
    assert len(beams) == 2 and tok.padding_side == "right"  # the tokenizer is left as found


@pytest.mark.parametrize("forced", ["word", "eos"])
def test_decoding_stops_at_32_new_tokens_or_at_eos(tiny_llm_dir, forced):  # noqa: F811
    """The protocol's limits by default: at most 32 new tokens, and nothing after EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir).eval()
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size)
    token = tok.eos_token_id if forced == "eos" else tok.convert_tokens_to_ids("a")
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[token] = 1e4  # greedy decoding picks this token at every position
    model.lm_head = head
    lengths = []
    generate = model.generate

    def counted(**kwargs):  # noqa: ANN003, ANN202
        out = generate(**kwargs)
        lengths.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    model.generate = counted
    prompt = Example("Is it?", "", "", "true").prompt
    [text] = generate_responses(model, tok, [prompt], progress=False)
    assert lengths == ([32] if forced == "word" else [1])
    assert text == prompt + ("a" * 32 if forced == "word" else "")


def test_evaluate_sets_both_modes(tiny_llm_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir).train()
    yes_no = [
        Example(f"Q{i}? Answer format: true/false", "", "", a) for i, a in enumerate(["true", "false"] * 3)
    ]
    named_wrong = [Example(f"Fill {i}. Answer format: option1/option2", "", "", "option2") for i in range(3)]
    sets = {"BoolQ": yes_no, "ARC-Easy": named_wrong}  # families come from the answers, not the names
    for mode in ("loglik", "generate"):
        m = evaluate_sets(model, tok, sets, mode=mode, batch_size=4, progress=False)
        assert m["sets"]["ARC-Easy"]["family"] == "option" and m["sets"]["BoolQ"]["n"] == 6
        assert m["average"] == pytest.approx(
            (m["sets"]["BoolQ"]["accuracy"] + m["sets"]["ARC-Easy"]["accuracy"]) / 2
        )
        if mode == "loglik":  # every item gets one of its offered labels
            assert set(m["sets"]["ARC-Easy"]["predictions"]) <= {"option1", "option2"}
            assert m["sets"]["BoolQ"]["valid"] == 6
    assert model.training  # evaluation restores the training mode
    with pytest.raises(ValueError, match="mode='beam' is invalid"):
        evaluate_sets(model, tok, sets, mode="beam")


@pytest.mark.parametrize(
    "cands",
    [
        [[40, 8], [40, 9], [40, 10]],  # one shared token, one own token each (" answer" + digit)
        [[40, 41, 8], [40, 41, 9, 3]],  # two shared tokens, then one candidate runs on from the cache
        [[40], [40, 8]],  # a candidate that is a prefix of another keeps its last token as its own
        [[5], [6]],  # nothing shared
    ],
)
@torch.no_grad()
def test_shared_candidate_tokens_scored_in_the_prompt_forward_equal_full_scoring(cands):
    model = random_llama(seed=2)
    prefixes = [[5, 9, 2, 17], [3, 4]]  # two rows: the shorter one is left-padded
    scores = loglik_scores(model, prefixes, [cands, cands[::-1]], pad_id=0)
    for prefix, cs, got in zip(prefixes, [cands, cands[::-1]], scores):
        assert got == pytest.approx([_hand_score(model, prefix, c) for c in cs], abs=1e-4)
