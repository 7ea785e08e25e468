import math

import pytest
import torch
import torch.nn.functional as F

from grokking.config import ARCHITECTURES, PRESETS, RunConfig, resolve
from grokking.layout import Layout
from grokking.losses import per_sample_loss
from grokking.model import build_model, sinusoidal_positions
from grokking.tasks import build_dataset


def test_output_never_depends_on_later_tokens(tiny):
    model = build_model(Layout.of(tiny.p), tiny.replace(n_layers=2)).eval()
    tokens = torch.randint(0, tiny.p, (8, 4))
    reference = model.forward_all(tokens)
    for position in range(3):
        changed = tokens.clone()
        changed[:, position + 1 :] = torch.randint(0, tiny.p + 2, changed[:, position + 1 :].shape)
        out = model.forward_all(changed)
        assert torch.allclose(out[:, : position + 1], reference[:, : position + 1], atol=1e-6)
        assert not torch.allclose(out[:, -1], reference[:, -1])  # the last position does see them


def test_answer_logits_have_one_row_per_example(tiny):
    model = build_model(Layout.of(tiny.p), tiny).eval()
    tokens = build_dataset("div", tiny.p).inputs[:5]
    assert model(tokens).shape == (5, tiny.p)


def test_init_depends_on_seed_only(tiny):
    a = build_model(Layout.of(11), tiny).state_dict()
    b = build_model(Layout.of(11), tiny).state_dict()
    c = build_model(Layout.of(11), tiny.replace(seed=1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


SWITCHES = {
    "prenorm": {},
    "openai": ARCHITECTURES["openai"],
    "post-LN with biases and learned positions": dict(norm_position="post"),
    "no LayerNorm, sinusoidal": dict(layer_norm=False, positions="sinusoidal", bias=False),
    "vocabulary logits, no op token": dict(logits="vocab", op_token=False),
    "end token without op token": dict(logits="vocab", end_token=True, op_token=False, activation="relu"),
}


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("switches", list(SWITCHES.values()), ids=list(SWITCHES))
def test_fast_forward_matches_the_reference_computation(n_layers, switches):
    """The engine's logits, loss and gradients equal the all-positions reference's, for every
    combination of the architecture switches: the answer at `=`, and the tokens the loss scores.
    In float64, so that the check is of the computation, not of float32 rounding (logits of the
    perturbed models without LayerNorm reach ~1000)."""
    config = RunConfig(p=13, d_model=32, n_heads=4, n_layers=n_layers, loss_dtype="float64", **switches)
    data = build_dataset("div", config.p, config.op_token, config.end_token)
    model = build_model(data.layout, config)
    with torch.no_grad():  # move off the init so every weight matters
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    model = model.double()
    scored = 2 if config.end_token else 1
    reference_all = model.forward_all(data.inputs)
    torch.testing.assert_close(model(data.inputs), reference_all[:, -scored], rtol=1e-9, atol=1e-9)
    targets = data.scored_targets(torch.arange(len(data.targets)))
    fast = model(data.inputs, scored=True)
    reference = reference_all[:, -scored:].squeeze(1)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-9)
    fast_loss = per_sample_loss(fast, targets, config).mean()
    ref_loss = F.cross_entropy(reference.reshape(-1, reference.shape[-1]), targets.reshape(-1))
    assert fast_loss.item() == pytest.approx(ref_loss.item(), rel=1e-9)
    fast_grads = torch.autograd.grad(fast_loss, list(model.parameters()))
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))
    for a, b in zip(fast_grads, ref_grads):  # to 1e-6 of each gradient's largest entry
        assert (a - b).abs().max() <= 1e-6 * b.abs().max()


def openai_parameter_count(vocab: int, d_model: int, n_layers: int) -> int:
    """openai/grok's Transformer counted by hand: Embedding(vocab, d); per DecoderBlock, per head
    Wq, Wk, Wv (d x d/heads, no bias) = 3d² over all heads, Wo d², FFN d x 4d and 4d x d (no bias),
    two LayerNorms of 2d; the output Linear(d, vocab, no bias); the position encoding is a buffer."""
    block = 3 * d_model**2 + d_model**2 + 2 * 4 * d_model**2 + 2 * 2 * d_model
    return vocab * d_model + n_layers * block + d_model * vocab


def test_the_openai_architecture_is_openai_grok_transformer():
    config = resolve(PRESETS["paper_wd"])
    data = build_dataset(config.operation, config.p, config.op_token, config.end_token)
    model = build_model(data.layout, config)
    assert data.vocab_size == 97 + 3  # the task's tokens: the numbers, the operation, `=` and eos
    assert model.token_embedding.num_embeddings == model.unembed.out_features == 239  # openai/grok's vocabulary
    assert sum(p.numel() for p in model.parameters()) == openai_parameter_count(239, 128, 2) == 455_424
    task_only = build_model(data.layout, config.replace(vocab="task"))
    assert sum(p.numel() for p in task_only.parameters()) == openai_parameter_count(100, 128, 2) == 419_840
    assert not any(name.endswith("bias") and "ln" not in name for name, _ in model.named_parameters())
    assert isinstance(model.ln_f, torch.nn.Identity)
    block = model.blocks[0]
    assert block.post and isinstance(block.mlp.activation, torch.nn.ReLU) and block.mlp.w_in.out_features == 4 * 128
    assert not hasattr(model, "position_embedding")
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0], [math.sin(1), math.cos(1), math.sin(1 / 100), math.cos(1 / 100)]])
    torch.testing.assert_close(sinusoidal_positions(2, 4), expected)  # sin/cos(pos / 10000^(2i/d)), as openai's
    # post-LN: each block's output is normalized (LayerNorm after the residual add)
    h = block(torch.randn(3, 6, 128))
    torch.testing.assert_close(h.mean(-1), torch.zeros(3, 6), atol=1e-5, rtol=0)


def test_with_dropout_training_uses_the_reference_path(tiny):
    model = build_model(Layout.of(tiny.p), tiny.replace(dropout=0.5)).train()
    tokens = build_dataset("div", tiny.p).inputs
    torch.manual_seed(0)
    a = model(tokens)
    torch.manual_seed(0)
    b = model.forward_all(tokens)[:, -1]
    assert torch.equal(a, b)
