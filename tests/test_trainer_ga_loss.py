"""The README's note on gradient accumulation with the transformers Trainer, measured: a model whose
forward takes ``**kwargs`` (BERT) counts as accepting loss kwargs, so the Trainer does not divide its
loss by the accumulation steps; BERT's batch-mean loss ignores ``num_items_in_batch``, so GA=2 with half
the batch takes twice GA=1's step unless ``model.accepts_loss_kwargs = False``."""

import pytest
from test_trainer import Pairs, args, tiny_bert
from transformers import Trainer


def sgd_step(out, batch_size: int, accumulation: int, accepts_loss_kwargs: bool | None) -> float:
    """The size of one plain-SGD step on the classifier (no clipping: the step is lr x the gradient)."""
    model = tiny_bert()
    if accepts_loss_kwargs is not None:
        model.accepts_loss_kwargs = accepts_loss_kwargs
    before = model.classifier.weight.detach().clone()
    a = args(
        out,
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.1,
        max_grad_norm=0.0,
    )
    Trainer(model=model, args=a, train_dataset=Pairs()).train()
    return float((model.classifier.weight.detach() - before).norm())


@pytest.mark.parametrize(("accepts_loss_kwargs", "ratio"), [(None, 2.0), (False, 1.0)])
def test_accumulated_loss_is_divided_only_without_loss_kwargs(tmp_path, accepts_loss_kwargs, ratio):
    one = sgd_step(tmp_path / "ga1", 16, 1, accepts_loss_kwargs)
    two = sgd_step(tmp_path / "ga2", 8, 2, accepts_loss_kwargs)
    assert two / one == pytest.approx(ratio, rel=1e-4)
