"""SoRA with transformers.Trainer + SoraCallback on a tiny BERT: exact against a plain loop, resumable."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from aroma_peft import SoraCallback, SoraConfig, SoraController, adapt  # noqa: E402

N, STEPS = 8, 4
BERT = BertConfig(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=16,
    num_labels=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
CONFIG = dict(
    target_modules=["query", "value", "intermediate.dense"],
    r=4,
    sparse_lambda=5.0,
    xi=1e-3,
    modules_to_save=["classifier"],
)


class Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 40, (N, 7), generator=g)
        self.labels = torch.randint(0, 2, (N,), generator=g)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def model(**kwargs):
    torch.manual_seed(0)
    return adapt(BertForSequenceClassification(BERT), SoraConfig(**{**CONFIG, **kwargs}))


def args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=N,
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        max_grad_norm=0.05,
        weight_decay=0.0,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        remove_unused_columns=False,  # AdaptedModel.forward takes **kwargs
    )
    return TrainingArguments(**{**defaults, **kwargs})


def test_trainer_matches_plain_loop_with_penalty_in_the_loss(tmp_path):
    adapted = model()
    callback = SoraCallback()
    Trainer(model=adapted, args=args(tmp_path), train_dataset=Data(), callbacks=[callback]).train()
    assert callback.controller.global_step == STEPS

    plain = model()
    optimizer = torch.optim.AdamW(plain.optimizer_param_groups(1e-2), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (STEPS - s) / STEPS)
    controller = SoraController(plain, optimizer)
    data = Data()
    for _ in range(STEPS):
        out = plain(input_ids=data.ids, labels=data.labels)
        (out.loss + controller.penalty()).backward()  # the penalty inside the loss, then clipping
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.05)
        optimizer.step()
        controller.step()
        scheduler.step()
        optimizer.zero_grad()
    for (name, p), (_, q) in zip(adapted.named_parameters(), plain.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert callback.controller.ranks() == controller.ranks()


def test_trainer_resume_from_checkpoint(tmp_path):
    kwargs = dict(save_strategy="steps", save_steps=2)
    full = model()
    Trainer(
        model=full, args=args(tmp_path / "a", **kwargs), train_dataset=Data(), callbacks=[SoraCallback()]
    ).train()

    first = model()
    Trainer(
        model=first, args=args(tmp_path / "b", **kwargs), train_dataset=Data(), callbacks=[SoraCallback()]
    ).train()
    resumed = model()
    trainer = Trainer(
        model=resumed, args=args(tmp_path / "b", **kwargs), train_dataset=Data(), callbacks=[SoraCallback()]
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-2"))
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, SoraCallback))
    assert callback.controller.global_step == STEPS
    for (name, p), (_, q) in zip(full.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_trainer_with_weight_decay_on_gates_is_refused(tmp_path):
    trainer = Trainer(
        model=model(), args=args(tmp_path, weight_decay=0.1), train_dataset=Data(), callbacks=[SoraCallback()]
    )
    with pytest.raises(ValueError, match="gates take no weight decay"):
        trainer.train()


def test_trainer_with_library_param_groups(tmp_path):
    adapted = model(sparse_lambda=100.0, xi=2e-2)
    optimizer = torch.optim.AdamW(adapted.optimizer_param_groups(1e-2, weight_decay=0.1))
    callback = SoraCallback()
    trainer = Trainer(
        model=adapted,
        args=args(tmp_path, max_steps=6, max_grad_norm=1.0),
        train_dataset=Data(),
        callbacks=[callback],
        optimizers=(optimizer, None),
    )
    trainer.train()
    assert callback.controller.num_active_gates() < 3 * 4  # the strong penalty switches ranks off
