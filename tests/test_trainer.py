"""AROMA inside transformers.Trainer: callback, re-warmup on the Trainer's schedule, stop, resume."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from aroma_peft import AdaptedModel, AromaCallback, AromaConfig, adapt

TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int = 64, seq: int = 8, vocab: int = 50) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, vocab, (n, seq), generator=g)
        self.labels = (self.ids[:, 0] > vocab // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(cfg)


def args(out, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        report_to=[],
        logging_steps=1000,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    return TrainingArguments(**{**base, **kw})


def aroma_config(**kw) -> AromaConfig:
    base = dict(
        target_modules=TARGETS,
        modules_to_save=["classifier"],
        t_in=8,
        check_interval=4,
        warmup_steps=2,
        rewarmup_steps=2,
        eps_out=0.0,
    )
    return AromaConfig(**{**base, **kw})


def test_callback_drives_controller_and_rewarms_the_trainer_schedule(tmp_path) -> None:
    model = adapt(tiny_bert(), aroma_config())
    callback = AromaCallback()
    lrs = []

    class Spy(TrainerCallback):  # records the lr of every step
        def on_step_begin(self, a, state, control, optimizer=None, **kw):
            lrs.append(optimizer.param_groups[0]["lr"])

    trainer = Trainer(
        model=model, args=args(tmp_path, max_steps=12), train_dataset=Pairs(), callbacks=[callback, Spy()]
    )
    trainer.train()
    ctl = callback.controller
    assert ctl.global_step == 12
    assert all(r >= 1 for r in ctl.ranks().values())
    assert lrs[:3] == pytest.approx([5e-3, 1e-2, 1e-2])  # initial warmup of 2 steps
    first_merge = min(e["step"] for e in ctl.events)
    assert lrs[first_merge] == pytest.approx(5e-3)  # re-warmup right after the reset


def test_trainer_stops_when_every_module_has_finished(tmp_path) -> None:
    model = adapt(tiny_bert(), aroma_config(eps_out=10.0))  # the first piece is kept, the second finishes
    callback = AromaCallback()
    trainer = Trainer(
        model=model, args=args(tmp_path, max_steps=100), train_dataset=Pairs(), callbacks=[callback]
    )
    trainer.train()
    assert callback.controller.finished and trainer.state.global_step == 16
    assert model.num_trainable_parameters(include_saved_modules=False) == 0


def test_training_again_replaces_the_controllers_step_hook(tmp_path) -> None:
    """A second ``train()`` with the same callback and optimizer builds a new controller; the old one's
    optimizer hook is removed (else every run would leave one more hook, and the old controller, behind)."""
    from transformers import TrainerControl, TrainerState

    model = adapt(tiny_bert(), aroma_config())
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    callback = AromaCallback()
    for _ in range(3):
        state = TrainerState(max_steps=12)
        callback.on_train_begin(args(tmp_path), state, TrainerControl(), model=model, optimizer=optimizer)
    assert len(optimizer._optimizer_step_post_hooks) == 1


@pytest.mark.parametrize("how", ["pickle", "torch.save", "deepcopy"])
def test_copies_of_an_adapted_model_train_in_the_trainer(tmp_path, monkeypatch, how) -> None:
    """Pickled, saved or copied, the model still shows the Trainer BERT's forward signature, so the
    Trainer keeps ``input_ids`` / ``labels`` and drops the text column the collator could not batch."""
    import copy
    import inspect
    import io
    import pickle

    from datasets import Dataset

    from aroma_peft.tuners import model as model_module

    model = adapt(tiny_bert(), aroma_config())
    x = Pairs()[0]["input_ids"][None]
    expected = model(input_ids=x).logits
    monkeypatch.setattr(model_module, "_ADAPTED_CLASSES", {})  # as in a fresh process
    if how == "pickle":
        clone = pickle.loads(pickle.dumps(model))
    elif how == "torch.save":
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        clone = torch.load(buffer, weights_only=False)
    else:
        clone = copy.deepcopy(model)
    assert isinstance(clone, AdaptedModel) and clone is not model
    assert torch.equal(clone(input_ids=x).logits, expected)
    assert list(inspect.signature(clone.forward).parameters)[:2] == ["input_ids", "attention_mask"]
    pairs = Pairs()
    data = Dataset.from_dict(
        {
            "input_ids": pairs.ids.tolist(),
            "labels": pairs.labels.tolist(),
            "sentence": ["a text"] * len(pairs),
        }
    )
    callback = AromaCallback()
    Trainer(model=clone, args=args(tmp_path, max_steps=3), train_dataset=data, callbacks=[callback]).train()
    assert callback.controller.global_step == 3


class StopAt(TrainerCallback):
    """Ends a run after step ``step`` as a kill would (the run itself is planned longer)."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, a, state, control, **kw):
        control.should_training_stop = state.global_step == self.step


