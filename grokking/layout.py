"""A task's sequence format, declared once: what each position holds, which positions the loss
scores, the token ids and the vocabulary. The dataset builds its token rows from it; the model, its
fast forward, evaluation and the analysis read positions from it, never by index.

The formats in use (n = the number of elements; tokens 0..n-1 are the elements):
- `[x, op, y, =]`, the answer c scored at `=` (this project's default);
- `[x, y, =]` without the operation token (Nanda et al.);
- `[eos, x, op, y, =, c]`, scored at `=` (c) and at c (the eos after it), as openai/grok.
The symbols follow the elements: the operation, then `=`, then eos, each only where used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from grokking.errors import GrokkingError

OPERANDS = ("x", "y")
ANSWER = "c"
SYMBOLS = ("op", "=", "eos")  # in the order of their token ids, after the elements
END = "eos"


@dataclass(frozen=True)
class Layout:
    """The positions of a sequence (`slots`: "x", "y", "c" or a symbol), and what the loss scores:
    `predicts` names the token each scored position predicts, the first of them at `=`."""

    slots: tuple[str, ...]
    n_elements: int
    predicts: tuple[str, ...] = (ANSWER,)

    def __post_init__(self) -> None:
        unknown = [s for s in self.slots if s not in (*OPERANDS, ANSWER, *SYMBOLS)]
        if unknown or self.slots.count("x") != 1 or self.slots.count("y") != 1 or "=" not in self.slots:
            raise GrokkingError(f"a layout needs one x, one y and a `=` among known slots (got {self.slots})")
        if self.scored[-1] >= self.length:
            raise GrokkingError(f"layout {self.slots} scores {len(self.predicts)} positions from `=`; it has fewer")

    @classmethod
    def of(cls, n_elements: int, op_token: bool = True, end_token: bool = False) -> Layout:
        """The format of a task's config: `--op-token` and `--end-token` choose among those above."""
        middle = ("x", "op", "y", "=") if op_token else ("x", "y", "=")
        if end_token:
            return cls(("eos", *middle, ANSWER), n_elements, (ANSWER, END))
        return cls(middle, n_elements)

    # positions -------------------------------------------------------------------------------------

    @property
    def length(self) -> int:
        return len(self.slots)

    def position(self, slot: str) -> int:
        return self.slots.index(slot)

    @property
    def x(self) -> int:
        return self.position("x")

    @property
    def y(self) -> int:
        return self.position("y")

    @property
    def equals(self) -> int:
        return self.position("=")

    @property
    def scored(self) -> range:
        """The positions whose next-token logits the loss reads: `=` (the answer), then one more per
        predicted token (openai/grok's c, which predicts eos)."""
        return range(self.equals, self.equals + len(self.predicts))

    # tokens ----------------------------------------------------------------------------------------

    @cached_property
    def ids(self) -> dict[str, int]:
        """The token id of each symbol the layout uses, numbered after the elements."""
        used = [s for s in SYMBOLS if s in self.slots or s in self.predicts]
        return {symbol: self.n_elements + i for i, symbol in enumerate(used)}

    @property
    def vocab_size(self) -> int:
        return self.n_elements + len(self.ids)

    @property
    def end(self) -> int | None:
        """The eos token when the loss scores it, else None."""
        return self.ids[END] if END in self.predicts else None

    def tokens(self, x: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
        """[N, length] token rows of the equations x ∘ y = c."""
        values = {"x": x, "y": y, ANSWER: c}
        return np.stack([values[s] if s in values else np.full_like(x, self.ids[s]) for s in self.slots], axis=1)

    def targets(self, c: np.ndarray) -> np.ndarray:
        """What the loss scores for answers c: c [N], or one column per predicted token [N, T]."""
        columns = [c if s == ANSWER else np.full_like(c, self.ids[s]) for s in self.predicts]
        return columns[0] if len(columns) == 1 else np.stack(columns, axis=1)

    # the fast forward's contract -----------------------------------------------------------------------

    @property
    def shares_prefix(self) -> bool:
        """Whether the positions before y are x and fixed symbols only. Then, under the causal mask, they
        depend on x alone, and the model may compute them once per value of x instead of once per row
        (its fast forward); otherwise it must run the plain forward."""
        before_y = self.slots[: self.y]
        return "x" in before_y and all(s == "x" or s in SYMBOLS for s in before_y)

    def check(self, tokens: np.ndarray) -> None:
        """Refuse token rows that do not follow the layout: a symbol position that holds anything but its
        id, or an element position that holds a symbol. The fast forward reads the symbols before y from
        the first row, so a row that broke this would get wrong logits silently."""
        if tokens.ndim != 2 or tokens.shape[1] != self.length:
            raise GrokkingError(f"token rows of shape {tuple(tokens.shape)} do not fit layout {self.slots}")
        for position, slot in enumerate(self.slots):
            column = tokens[:, position]
            if slot in SYMBOLS and not (column == self.ids[slot]).all():
                raise GrokkingError(f"position {position} of layout {self.slots} must hold `{slot}` in every row")
            if slot not in SYMBOLS and not ((column >= 0) & (column < self.n_elements)).all():
                raise GrokkingError(f"position {position} of layout {self.slots} must hold an element in every row")
