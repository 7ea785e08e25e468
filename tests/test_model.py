import torch

from grokking.model import build_model


def test_output_never_depends_on_later_tokens(tiny):
    model = build_model(tiny.p + 2, tiny.p, tiny.replace(n_layers=2)).eval()
    tokens = torch.randint(0, tiny.p, (8, 4))
    reference = model.forward_all(tokens)
    for position in range(3):
        changed = tokens.clone()
        changed[:, position + 1 :] = torch.randint(0, tiny.p + 2, changed[:, position + 1 :].shape)
        out = model.forward_all(changed)
        assert torch.allclose(out[:, : position + 1], reference[:, : position + 1], atol=1e-6)
        assert not torch.allclose(out[:, -1], reference[:, -1])  # the last position does see them


def test_answer_logits_are_read_at_the_last_position(tiny):
    model = build_model(tiny.p + 2, tiny.p, tiny).eval()
    tokens = torch.randint(0, tiny.p, (5, 4))
    assert model(tokens).shape == (5, tiny.p)
    assert torch.equal(model(tokens), model.forward_all(tokens)[:, -1])


def test_init_depends_on_seed_only(tiny):
    a = build_model(13, 11, tiny).state_dict()
    b = build_model(13, 11, tiny).state_dict()
    c = build_model(13, 11, tiny.replace(seed=1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
