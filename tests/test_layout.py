"""The sequence layout: one declaration of positions, scored tokens and ids, and the contract the
model's fast forward relies on, checked in code."""

import numpy as np
import pytest
import torch

from grokking.config import RunConfig
from grokking.errors import GrokkingError
from grokking.layout import Layout
from grokking.model import build_model
from grokking.tasks import Dataset, build_dataset


@pytest.mark.parametrize(
    ("op_token", "end_token", "slots", "ids", "scored"),
    [
        (True, False, ("x", "op", "y", "="), {"op": 7, "=": 8}, [3]),
        (False, False, ("x", "y", "="), {"=": 7}, [2]),
        (True, True, ("eos", "x", "op", "y", "=", "c"), {"op": 7, "=": 8, "eos": 9}, [4, 5]),
    ],
)
def test_each_format_declares_its_positions_ids_and_scored_tokens(op_token, end_token, slots, ids, scored):
    layout = Layout.of(7, op_token, end_token)
    assert layout.slots == slots and layout.ids == ids and list(layout.scored) == scored
    assert layout.vocab_size == 7 + len(ids) and layout.shares_prefix
    data = build_dataset("add", 7, op_token, end_token)
    rows = data.inputs
    assert torch.equal((rows[:, layout.x] + rows[:, layout.y]) % 7, data.targets)
    assert (rows[:, layout.equals] == ids["="]).all()


def test_a_table_that_breaks_the_layout_is_refused():
    """The fast forward reads the symbols before y from the first row; a table whose rows differ there
    would get wrong logits, so it is refused when the table is built."""
    good = build_dataset("add", 7)
    tampered = good.inputs.clone()
    tampered[5, good.layout.position("op")] = 3
    with pytest.raises(GrokkingError, match="must hold `op` in every row"):
        Dataset(tampered, good.targets, good.layout)
    symbol_as_operand = good.inputs.clone()
    symbol_as_operand[0, good.layout.y] = good.layout.ids["="]
    with pytest.raises(GrokkingError, match="must hold an element"):
        Dataset(symbol_as_operand, good.targets, good.layout)


def test_a_layout_without_a_shared_prefix_takes_the_plain_forward():
    """y before x: the positions before y no longer depend on x alone, so the fast forward's
    precondition fails and the model must compute every row in full (the fast path would be wrong)."""
    layout = Layout(("y", "op", "x", "="), 7)
    assert not layout.shares_prefix
    x, y = (a.ravel() for a in np.meshgrid(np.arange(7), np.arange(7), indexing="ij"))
    tokens = torch.from_numpy(layout.tokens(x, y, (x + y) % 7)).long()
    model = build_model(layout, RunConfig(p=7, d_model=16, n_heads=2)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), model.forward_all(tokens)[:, layout.equals], rtol=0, atol=0)


def test_layouts_refuse_what_they_cannot_mean():
    with pytest.raises(GrokkingError, match="one x, one y"):
        Layout(("x", "x", "="), 5)
    with pytest.raises(GrokkingError, match="scores 2 positions"):
        Layout(("x", "y", "="), 5, ("c", "eos"))
