import itertools

import numpy as np
import pytest
import torch

from grokking.config import PRESETS, SPLITS, RunConfig, resolve
from grokking.errors import GrokkingError
from grokking.layout import Layout
from grokking.model import build_model
from grokking.operations import is_prime, n_examples, validate_task
from grokking.tasks import BatchSampler, build_dataset, load_task


@pytest.mark.parametrize("p", [5, 11, 97])
def test_division_table_is_correct_and_complete(p):
    data = build_dataset("div", p)
    x, op, y, eq = data.inputs.T
    c = data.targets
    assert len(c) == p * (p - 1) == n_examples("div", p)
    assert torch.all((c * y) % p == x), "every answer satisfies c·y ≡ x (mod p)"
    assert torch.all(op == p) and torch.all(eq == p + 1)
    assert set(y.tolist()) == set(range(1, p)) and set(x.tolist()) == set(range(p))
    assert len({(a, b) for a, b in zip(x.tolist(), y.tolist())}) == len(c)
    assert data.vocab_size == p + 2 and data.n_classes == p


@pytest.mark.parametrize("split", SPLITS)
def test_split_sizes_disjoint_and_deterministic(split):
    n = 97 * 96
    config = RunConfig(split=split)

    def halves_of(**changes):
        data = load_task(config.replace(**changes))
        return data.train_indices, torch.tensor(sorted(set(range(n)) - set(data.train_indices.tolist())))

    train, val = halves_of(seed=0)
    assert len(train) == 4656 and len(val) == 4656
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(n))
    assert torch.equal(train, halves_of(seed=0)[0])
    assert not torch.equal(train, halves_of(seed=1)[0])
    assert len(halves_of(train_frac=0.3)[0]) == (int(0.3 * n) if split == "nanda" else round(0.3 * n))


@pytest.mark.parametrize(
    ("op", "p", "message"),
    [("div", 10, "prime"), ("div", 2, "at least 3"), ("div_odd", 91, "prime"), ("add", 2, "at least 3")],
)
def test_bad_modulus_is_refused(op, p, message):
    with pytest.raises(GrokkingError, match=message):
        validate_task(op, p)


def test_only_division_needs_a_prime():
    validate_task("add", 12)
    validate_task("cube_xy2_y", 100)


def test_unknown_operation_lists_the_valid_ones():
    with pytest.raises(GrokkingError, match="choose one of add, sub, mul, div"):
        validate_task("pow", 7)


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


def _modular_reference(name, x, y, p):
    """Each modular operation written out again with Python integers, independently of tasks.py."""
    if name == "div" or (name == "div_odd" and y % 2 == 1):
        return next(c for c in range(p) if (c * y - x) % p == 0)
    return {
        "add": x + y,
        "sub": x - y,
        "mul": x * y,
        "div_odd": x - y,
        "sq_sum": x * x + y * y,
        "quad": x * x + x * y + y * y,
        "quad_x": x * x + x * y + y * y + x,
        "cube_xy": x * x * x + x * y,
        "cube_xy2_y": x * x * x + x * y * y + y,
        "square_add": x * x + y,
        "cube_add": x * x * x + y,
        "add_or_mul": x + y if x % 2 == 0 else x * y,
        "add_or_sub": x + y if x % 2 == 0 else x - y,
    }[name] % p


MODULAR = ["add", "sub", "mul", "div", "div_odd", "sq_sum", "quad", "quad_x", "cube_xy", "cube_xy2_y"]
MODULAR += ["square_add", "cube_add", "add_or_mul", "add_or_sub"]  # openai/grok's **2+, **3+, +*, +-


@pytest.mark.parametrize("name", MODULAR)
def test_every_modular_operation_matches_its_definition(name):
    p = 11
    data = build_dataset(name, p)
    x, op, y, eq = data.inputs.T.tolist()
    assert [_modular_reference(name, a, b, p) for a, b in zip(x, y)] == data.targets.tolist()
    expected_y = set(range(1, p)) if name == "div" else set(range(p))
    assert set(y) == expected_y and len(data.targets) == p * len(expected_y) == n_examples(name, p)
    assert set(op) == {p} and set(eq) == {p + 1} and data.n_classes == p


def _compose(a, b):
    return tuple(a[b[i]] for i in range(5))


def _inverse(a):
    return tuple(sorted(range(5), key=lambda i: a[i]))


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("s5_mul", lambda a, b: _compose(a, b)),
        ("s5_conj", lambda a, b: _compose(_compose(a, b), _inverse(a))),
        ("s5_xyx", lambda a, b: _compose(_compose(a, b), a)),
    ],
)
def test_s5_operations_match_explicit_permutation_composition(name, word):
    elements = sorted(itertools.permutations(range(5)))
    data = build_dataset(name, p=2)  # S5 ignores p, even one that would be refused elsewhere
    assert len(data.targets) == 120 * 120 == n_examples(name, 97)
    assert data.vocab_size == 122 and data.n_classes == 120
    for (x, _, y, _), c in zip(data.inputs.tolist(), data.targets.tolist()):
        assert elements[c] == word(elements[x], elements[y])


def test_s5_conjugation_fixes_the_identity_and_the_product_is_not_commutative():
    table = build_dataset("s5_mul", 97).targets.view(120, 120)
    assert not torch.equal(table, table.T)
    assert torch.equal(build_dataset("s5_conj", 97).targets.view(120, 120)[:, 0], torch.zeros(120, dtype=torch.long))