def test_resume_restores_controller_without_the_trainer_option(tmp_path) -> None:
    def trainer(stop_at):
        model = adapt(tiny_bert(), aroma_config())
        a = args(tmp_path, max_steps=8, save_strategy="steps", save_steps=4)
        return Trainer(
            model=model, args=a, train_dataset=Pairs(), callbacks=[AromaCallback(), StopAt(stop_at)]
        )

    trainer(4).train()
    resumed = trainer(None)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    (callback,) = [c for c in resumed.callback_handler.callbacks if isinstance(c, AromaCallback)]
    assert callback.controller.global_step == 8


@pytest.mark.slow
def test_a_few_steps_on_pretrained_minilm(tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from aroma_peft.models import default_encoder_path

    path = default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    texts = ["a great movie", "an awful film", "I loved it", "I hated it"] * 8
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1, 0] * 8)

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(texts)

        def __getitem__(self, i):
            return {
                "input_ids": enc["input_ids"][i],
                "attention_mask": enc["attention_mask"][i],
                "labels": labels[i],
            }

    model = adapt(base, aroma_config(t_in=4, check_interval=2, lora_alpha=4.0))
    assert len(model.adapter_layers()) == 36  # six Linear kinds in each of six blocks, no pooler
    callback = AromaCallback()
    trainer = Trainer(
        model=model,
        args=args(tmp_path, max_steps=6, learning_rate=1e-3),
        train_dataset=Texts(),
        callbacks=[callback],
    )
    result = trainer.train()
    assert callback.controller.global_step == 6 and sum(callback.controller.ranks().values()) >= 36
    assert torch.isfinite(torch.tensor(result.training_loss))


def adapter_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.adapter_state_dict().items()}


def assert_same_weights(first, second, atol: float = 1e-6) -> None:
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=atol, msg=key)


def test_the_trainers_max_steps_ends_every_module(tmp_path) -> None:
    """Without AromaConfig.max_steps the Trainer's T is used: the last step takes the final decision."""
    model = adapt(tiny_bert(), aroma_config(t_in=100))  # no piece ends on its own within 10 steps
    callback = AromaCallback()
    Trainer(
        model=model, args=args(tmp_path, max_steps=10), train_dataset=Pairs(), callbacks=[callback]
    ).train()
    ctl = callback.controller
    assert ctl.max_steps == 10 and ctl.finished  # eps_out=0: every live piece is kept, then finished
    assert set(ctl.ranks().values()) == {1} and model.ranks() == ctl.ranks()
    assert model.num_trainable_parameters(include_saved_modules=False) == 0
    assert {e["step"] for e in ctl.events} == {10}


