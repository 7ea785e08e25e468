"""The binary operations: their formulas over the residues mod p (or the 120 permutations of S5),
the size of their tables, and which moduli they accept.

They are openai/grok's binary operations (grok/data.py), named here: its `**2+` and `**3+` are
square_add and cube_add, `+*` and `+-` are add_or_mul and add_or_sub, `s5`, `s5conj` and `s5aba` are
s5_mul, s5_conj and s5_xyx. Two differ in how the operands are written: openai's `s5` composes the
other way round (c = b∘a, i.e. c(i) = b(a(i))) where s5_mul is c = x∘y, c(i) = x(y(i)), the same
task with x and y swapped; and its `s5conj`, sympy's a*b*a⁻¹ (which applies a first), is a⁻¹∘b∘a,
s5_conj with x's inverse in place of x. `Operation.openai_operands` maps each of openai's equations
to its row here, so that openai's split can be taken over exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from grokking.errors import GrokkingError, pick

S5_SIZE = 120


Operands = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _same_operands(a: np.ndarray, b: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    return a, b


@dataclass(frozen=True)
class Operation:
    name: str
    formula: str
    compute: Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (x, y, p) -> c, as element indices
    needs_prime: bool = False  # the formula needs inverses mod p
    y_nonzero: bool = False  # y ranges over 1..n-1 instead of 0..n-1
    group_size: int | None = None  # a fixed group (S5) whose size does not depend on p
    # openai/grok lists its equations by its loop variables (a, b) over the elements (b ≠ 0 where y ≠ 0):
    # the (x, y) of this table that the equation of (a, b) is, so its split can be taken over exactly
    openai_operands: Operands = _same_operands

    def n_elements(self, p: int) -> int:
        return self.group_size or p

    def describe(self, p: int) -> str:
        return f"{self.formula} in S5" if self.group_size else f"{self.formula} mod {p}"


def _inverses(p: int) -> np.ndarray:
    """inverse[v] = v⁻¹ mod p for v = 1..p-1 (inverse[0] is unused)."""
    return np.array([0] + [pow(v, -1, p) for v in range(1, p)])


def _divide(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return (x * _inverses(p)[y]) % p


def _divide_if_odd(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return np.where(y % 2 == 1, _divide(x, y, p), (x - y) % p)


@cache
def s5_permutations() -> np.ndarray:
    """The 120 permutations of 0..4 in lexicographic order; element i of S5 is row i."""
    return np.array(list(itertools.permutations(range(5))))


def _s5_index(perms: np.ndarray) -> np.ndarray:
    """Element index of each permutation row (rows are read as base-5 numbers)."""
    lookup = np.zeros(5**5, dtype=np.int64)
    lookup[s5_permutations() @ 5 ** np.arange(4, -1, -1)] = np.arange(S5_SIZE)
    return lookup[perms @ 5 ** np.arange(4, -1, -1)]


def _s5_inverse(a: np.ndarray) -> np.ndarray:
    """The element index of each element's inverse."""
    return _s5_index(np.argsort(s5_permutations()[a], axis=1))


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a·b)(i) = a(b(i)) for rows of permutations."""
    return np.take_along_axis(a, b, axis=1)


def _s5(word: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    def compute(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
        perms = s5_permutations()
        return _s5_index(word(perms[x], perms[y]))

    return compute


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation("add", "x+y", lambda x, y, p: (x + y) % p),
        Operation("sub", "x−y", lambda x, y, p: (x - y) % p),
        Operation("mul", "x·y", lambda x, y, p: (x * y) % p),
        # openai/grok lists division by answer: a/b = c is written as (a·b mod p) / b = a
        Operation(
            "div",
            "x/y (= x·y⁻¹)",
            _divide,
            needs_prime=True,
            y_nonzero=True,
            openai_operands=lambda a, b, p: ((a * b) % p, b),
        ),
        Operation("div_odd", "x/y if y odd else x−y", _divide_if_odd, needs_prime=True),
        Operation("sq_sum", "x²+y²", lambda x, y, p: (x**2 + y**2) % p),
        Operation("quad", "x²+xy+y²", lambda x, y, p: (x**2 + x * y + y**2) % p),
        Operation("quad_x", "x²+xy+y²+x", lambda x, y, p: (x**2 + x * y + y**2 + x) % p),
        Operation("cube_xy", "x³+xy", lambda x, y, p: (x**3 + x * y) % p),
        Operation("cube_xy2_y", "x³+xy²+y", lambda x, y, p: (x**3 + x * y**2 + y) % p),
        Operation("square_add", "x²+y", lambda x, y, p: (x**2 + y) % p),
        Operation("cube_add", "x³+y", lambda x, y, p: (x**3 + y) % p),
        Operation("add_or_mul", "x+y if x even else x·y", lambda x, y, p: np.where(x % 2 == 0, x + y, x * y) % p),
        Operation("add_or_sub", "x+y if x even else x−y", lambda x, y, p: np.where(x % 2 == 0, x + y, x - y) % p),
        # openai's s5 equation (a, b) has the answer b·a: this table's (x, y) = (b, a)
        Operation("s5_mul", "x·y", _s5(_compose), group_size=S5_SIZE, openai_operands=lambda a, b, p: (b, a)),
        # openai's s5conj is sympy's a*b*a⁻¹, which applies a first: a⁻¹·b·a, this table's (x, y) = (a⁻¹, b)
        Operation(
            "s5_conj",
            "x·y·x⁻¹",
            _s5(lambda a, b: _compose(_compose(a, b), np.argsort(a, axis=1))),
            group_size=S5_SIZE,
            openai_operands=lambda a, b, p: (_s5_inverse(a), b),
        ),
        Operation("s5_xyx", "x·y·x", _s5(lambda a, b: _compose(_compose(a, b), a)), group_size=S5_SIZE),
    ]
}


def get_operation(name: str) -> Operation:
    return pick(OPERATIONS, name, "operation")


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def validate_task(operation: str, p: int) -> None:
    op = get_operation(operation)
    if op.group_size:
        return  # S5 ignores p
    if p < 3:
        raise GrokkingError(f"--p must be at least 3 (got {p})")
    if op.needs_prime and not is_prime(p):
        raise GrokkingError(f"--p must be prime for operation {op.name!r} (got {p}); try 97, 59 or 47")


def n_examples(operation: str, p: int) -> int:
    """Size of the whole table: n·n, or n·(n-1) when y ranges over 1..n-1 (n elements)."""
    op = get_operation(operation)
    n = op.n_elements(p)
    return n * (n - 1 if op.y_nonzero else n)


def openai_rows(operation: str, p: int) -> np.ndarray:
    """The rows of this table in the order openai/grok lists the same equations (grok/data.py
    `_make_binary_operation_data`: its loop over (a, b), by a then b)."""
    op = get_operation(operation)
    n, first_y = op.n_elements(p), 1 if op.y_nonzero else 0
    a, b = (v.ravel() for v in np.meshgrid(np.arange(n), np.arange(first_y, n), indexing="ij"))
    x, y = op.openai_operands(a, b, p)
    return x * (n - first_y) + (y - first_y)


def n_train_examples(n_examples: int, train_frac: float, split: str = "permutation") -> int:
    """The training equations of a split: round(frac·N) (as openai/grok), int(frac·N) for Nanda et al.'s."""
    share = train_frac * n_examples
    return min(max(int(share) if split == "nanda" else round(share), 1), n_examples - 1)
