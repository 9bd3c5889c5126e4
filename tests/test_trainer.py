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

from aroma_peft import AromaCallback, AromaConfig, adapt

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
    model = adapt(tiny_bert(), aroma_config(eps_out=10.0))  # the first outer check finishes everything
    callback = AromaCallback()
    trainer = Trainer(
        model=model, args=args(tmp_path, max_steps=100), train_dataset=Pairs(), callbacks=[callback]
    )
    trainer.train()
    assert callback.controller.finished and trainer.state.global_step == 8
    assert model.num_trainable_parameters(include_saved_modules=False) == 0


def test_trainer_resume_from_checkpoint_reproduces_ranks(tmp_path) -> None:
    def run(out, max_steps, resume=None):
        model = adapt(tiny_bert(), aroma_config(eps_out=0.01, t_in=6, check_interval=3))
        callback = AromaCallback()
        a = args(
            out,
            max_steps=max_steps,
            save_strategy="steps",
            save_steps=10,
            restore_callback_states_from_checkpoint=True,
        )
        trainer = Trainer(model=model, args=a, train_dataset=Pairs(), callbacks=[callback])
        trainer.train(resume_from_checkpoint=resume)
        (restored,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, AromaCallback)]
        return restored.controller, model

    full, full_model = run(tmp_path / "full", 24)
    run(tmp_path / "part", 10)
    resumed, resumed_model = run(tmp_path / "part", 24, resume=str(tmp_path / "part" / "checkpoint-10"))
    assert resumed.ranks() == full.ranks() and resumed.events == full.events
    x = Pairs()[0]["input_ids"][None]
    torch.testing.assert_close(resumed_model(input_ids=x).logits, full_model(input_ids=x).logits)


def test_resume_restores_controller_without_the_trainer_option(tmp_path) -> None:
    def trainer(max_steps):
        model = adapt(tiny_bert(), aroma_config())
        a = args(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=4)
        return Trainer(model=model, args=a, train_dataset=Pairs(), callbacks=[AromaCallback()])

    trainer(4).train()
    resumed = trainer(8)
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
