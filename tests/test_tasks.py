import pytest
import torch

from grokking.config import GrokkingError
from grokking.tasks import build_dataset, is_prime, n_examples, split_indices, validate_task


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


def test_split_sizes_disjoint_and_deterministic():
    n = 97 * 96
    train, val = split_indices(n, 0.5, seed=0)
    assert len(train) == 4656 and len(val) == 4656
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(n))
    again_train, _ = split_indices(n, 0.5, seed=0)
    other_train, _ = split_indices(n, 0.5, seed=1)
    assert torch.equal(train, again_train)
    assert not torch.equal(train, other_train)
    assert len(split_indices(n, 0.3, seed=0)[0]) == round(0.3 * n)


@pytest.mark.parametrize(("p", "message"), [(10, "prime"), (2, "at least 3"), (91, "prime")])
def test_bad_modulus_is_refused(p, message):
    with pytest.raises(GrokkingError, match=message):
        validate_task("div", p)


def test_unknown_operation_lists_the_valid_ones():
    with pytest.raises(GrokkingError, match="choose one of div"):
        validate_task("pow", 7)


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
