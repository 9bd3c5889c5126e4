"""A tiny LLaMA written as a GGUF file with the ``gguf`` package, the way llama.cpp's converter writes one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HIDDEN, HEADS, KV_HEADS, LAYERS, FFN = 64, 4, 2, 2, 128
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (its byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, n = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + n))
            n += 1
    return chars


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation (HF rotary halves -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a 2-layer LLaMA with Q4_1 matrices; returns its weights in HF layout (before quantization)."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = SPECIAL + _byte_chars()
    merges = ["Ġ t", "h e", "Ġt he", "a n", "e r"]
    tokens += [m.replace(" ", "") for m in merges]
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    normal = [gguf.TokenType.NORMAL] * (vocab - len(SPECIAL))
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIAL) + normal)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)

    hf: dict[str, np.ndarray] = {}

    def matrix(gguf_name: str, hf_name: str, rows: int, cols: int, n_head: int | None = None) -> None:
        m = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        hf[hf_name] = m
        stored = permute(m, n_head) if n_head else m
        q = gguf.quants.quantize(stored, gguf.GGMLQuantizationType.Q4_1)
        w.add_tensor(gguf_name, q, raw_dtype=gguf.GGMLQuantizationType.Q4_1)

    def vector(gguf_name: str, hf_name: str) -> None:
        v = (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
        hf[hf_name] = v
        w.add_tensor(gguf_name, v)

    matrix("token_embd.weight", "model.embed_tokens.weight", vocab, HIDDEN)
    kv = HIDDEN // HEADS * KV_HEADS
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        vector(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight")
        matrix(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", HIDDEN, HIDDEN, HEADS)
        matrix(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", kv, HIDDEN, KV_HEADS)
        matrix(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight", kv, HIDDEN)
        matrix(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight", HIDDEN, HIDDEN)
        vector(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight", HIDDEN, FFN)
    vector("output_norm.weight", "model.norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


def random_llama(seed: int = 0, vocab: int = 64):  # noqa: ANN201
    """A randomly initialised 2-layer LLaMA (no tokenizer) for scoring and loss mechanics."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:  # noqa: ANN001
    """The tiny GGUF LLaMA prepared as an HF folder (model + byte-level BPE tokenizer)."""
    from aroma_peft.prepare import prepare_model

    root = tmp_path_factory.mktemp("tiny_llm")
    write_tiny_llama_gguf(root / "tiny.gguf")
    prepare_model(root / "tiny.gguf", root / "model")
    return root / "model"