def test_a_trainer_stopping_early_ends_every_module(tmp_path) -> None:
    """Another callback (e.g. transformers' EarlyStoppingCallback) ends training before T: the modules
    take their final decision at the end of training, as at T."""

    class StopAtThree(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            control.should_training_stop = state.global_step == 3

    model = adapt(tiny_bert(), aroma_config(t_in=100))
    callback = AromaCallback()
    trainer = Trainer(
        model=model,
        args=args(tmp_path, max_steps=10),
        train_dataset=Pairs(),
        callbacks=[callback, StopAtThree()],
    )
    trainer.train()
    ctl = callback.controller
    assert trainer.state.global_step == 3 and ctl.finished
    assert {(e["step"], e["event"]) for e in ctl.events} == {(3, "finish")}
    assert set(ctl.ranks().values()) == {1}  # eps_out=0: every live piece was kept (merged)
    assert model.num_trainable_parameters(include_saved_modules=False) == 0


def test_the_configs_max_steps_wins_over_the_trainers(tmp_path) -> None:
    model = adapt(tiny_bert(), aroma_config(t_in=100, max_steps=6))
    callback = AromaCallback()
    trainer = Trainer(
        model=model, args=args(tmp_path, max_steps=10), train_dataset=Pairs(), callbacks=[callback]
    )
    trainer.train()
    assert callback.controller.max_steps == 6 and callback.controller.finished
    assert trainer.state.global_step == 6


def test_resume_from_checkpoint_equals_the_uninterrupted_run(tmp_path) -> None:
    """Interrupted at step 10 (after merges, before the finishes) and resumed: same decisions, same
    steps, same weights within 1e-6 as one uninterrupted run."""

    def run(out, resume=None, stop_at=None):
        model = adapt(tiny_bert(), aroma_config(eps_out=0.03, t_in=6, check_interval=3))
        callback = AromaCallback()
        a = args(out, max_steps=30, save_strategy="steps", save_steps=10, lr_scheduler_type="linear")
        trainer = Trainer(model=model, args=a, train_dataset=Pairs(), callbacks=[callback, StopAt(stop_at)])
        trainer.train(resume_from_checkpoint=resume)
        (restored,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, AromaCallback)]
        return restored.controller, model

    full, full_model = run(tmp_path / "full")
    assert any(e["event"] == "merge" for e in full.events)
    assert any(e["event"] == "finish" and e["step"] > 10 for e in full.events)
    run(tmp_path / "part", stop_at=10)
    resumed, resumed_model = run(tmp_path / "part", resume=str(tmp_path / "part" / "checkpoint-10"))
    assert resumed.events == full.events and resumed.ranks() == full.ranks()
    assert resumed.global_step == full.global_step
    assert_same_weights(adapter_weights(resumed_model), adapter_weights(full_model))


def test_gradient_accumulation_counts_optimizer_steps(tmp_path) -> None:
    """GA=2 with half the batch is the same run as GA=1: the controller sees optimizer steps only."""

    def run(out, batch_size, accumulation):
        base = tiny_bert()
        # BERT's classification loss is a batch mean that ignores num_items_in_batch, but its forward
        # takes **kwargs, so the Trainer would not divide it by the accumulation steps: say so.
        base.accepts_loss_kwargs = False
        model = adapt(base, aroma_config(eps_out=0.03, t_in=6, check_interval=3))
        callback = AromaCallback()
        a = args(
            out,
            max_steps=16,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        Trainer(model=model, args=a, train_dataset=Pairs(), callbacks=[callback]).train()
        return callback.controller, model

    one, one_model = run(tmp_path / "ga1", 16, 1)
    two, two_model = run(tmp_path / "ga2", 8, 2)
    assert two.global_step == one.global_step == 16 and two.max_steps == 16
    assert [(e["step"], e["module"], e["event"]) for e in two.events] == [
        (e["step"], e["module"], e["event"]) for e in one.events
    ]
    assert any(e["event"] == "merge" for e in one.events) and two.ranks() == one.ranks()
    # the same sums in another order: float32 rounding only
    assert_same_weights(adapter_weights(two_model), adapter_weights(one_model), atol=1e-6)
