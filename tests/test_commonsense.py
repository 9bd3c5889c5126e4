"""Commonsense task: data files, prompt, response-only labels, cutoff, and the loss at loss positions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_llm import random_llama, tiny_llm_dir  # noqa: F401

from aroma_peft.errors import UserInputError
from aroma_peft.tasks import get_task
from aroma_peft.tasks.causal_lm import IGNORE, causal_lm_loss, collate_causal, default_target_modules
from aroma_peft.tasks.commonsense import encode_example
from aroma_peft.tasks.commonsense_data import Example, hold_out, label_family, load_sets

ROW = {"instruction": "Is it? Answer format: true/false", "input": "", "output": "the correct answer is true"}


def write_set(root: Path, name: str, split: str, rows: list) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    path = root / name / f"{split}.json"
    path.write_text(json.dumps(rows))
    return path


def test_prompt_is_llm_adapters_template_normalised():
    plain = Example("Pick one.", "", "the correct answer is answer1", "answer1")
    assert plain.prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nPick one.\n\n### Response:\n"
    )
    with_input = Example("Pick one.", "Some context.", "the correct answer is answer1", "answer1")
    assert with_input.prompt.startswith("Below is an instruction that describes a task, paired with an input")
    assert with_input.prompt.endswith(
        "### Instruction:\nPick one.\n\n### Input:\nSome context.\n\n### Response:\n"
    )


def test_candidates_are_the_offered_labels():
    four = Example("Q? Answer format: answer1/answer2/answer3/answer4", "", "", "answer2")
    assert four.candidates == ("answer1", "answer2", "answer3", "answer4")
    unlisted = Example("Q?", "", "", "ending3")
    assert unlisted.candidates == ("ending1", "ending2", "ending3", "ending4")


def test_union_of_train_files_test_files_sets_and_limit(tmp_path):
    write_set(tmp_path, "BoolQ", "train", [ROW | {"answer": "true"}] * 3)
    write_set(tmp_path, "PIQA", "test", [ROW | {"answer": "solution2"}] * 2)
    write_set(tmp_path, "BoolQ", "test", [ROW | {"answer": "false"}] * 4)
    write_set(tmp_path, "OBQA", "train", [ROW | {"answer": "answer3"}] * 2)
    train = load_sets(tmp_path, "train")
    assert {k: len(v) for k, v in train.items()} == {"BoolQ": 3, "OBQA": 2}
    test = load_sets(tmp_path, "test", ["PIQA", "BoolQ"], limit=3)
    assert list(test) == ["PIQA", "BoolQ"] and len(test["BoolQ"]) == 3
    assert label_family(test["PIQA"]) == "solution"
    assert list(load_sets(tmp_path / "OBQA", "train")) == ["OBQA"]  # a set's own folder
    with pytest.raises(
        UserInputError, match=r"--eval-sets: ARC not found .* \(sets with test.json: BoolQ, PIQA\)"
    ):
        load_sets(tmp_path, "test", ["ARC"])
    with pytest.raises(UserInputError, match="no <set>/dev.json files"):
        load_sets(tmp_path, "dev")


def test_held_out_slice_is_disjoint_seeded_and_capped():
    sets = {
        "A": [Example(f"a{i}", "", "", "true") for i in range(50)],
        "B": [Example(f"b{i}", "", "", "answer1") for i in range(2000)],
    }
    train, held = hold_out(sets, per_set=100, seed=3)
    assert len(held["A"]) == 5 and len(held["B"]) == 100  # a tenth of a small set, else the cap
    assert len(train) == 2050 - 105 and not set(train) & {e for h in held.values() for e in h}
    assert hold_out(sets, per_set=100, seed=3) == (train, held)
    assert hold_out(sets, per_set=100, seed=4)[1] != held


@pytest.mark.parametrize(
    "rows, match",
    [
        (
            [ROW | {"answer": "true"}, {"instruction": "x", "input": "", "answer": "true"}],
            "row 1: missing key.* output",
        ),
        (
            [ROW | {"answer": "true"}, ROW | {"answer": 1}],
            "row 1: field 'answer' must be a string, found int",
        ),
        (
            [ROW | {"answer": "true"}, ROW | {"input": None, "answer": "true"}],
            "row 1: field 'input' must be a str",
        ),
        ([ROW | {"answer": "maybe"}], "row 0: answer 'maybe' is in no label family"),
        (
            [ROW | {"answer": "true"}, ROW | {"answer": "answer1"}],
            "row 1: answer 'answer1' is not in the set's",
        ),
        ([ROW | {"answer": "true"}, "text"], "row 1: expected an object, found str"),
        ({"rows": []}, "expected a JSON list of rows, found dict"),
        ([], "no rows"),
    ],
)
def test_malformed_rows_name_file_and_index(tmp_path, rows, match):
    path = write_set(tmp_path, "BoolQ", "train", rows)
    with pytest.raises(UserInputError, match=match) as err:
        load_sets(tmp_path, "train")
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_invalid_json_names_the_file(tmp_path):
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "test.json").write_text("[{")
    with pytest.raises(UserInputError, match=r"S/test.json: not a readable JSON file"):
        load_sets(tmp_path, "test")


def test_response_only_labels_eos_and_cutoff(tiny_llm_dir):  # noqa: F811
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    ex = Example("Is it?", "", "the correct answer is true", "true")
    f = encode_example(ex, tok)
    n_prompt = len(tok(ex.prompt)["input_ids"])
    assert f["input_ids"][-1] == tok.eos_token_id and f["labels"][-1] == tok.eos_token_id  # EOS trained on
    assert f["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:]
    assert tok.decode(f["input_ids"][n_prompt:]) == ex.output + tok.eos_token
    assert encode_example(ex, tok, train_on_prompt=True)["labels"] == f["input_ids"]
    # a row that does not fit is dropped and counted, never truncated (its response would be lost)
    task = get_task("commonsense", cutoff=len(f["input_ids"]))
    long = Example("Is it? " * 20, "", ex.output, "true")
    kept, dropped = task.encode([ex, long, ex], tok)
    assert len(kept) == 2 and dropped == 1


def _batch(vocab: int, train_on_prompt: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    features = []
    for n_prompt, n_resp in [(7, 3), (4, 5), (11, 2)]:
        ids = torch.randint(3, vocab, (n_prompt + n_resp,), generator=g).tolist()
        labels = list(ids) if train_on_prompt else [IGNORE] * n_prompt + ids[n_prompt:]
        features.append({"input_ids": ids, "labels": labels})
    return collate_causal(features, pad_id=0)


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_loss_at_loss_positions_equals_full_logits_loss(train_on_prompt):
    model = random_llama()
    batch = _batch(64, train_on_prompt)
    assert (batch["labels"] == IGNORE).any()  # padding (and the prompt) carry no loss
    full = model(**batch).loss
    sparse = causal_lm_loss(model, batch)
    torch.testing.assert_close(sparse, full, rtol=1e-5, atol=1e-6)
    sparse.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_adalora_orthogonal_penalty_survives_the_loss_outside_forward():
    from peft import AdaLoraConfig, get_peft_model

    config = AdaLoraConfig(
        init_r=4,
        target_r=2,
        target_modules=default_target_modules(random_llama()),
        orth_reg_weight=0.5,
        total_step=10,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(random_llama(), config)
    batch = _batch(64, train_on_prompt=False)
    with_penalty = model(**batch).loss  # PEFT adds the penalty inside forward
    without = model.get_base_model()(**batch).loss
    assert with_penalty - without > 1e-3
    torch.testing.assert_close(causal_lm_loss(model, batch), with_penalty, rtol=1e-5, atol=1e-6)


def test_aroma_adapted_model_loss_matches_too():
    from aroma_peft import AromaConfig, adapt

    base = random_llama()
    model = adapt(base, AromaConfig(target_modules=default_target_modules(base), r=1))
    with torch.no_grad():
        for layer in model.adapter_layers().values():
            for p in layer.parameters():
                if p.requires_grad:
                    p.add_(0.1)  # a non-zero update, so the adapters matter
    batch = _batch(64, train_on_prompt=False)
    torch.testing.assert_close(causal_lm_loss(model, batch), model(**batch).loss, rtol=1e-5, atol=1e-6)


def test_default_targets_llama_family_only():
    assert default_target_modules(random_llama()) == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    from transformers import BertConfig, BertModel

    bert = BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )
    with pytest.raises(UserInputError, match="no default target modules for model type 'bert'"):
        default_target_modules(bert)
    with pytest.raises(UserInputError, match="cutoff=0 is invalid"):
        get_task("commonsense", cutoff=0)
    with pytest.raises(UserInputError, match="--task 'glue' is not a task family"):
        get_task("glue")
