"""A tiny BERT (random weights, word-level vocabulary) and a tiny SST-2 folder, written to a folder:
offline `aroma train` runs of a few seconds."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = ["good", "bad", "movie", "great", "awful", "fun", "dull", "plot", "acting", "long", "short", "funny"]
POSITIVE = {"good", "great", "fun", "funny"}
HIDDEN, INTERMEDIATE, LAYERS = 32, 48, 2


def write_tiny_bert(
    root: Path,
    words: list[str],
    hidden: int = HIDDEN,
    intermediate: int = INTERMEDIATE,
    layers: int = LAYERS,
    dropout: float = 0.1,
) -> Path:
    """A random-weight BERT classifier with a word-level tokenizer over ``words``, saved to ``root/model``."""
    root.mkdir(parents=True, exist_ok=True)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    model_dir = root / "model"
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(model_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=intermediate,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertForSequenceClassification(config).save_pretrained(model_dir)
    return model_dir


def write_tiny_glue(root: Path) -> tuple[Path, Path]:
    """(model folder, GLUE folder holding SST-2 with 64 train and 32 dev rows)."""
    model_dir = write_tiny_bert(root, WORDS)
    data = root / "glue" / "SST-2"
    data.mkdir(parents=True)
    n = len(WORDS)
    texts = [(WORDS[i % n], WORDS[(5 * i + 3) % n], WORDS[(7 * i + 1) % n]) for i in range(96)]
    rows = [f"{a} {b} {c}\t{int(a in POSITIVE)}" for a, b, c in texts]
    (data / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:64]) + "\n")
    (data / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[64:]) + "\n")
    return model_dir, root / "glue"
