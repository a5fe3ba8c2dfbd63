"""attn_implementation="fusedseq" in Hugging Face transformers, on tiny random
configs (nothing downloaded): Llama with grouped-query heads, a Mistral-style
sliding-window config and GPT-2. Logits and gradients equal eager attention's
with left padding; batched left-padded greedy generation (KV cache) equals
generating each prompt alone; every attention layer really runs fusedseq."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fusedseq.integrations.transformers as fs_hf  # noqa: E402  (registers "fusedseq")

from conftest import rel_err  # noqa: E402

V = 96


def llama_config():
    return transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                    pad_token_id=0)


def mistral_config():
    return transformers.MistralConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                                      sliding_window=5, pad_token_id=0)


def gpt2_config():
    return transformers.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64, pad_token_id=0,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


CONFIGS = {"llama_gqa": llama_config, "mistral_sliding_window": mistral_config, "gpt2": gpt2_config}


def pair(name, dtype=torch.float32):
    """The same random model twice: fusedseq attention and eager attention."""
    torch.manual_seed(0)
    ours = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(CONFIGS[name]()), attn_implementation="fusedseq")
    eager = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(CONFIGS[name]()), attn_implementation="eager")
    eager.load_state_dict(ours.state_dict())
    assert ours.config._attn_implementation == "fusedseq" and eager.config._attn_implementation == "eager"
    return ours.to(dtype).eval(), eager.to(dtype).eval()


def left_padded_batch(lengths, T, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, T - n:] = 1
        ids[b, : T - n] = 0
    return ids, mask


@pytest.fixture
def spy(monkeypatch):
    """Counts the fusedseq.attention calls the integration makes."""
    calls = []
    real = fs_hf.attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(fs_hf, "attention", counting)
    return calls


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_gradients_match_eager(name, spy):
    """fp32, left padding: logits on the real tokens and every parameter's
    gradient of a loss on them equal eager attention's (≤ 1e-5 relative).
    T = 13 > the Mistral window of 5, so the window masks."""
    ours, eager = pair(name)
    ids, mask = left_padded_batch([13, 9, 4], 13)
    real = mask.bool()
    outs = []
    for model in (ours, eager):
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = logits[real].logsumexp(-1).sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        outs.append((logits.detach()[real], grads))
    assert len(spy) == ours.config.num_hidden_layers
    assert rel_err(outs[0][0], outs[1][0]) <= 1e-5
    for (pname, _), a, b in zip(ours.named_parameters(), outs[0][1], outs[1][1]):
        assert rel_err(a, b) <= 1e-5, pname


@pytest.mark.parametrize("name", list(CONFIGS))
def test_causal_prefill_without_padding(name):
    ours, eager = pair(name)
    ids = torch.randint(1, V, (2, 11), generator=torch.Generator().manual_seed(3))
    assert rel_err(ours(input_ids=ids).logits, eager(input_ids=ids).logits) <= 1e-5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_left_padded_greedy_generation_equals_one_by_one(name, spy):
    """KV-cache greedy decoding, float64 (so that no near-tie of two logits can
    flip under rounding): a left-padded batch generates, prompt by prompt,
    what each prompt generates alone, with fusedseq and with eager attention.
    (Eager's own left-padded float64 batch is no yardstick: its padded query
    rows, masked with finfo.min, come out NaN in this transformers version.)"""
    ours, eager = pair(name, torch.float64)
    lengths, T, new = [7, 3, 5], 7, 12
    ids, mask = left_padded_batch(lengths, T, seed=5)
    kw = dict(max_new_tokens=new, do_sample=False, pad_token_id=0)
    batched = ours.generate(input_ids=ids, attention_mask=mask, **kw)
    assert any(shape[2] == 1 for shape in spy), "no decoding step (one query against the cache) ran on fusedseq"
    for b, n in enumerate(lengths):
        prompt = dict(input_ids=ids[b:b + 1, T - n:], attention_mask=mask[b:b + 1, T - n:])
        alone, alone_eager = ours.generate(**prompt, **kw), eager.generate(**prompt, **kw)
        assert torch.equal(batched[b, T:], alone[0, n:]), (b, batched[b, T:], alone[0, n:])
        assert torch.equal(alone, alone_eager), (b, alone, alone_eager)


def test_attention_dropout_in_training():
    """Dropout on the attention probabilities in train mode, none in eval."""
    cfg = llama_config()
    cfg.attention_dropout = 0.5
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="fusedseq")
    ids = torch.randint(1, V, (2, 9), generator=torch.Generator().manual_seed(2))
    model.eval()
    a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert torch.equal(a, b)
    model.train()
    c = model(input_ids=ids).logits
    assert not torch.allclose(a, c)
    grads = torch.autograd.grad(c.sum(), list(model.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_import_fusedseq_does_not_import_transformers():
    code = "import sys, fusedseq; assert 'transformers' not in sys.modules; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_unsupported_features_are_refused():
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(ValueError, match="soft-capping"):
        fs_hf.fusedseq_attention_forward(torch.nn.Module(), q, q, q, None, softcap=30.0)