def test_end_token_sequences_are_openais_eos_x_op_y_equals_answer():
    data = build_dataset("add", 7, end_token=True)
    eos, op, eq = 9, 7, 8
    assert data.vocab_size == 10 and data.layout.end == eos and data.n_classes == 7
    for (first, x, o, y, e, c), answer in zip(data.inputs.tolist(), data.targets.tolist()):
        assert (first, o, e) == (eos, op, eq) and c == answer == (x + y) % 7
    scored = data.scored_targets(torch.arange(3))
    assert scored.tolist() == [[data.targets[i].item(), eos] for i in range(3)]


def test_the_split_seed_fixes_the_split_while_the_seed_varies_the_init():
    base = RunConfig(p=11, d_model=32, split_seed=0)
    a, b = load_task(base.replace(seed=1)), load_task(base.replace(seed=2))
    assert torch.equal(a.train_indices, b.train_indices)
    assert not torch.equal(load_task(base.replace(split_seed=5)).train_indices, a.train_indices)
    # without a split seed, the seed decides the split as before
    assert torch.equal(
        load_task(RunConfig(p=11, seed=3)).train_indices, load_task(base.replace(split_seed=3)).train_indices
    )
    first, second = (build_model(Layout.of(11), base.replace(seed=s)).state_dict() for s in (1, 2))
    assert not torch.equal(first["token_embedding.weight"], second["token_embedding.weight"])


@pytest.mark.parametrize("keep_last", [False, True])
def test_batches_cover_each_epoch_once_and_keep_or_drop_the_rest(keep_last):
    sampler = BatchSampler(seed=3, n_train=23, batch_size=5, device=torch.device("cpu"), keep_last=keep_last)
    per_epoch = 5 if keep_last else 4  # 23 = 4 x 5 + 3
    for epoch in range(3):
        batches = [sampler.indices(epoch * per_epoch + i + 1) for i in range(per_epoch)]
        assert [len(b) for b in batches] == ([5, 5, 5, 5, 3] if keep_last else [5, 5, 5, 5])
        seen = torch.cat(batches)
        assert len(set(seen.tolist())) == len(seen)  # without replacement within an epoch
        if keep_last:
            assert sorted(seen.tolist()) == list(range(23))
    assert torch.equal(sampler.indices(7), BatchSampler(3, 23, 5, torch.device("cpu"), keep_last).indices(7))


def test_the_paper_presets_batch_as_openai_grok_does():
    config = resolve(PRESETS["paper_wd"])
    assert config.last_batch == "keep" and config.batch_size == 512
    sampler = BatchSampler.of(config, 4656, torch.device("cpu"))
    assert [len(sampler.indices(step)) for step in range(1, 12)] == [512] * 9 + [48, 512]


def openai_division_equations() -> list[str]:
    """openai/grok's equations of x/y mod 97 in its own order, as grok/data.py writes them: its loop over
    (c, b), b ≠ 0, writes (b·c mod 97) / b = c."""
    return [f"{(b * c) % 97} / {b} = {c}" for c, b in itertools.product(range(97), range(1, 97))]


def equations_of(data, rows) -> set[str]:
    layout, inputs = data.layout, data.dataset.inputs
    return {f"{inputs[r, layout.x]} / {inputs[r, layout.y]} = {data.dataset.targets[r]}" for r in rows.tolist()}


def test_the_paper_presets_train_on_openai_groks_own_half_of_the_table():
    data = load_task(resolve(PRESETS["paper_wd"]))
    equations = openai_division_equations()
    np.random.RandomState(0).shuffle(equations)  # its make_data(shuffle=True, seed=0)
    assert equations[:3] == ["77 / 47 = 78", "11 / 23 = 30", "18 / 3 = 6"]  # the first training equations
    train = equations_of(data, data.train_indices)
    assert train == set(equations[:4656]) and len(train) == 4656
    assert "56 / 59 = 70" not in train  # openai's first validation equation


@pytest.mark.parametrize("split", SPLITS)
def test_label_noise_changes_exactly_n_training_answers_and_never_validation(split):
    config = resolve(RunConfig(p=11, split=split, label_noise=7, op_token=True, end_token=True, logits="vocab"))
    clean, noisy = load_task(config.replace(label_noise=0)), load_task(config)
    assert torch.equal(clean.train_indices, noisy.train_indices)
    assert torch.equal(clean.val_targets, noisy.val_targets)
    assert len(noisy.noisy_rows) == 7 and set(noisy.noisy_rows.tolist()) <= set(noisy.train_indices.tolist())
    position = {row: i for i, row in enumerate(noisy.train_indices.tolist())}
    changed = {row for row, i in position.items() if not torch.equal(clean.train_targets[i], noisy.train_targets[i])}
    assert changed <= set(noisy.noisy_rows.tolist()) and len(changed) >= 5  # a drawn answer may be the true one
    assert (noisy.train_targets[:, 1] == noisy.layout.ids["eos"]).all()  # only the answer is noisy, not eos


def test_openai_label_noise_gives_the_answers_openai_grok_draws():
    """openai's `<op>_noisy_N`: after the shuffle, rng.choice(data, N) picks equations whose answers the
    first N equations (all in training) take."""
    config = resolve(PRESETS["paper_wd"].replace(label_noise=5))
    data = load_task(config)
    equations = openai_division_equations()
    rng = np.random.RandomState(0)
    rng.shuffle(equations)
    donors = rng.choice(equations, size=5)
    expected = [f"{eq.split(' = ')[0]} = {donor.split(' = ')[1]}" for eq, donor in zip(equations, donors)]
    position = {row: i for i, row in enumerate(data.train_indices.tolist())}
    layout, inputs = data.layout, data.dataset.inputs
    given = [
        f"{inputs[r, layout.x]} / {inputs[r, layout.y]} = {data.train_targets[position[r], 0]}"
        for r in data.noisy_rows.tolist()
    ]
    assert given == expected
