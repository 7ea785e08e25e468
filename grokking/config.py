"""Run configuration: the RunConfig dataclass, the presets, validation and the JSON round trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any


class GrokkingError(Exception):
    """A mistake the user can fix; the CLI prints it as one line and exits with code 2."""


OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
MODELS = ("transformer", "mlp")
INITS = ("default", "nanda")
ACTIVATIONS = ("gelu", "relu")
LOSSES = ("cross_entropy", "stablemax")
LOSS_DTYPES = ("float32", "float64")
GROKFAST_FILTERS = ("none", "ema", "ma")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run. Defaults are the paper's (Power et al., App. A.1)."""

    preset: str = "custom"
    operation: str = "div"
    p: int = 97
    train_frac: float = 0.5
    seed: int = 0
    steps: int = 100_000
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    warmup_steps: int = 10
    batch_size: int | None = None  # None: min(512, n_train // 2); 0: the whole training split
    model: str = "transformer"  # or "mlp": embeddings of x and y concatenated, then hidden layers
    n_layers: int = 2  # transformer blocks, or hidden layers of the MLP
    d_model: int = 128  # residual width (transformer) or embedding width (MLP)
    n_heads: int = 4
    d_mlp: int | None = None  # hidden width of the MLPs; None: 4 * d_model
    layer_norm: bool = True
    activation: str = "gelu"
    op_token: bool = True  # sequences [x, op, y, =]; without it [x, y, =] (Nanda et al.)
    init: str = "default"  # PyTorch's initialisation, or "nanda": every matrix N(0, 1/d_model), biases 0
    dropout: float = 0.0
    loss: str = "cross_entropy"  # or "stablemax" (Prieto et al. 2025)
    loss_dtype: str = "float32"  # float64 delays softmax collapse (Prieto et al. 2025)
    grokfast: str = "none"  # gradient filter of Lee et al. 2024: "ema" or "ma"
    grokfast_alpha: float = 0.98  # EMA momentum
    grokfast_lambda: float = 2.0  # amplification of the slow gradient
    grokfast_window: int = 100  # moving-average window
    orthograd: bool = False  # ⊥Grad: drop the gradient component along the weights (Prieto et al. 2025)
    eval_every: int = 100
    checkpoint_every: int = 1000
    snapshot_every: int = 10_000
    stop_on_grok: bool = False
    device: str = "auto"

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hidden_width(self) -> int:
        return self.d_mlp if self.d_mlp is not None else 4 * self.d_model

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> RunConfig:
        """Build a validated config from JSON data, refusing unknown keys and wrong types.

        Keys missing from older run dirs take their defaults, which reproduce what those runs did."""
        if not isinstance(data, dict):
            raise GrokkingError(f"{source}: expected a JSON object of config fields")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GrokkingError(f"{source}: unknown config keys {unknown}; valid keys are {sorted(known)}")
        for key, value in data.items():
            if not _has_type(value, known[key].type):
                raise GrokkingError(f"{source}: {key}={value!r} should be of type {known[key].type}")
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise GrokkingError naming the fix for any value that cannot train."""
        from grokking.tasks import validate_task  # tasks depends on config; import here to keep layering

        validate_task(self.operation, self.p)
        if not 0 < self.train_frac < 1:
            raise GrokkingError(f"--train-frac must be strictly between 0 and 1 (got {self.train_frac})")
        positive = {
            "steps": self.steps,
            "eval-every": self.eval_every,
            "checkpoint-every": self.checkpoint_every,
            "snapshot-every": self.snapshot_every,
            "n-layers": self.n_layers,
            "d-model": self.d_model,
            "n-heads": self.n_heads,
            "grokfast-window": self.grokfast_window,
        }
        if self.d_mlp is not None:
            positive["d-mlp"] = self.d_mlp
        for name, value in positive.items():
            if value <= 0:
                raise GrokkingError(f"--{name} must be a positive integer (got {value})")
        if self.batch_size is not None and self.batch_size < 0:
            raise GrokkingError(f"--batch-size must be positive, or 0 for the whole training split (got {self.batch_size})")
        if self.d_model % self.n_heads:
            raise GrokkingError(
                f"--d-model ({self.d_model}) must be divisible by --n-heads ({self.n_heads})"
            )
        for flag, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("device", self.device, DEVICES),
            ("model", self.model, MODELS),
            ("init", self.init, INITS),
            ("activation", self.activation, ACTIVATIONS),
            ("loss", self.loss, LOSSES),
            ("loss-dtype", self.loss_dtype, LOSS_DTYPES),
            ("grokfast", self.grokfast, GROKFAST_FILTERS),
        ):
            if value not in choices:
                raise GrokkingError(f"unknown --{flag} {value!r}; choose one of {', '.join(choices)}")
        if self.lr <= 0 or self.eps <= 0:
            raise GrokkingError(f"--lr and --eps must be positive (got lr={self.lr}, eps={self.eps})")
        if self.weight_decay < 0:
            raise GrokkingError(f"--weight-decay must be >= 0 (got {self.weight_decay})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise GrokkingError(f"--beta1 and --beta2 must be in [0, 1) (got {self.beta1}, {self.beta2})")
        if self.warmup_steps < 0:
            raise GrokkingError(f"--warmup-steps must be >= 0 (got {self.warmup_steps})")
        if not 0 <= self.dropout < 1:
            raise GrokkingError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not 0 <= self.grokfast_alpha < 1:
            raise GrokkingError(f"--grokfast-alpha must be in [0, 1) (got {self.grokfast_alpha})")
        if self.grokfast_lambda < 0:
            raise GrokkingError(f"--grokfast-lambda must be >= 0 (got {self.grokfast_lambda})")


def _has_type(value: Any, annotation: str) -> bool:
    """Check a JSON value against a field annotation (annotations are strings here)."""
    if value is None:
        return "None" in annotation
    if isinstance(value, bool):
        return annotation == "bool"
    if isinstance(value, int):
        return annotation.startswith(("int", "float"))
    if isinstance(value, float):
        return annotation == "float"
    return isinstance(value, str) and annotation == "str"


PAPER = RunConfig(preset="paper")

PRESETS: dict[str, RunConfig] = {
    # Power et al. Fig. 1: plain Adam, no weight decay, a very long delay before generalization.
    "paper_late": PAPER.replace(
        preset="paper_late",
        optimizer="adam",
        weight_decay=0.0,
        steps=1_000_000,
        eval_every=1000,
        checkpoint_every=10_000,
        snapshot_every=100_000,
    ),
    # Power et al. Fig. 4: AdamW with weight decay 1, the setting that generalizes fastest.
    "paper_wd": PAPER.replace(preset="paper_wd", optimizer="adamw", weight_decay=1.0, steps=100_000),
    # Nanda et al. 2023: x+y mod 113 on 30 % of the table, full-batch AdamW, one layer without
    # LayerNorm, ReLU MLP of width 512, tokens [x, y, =], their initialisation.
    "nanda_add": PAPER.replace(
        preset="nanda_add",
        operation="add",
        p=113,
        train_frac=0.3,
        batch_size=0,
        n_layers=1,
        d_mlp=512,
        layer_norm=False,
        activation="relu",
        op_token=False,
        init="nanda",
        steps=40_000,
        checkpoint_every=1000,
        snapshot_every=5000,
    ),
    # A small setting that groks on a 2-core CPU in about a minute (README's first command).
    "quick": PAPER.replace(
        preset="quick",
        p=47,
        train_frac=0.6,
        steps=20_000,
        lr=2e-3,
        d_model=64,
        eval_every=50,
        checkpoint_every=500,
        snapshot_every=2000,
        stop_on_grok=True,
    ),
}


def preset_config(name: str) -> RunConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise GrokkingError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# Fields that may change when a run is resumed: they do not alter the training trajectory.
RESUMABLE_FIELDS = frozenset({"steps", "device", "stop_on_grok", "checkpoint_every", "snapshot_every"})


def config_differences(old: RunConfig, new: RunConfig, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Human-readable `key: old -> new` lines for the fields that differ."""
    a, b = old.to_dict(), new.to_dict()
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]
