"""Run configuration: every hyperparameter declared once, as a field of `RunConfig` with its help text,
flag and help panel as metadata (the `train` options, the sweep's keys and every validation message
are generated from them); the presets; `resolve()`; the JSON round trip."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from grokking.errors import GrokkingError, pick
from grokking.operations import OPERATIONS, get_operation, n_examples, n_train_examples, validate_task

MEMORIZED = 0.99  # train accuracy that counts as memorized
GENERALIZED = 0.99  # validation accuracy that counts as generalized
GROK_PATIENCE = 3  # stop_on_grok stops after this many evaluations in a row at val acc ≥ GENERALIZED
MAX_SEED = 2**32 - 1
MAX_PARAMETERS = 200_000_000  # 3 GiB of weights, gradients and Adam state in float32

TASK, MODEL, OPTIM, ACCEL, RUN = "Task", "Model", "Optimization", "Loss and accelerators", "Run, output and schedule"


def setting(
    default: Any,
    help: str,
    panel: str,
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    rule: str | None = None,
) -> Any:
    """A RunConfig field with what the CLI and validation need: its help, panel, flag (default:
    `--field-name`), allowed choices, and bounds (`rule` words them where the default wording misleads)."""
    meta = {"help": help, "panel": panel, "flag": flag, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    return dataclasses.field(default=default, metadata={**meta, "rule": rule})


OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
MODELS = ("transformer", "mlp")
INITS = ("default", "nanda")
ACTIVATIONS = ("gelu", "relu")
LOSSES = ("cross_entropy", "stablemax")
LOSS_DTYPES = ("float32", "float64")
NORM_POSITIONS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal")
LOGITS = ("answers", "vocab")
GROKFAST_FILTERS = ("none", "ema", "ma")
PRECISIONS = ("fp32", "bf16")
VOCABULARIES = ("task", "openai")
LAST_BATCHES = ("drop", "keep")
OPENAI_VOCAB = 239  # openai/grok's tokens: eos, =, its 20 operators, the numbers 0-96 and S5's 120 permutations
OPERATION_HELP = "; ".join(f"{name} ({op.describe('p')})" for name, op in OPERATIONS.items())


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run.

    Defaults are the paper's hyperparameters (Power et al., App. A.1) on this project's original pre-LN
    model, so that a config.json written before a field existed loads as what that run did; the
    paper presets switch to the paper's own model (ARCHITECTURES["openai"])."""

    preset: str = "custom"
    operation: str = setting(
        "div",
        f"Operation: {OPERATION_HELP}. (openai/grok's s5 is y·x, the same task with x and y swapped.)",
        TASK,
        flag="--op",
        choices=tuple(OPERATIONS),
    )
    p: int = setting(97, "Modulus (prime for div, div_odd; ignored by s5_*).", TASK, ge=3, le=1000)
    train_frac: float = setting(0.5, "Fraction of the table used for training.", TASK, gt=0, lt=1)
    seed: int = setting(
        0,
        "Seed of the initialisation and the batches (and of the split, without --split-seed).",
        TASK,
        ge=0,
        le=MAX_SEED,
    )
    steps: int = setting(100_000, "Optimization step budget.", RUN, ge=1, le=10**9)
    optimizer: str = setting("adamw", "adam or adamw.", OPTIM, choices=OPTIMIZERS)
    lr: float = setting(1e-3, "Learning rate after warmup.", OPTIM, gt=0, le=10)
    weight_decay: float = setting(1.0, "Weight decay (decoupled for adamw).", OPTIM, ge=0, le=100)
    beta1: float = setting(0.9, "Adam betas, e.g. --betas 0.9 0.98.", OPTIM, flag="--betas", ge=0, lt=1)
    beta2: float = setting(0.98, "Adam betas, e.g. --betas 0.9 0.98.", OPTIM, flag="--betas", ge=0, lt=1)
    eps: float = setting(1e-8, "Adam epsilon.", OPTIM, gt=0, le=1)
    warmup_steps: int = setting(10, "Linear warmup steps.", OPTIM, flag="--warmup", ge=0, le=10**9)
    last_batch: str = setting(
        "drop",
        "drop: every batch full, n-train // batch-size a pass over the data; keep: each pass ends with the "
        "rest, a shorter batch (openai/grok's loader).",
        OPTIM,
        choices=LAST_BATCHES,
    )
    batch_size: int | None = setting(
        None,
        "Batch size; 0 = the whole training split \\[default: min(512, n_train // 2)].",
        OPTIM,
        ge=0,
        le=10**7,
        rule="positive, or 0 for the whole training split",
    )
    model: str = setting(
        "transformer",
        "transformer, or mlp (embeddings of x and y concatenated, then hidden layers).",
        MODEL,
        choices=MODELS,
    )
    n_layers: int = setting(2, "Transformer blocks, or hidden layers of the MLP.", MODEL, ge=1, le=64)
    d_model: int = setting(128, "Residual width (embedding width of the MLP).", MODEL, ge=1, le=4096)
    n_heads: int = setting(4, "Attention heads.", MODEL, ge=1, le=256)
    d_mlp: int | None = setting(None, "Hidden width of the MLPs \\[default: 4 × d-model].", MODEL, ge=1, le=16384)
    layer_norm: bool = setting(True, "LayerNorm in every block (placed by --norm-position).", MODEL)
    norm_position: str = setting(
        "pre",
        "pre: LayerNorm before attention, MLP and unembedding; post: after each residual add (openai/grok).",
        MODEL,
        choices=NORM_POSITIONS,
    )
    bias: bool = setting(True, "Biases in the attention and MLP linear layers (openai/grok has none).", MODEL)
    positions: str = setting(
        "learned", "learned position embeddings, or fixed sinusoidal ones (openai/grok).", MODEL, choices=POSITIONS
    )
    logits: str = setting(
        "answers",
        "Logits over the answers only, or over the whole token vocabulary (openai/grok).",
        MODEL,
        choices=LOGITS,
    )
    end_token: bool = setting(
        False,
        "openai/grok's sequences [eos, x, op, y, =, c] whose loss is on c and the final eos (needs --logits vocab).",
        MODEL,
    )
    activation: str = setting("gelu", "gelu or relu.", MODEL, choices=ACTIVATIONS)
    vocab: str = setting(
        "task",
        f"task: the task's own tokens; openai: openai/grok's {OPENAI_VOCAB} tokens (those of all its tasks; "
        "the unused ones never occur, but with --logits vocab they take part in the softmax).",
        MODEL,
        choices=VOCABULARIES,
    )
    op_token: bool = setting(True, "Sequences \\[x, op, y, =], or \\[x, y, =] without (Nanda et al.).", TASK)
    init: str = setting(
        "default", "default (PyTorch's), or nanda: matrices N(0, 1/d-model), biases 0.", MODEL, choices=INITS
    )
    dropout: float = setting(0.0, "Dropout probability.", MODEL, ge=0, lt=1)
    loss: str = setting("cross_entropy", "cross_entropy, or stablemax (Prieto et al. 2025).", ACCEL, choices=LOSSES)
    loss_dtype: str | None = setting(
        None,
        "float32, or float64 (delays softmax collapse) "
        "\\[default: float64 for stablemax, as Prieto et al.'s code; else float32].",
        ACCEL,
        choices=LOSS_DTYPES,
    )
    grokfast: str = setting(
        "none", "Grokfast gradient filter (Lee et al. 2024): none, ema or ma.", ACCEL, choices=GROKFAST_FILTERS
    )
    grokfast_alpha: float = setting(0.98, "Grokfast-EMA momentum α.", ACCEL, ge=0, lt=1)
    grokfast_lambda: float = setting(2.0, "Grokfast amplification λ of the slow gradient.", ACCEL, ge=0, le=1e6)
    grokfast_window: int = setting(100, "Grokfast-MA window in steps.", ACCEL, ge=1, le=1000)
    orthograd: bool = setting(
        False, "⊥Grad: drop each gradient's component along its weights (Prieto et al. 2025).", ACCEL
    )
    eval_every: int = setting(100, "Steps between evaluations (plus powers of two before).", RUN, ge=1, le=10**9)
    checkpoint_every: int = setting(1000, "Steps between resume points (latest.pt).", RUN, ge=1, le=10**9)
    snapshot_every: int = setting(
        10_000, "Steps between kept step_*.pt (powers of two are kept too).", RUN, ge=1, le=10**9
    )
    stop_on_grok: bool = setting(
        False,
        f"Stop after {GROK_PATIENCE} evaluations in a row at val acc ≥ {GENERALIZED:.0%}.",
        RUN,
    )
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda or mps.", RUN, choices=DEVICES)
    precision: str = setting(
        "fp32",
        "fp32, or bf16: matrix products in bfloat16 under autocast, weights, optimizer and loss in fp32 "
        "(faster on GPUs and on CPUs with BF16; it changes the numbers).",
        RUN,
        choices=PRECISIONS,
    )
    compile: bool = setting(
        False,
        "torch.compile the model for the training step (on CUDA with CUDA graphs); compiling takes "
        "seconds to a minute at the start, cached for later runs.",
        RUN,
    )
    split_seed: int | None = setting(
        None,
        "Seed of the train/validation split \\[default: --seed; the paper presets fix it at 0, as openai/grok].",
        TASK,
        ge=0,
        le=MAX_SEED,
    )

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hidden_width(self) -> int:
        return self.d_mlp if self.d_mlp is not None else 4 * self.d_model

    def parameter_estimate(self) -> int:
        """The model's parameter count to within the biases and norms: embeddings, unembedding, blocks."""
        vocab = max(self.p, 120) + 3  # at most: the elements (p, or S5's 120), the operation, `=` and eos
        if self.model == "mlp":
            return vocab * self.d_model + 2 * self.d_model * self.hidden_width + self.n_layers * self.hidden_width**2
        block = 4 * self.d_model**2 + 2 * self.d_model * self.hidden_width
        return 2 * vocab * self.d_model + self.n_layers * block

    @property
    def data_seed(self) -> int:
        """The seed of the train/validation split."""
        return self.seed if self.split_seed is None else self.split_seed

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> RunConfig:
        """Build a validated config from JSON data, refusing unknown keys and wrong types.

        Keys missing from older run dirs take their defaults, which reproduce what those runs did."""
        if not isinstance(data, dict):
            raise GrokkingError(f"{source}: expected a JSON object of config fields")
        known = field_types()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GrokkingError(f"{source}: unknown config keys {unknown}; valid keys are {sorted(known)}")
        config = cls(**data)
        try:
            config.validate(name=str)  # the keys of the JSON, not flags its reader never typed
        except GrokkingError as e:
            raise GrokkingError(f"{source}: {e}") from None
        return config

    def validate(self, name: Callable[[str], str] | None = None) -> None:
        """Raise GrokkingError naming the setting and the fix for any value that cannot train; a setting is
        named by `name(field)`, by default its flag."""
        name = name or flag_name
        types = field_types()
        for f in fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, types[f.name]):  # the Python API takes any value
                raise GrokkingError(f"{name(f.name)} should be of type {_type_name(types[f.name])} (got {value!r})")
            _check_field(f, value, name)
        validate_task(self.operation, self.p)
        if self.d_model % self.n_heads:
            raise GrokkingError(f"--d-model ({self.d_model}) must be divisible by --n-heads ({self.n_heads})")
        if self.model == "mlp" and (self.end_token or self.logits != "answers"):
            raise GrokkingError("--end-token and --logits vocab are transformer options; drop them with --model mlp")
        parameters = self.parameter_estimate()
        if parameters > MAX_PARAMETERS:
            raise GrokkingError(
                f"the model would have about {parameters:,} parameters ({16 * parameters / 2**30:.1f} GiB with "
                f"gradients and Adam's state); at most {MAX_PARAMETERS:,}: lower --d-model, --d-mlp or --n-layers"
            )
        if self.vocab == "openai" and task_vocab_size(self) > OPENAI_VOCAB:
            raise GrokkingError(
                f"this task needs {task_vocab_size(self)} tokens, more than openai/grok's {OPENAI_VOCAB}: "
                "use --vocab task or a smaller --p"
            )
        if self.end_token and self.logits != "vocab":
            raise GrokkingError("--end-token predicts the end token, which is not an answer: add --logits vocab")


def task_vocab_size(config: RunConfig) -> int:
    """The tokens the task's sequences use: its elements, the operation token, `=` and the end token."""
    return get_operation(config.operation).n_elements(config.p) + config.op_token + 1 + config.end_token


def field_types() -> dict[str, Any]:
    """Each RunConfig field's type, e.g. {'p': int, 'batch_size': int | None, ...}."""
    return typing.get_type_hints(RunConfig)


def base_type(kind: Any) -> type:
    """int for `int | None`, and the type itself otherwise."""
    options = [t for t in typing.get_args(kind) if t is not type(None)]
    return options[0] if options else kind


def _type_name(kind: Any) -> str:
    return base_type(kind).__name__ + (" or null" if type(None) in typing.get_args(kind) else "")


def _has_type(value: Any, kind: Any) -> bool:
    """Check a JSON value against a field type (an int is accepted where a float is expected)."""
    if value is None:
        return type(None) in typing.get_args(kind)
    expected = base_type(kind)
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def flag_name(name: str) -> str:
    """The `grokking train` option that sets field `name`, e.g. --op for operation."""
    meta = RunConfig.__dataclass_fields__[name].metadata
    return meta.get("flag") or "--" + name.replace("_", "-")


def fields_from_flags(values: dict[str, Any]) -> dict[str, Any]:
    """Config fields from the values of `grokking train` options, keyed by flag (`--betas` gives
    beta1 and beta2); options not given (None) set nothing."""
    changes: dict[str, Any] = {}
    for flag, names in flag_fields().items():
        value = values.get(flag)
        if value is not None:
            changes.update(zip(names, value) if len(names) > 1 else [(names[0], value)])
    return changes


def flag_fields() -> dict[str, tuple[str, ...]]:
    """Each `grokking train` option and the fields it sets, in declaration order: `--betas` sets
    (beta1, beta2); `preset` is chosen with its own option and has none."""
    flags: dict[str, tuple[str, ...]] = {}
    for f in fields(RunConfig):
        if f.metadata:
            flags[flag_name(f.name)] = flags.get(flag_name(f.name), ()) + (f.name,)
    return flags


def _range_rule(meta: dict[str, Any], is_int: bool) -> str:
    """The allowed range in words, e.g. 'a positive integer' or 'strictly between 0 and 1'."""
    if meta["rule"]:
        rule = meta["rule"]
    elif meta["gt"] is not None and meta["lt"] is not None:
        rule = f"strictly between {meta['gt']:g} and {meta['lt']:g}"
    elif meta["ge"] is not None and meta["lt"] is not None:
        rule = f"in [{meta['ge']:g}, {meta['lt']:g})"
    elif is_int and meta["ge"] == 1:
        rule = "a positive integer"
    elif meta["gt"] == 0:
        rule = "positive"
    elif meta["ge"] is not None:
        rule = f"at least {meta['ge']:g}"
    else:
        rule = "a number"
    return rule + (f" and at most {meta['le']:,}" if meta["le"] is not None else "")


def _check_field(f: dataclasses.Field, value: Any, name: Callable[[str], str]) -> None:
    meta = f.metadata
    if not meta or value is None:
        return
    if meta["choices"] is not None and value not in meta["choices"]:
        noun = "operation" if f.name == "operation" and name is flag_name else name(f.name)
        raise GrokkingError(f"unknown {noun} {value!r}; choose one of {', '.join(meta['choices'])}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    ok = math.isfinite(value)
    ok = ok and (meta["ge"] is None or value >= meta["ge"]) and (meta["gt"] is None or value > meta["gt"])
    ok = ok and (meta["le"] is None or value <= meta["le"]) and (meta["lt"] is None or value < meta["lt"])
    if not ok:
        rule = _range_rule(dict(meta), isinstance(value, int))
        raise GrokkingError(f"{name(f.name)} must be {rule} (got {value})")


def resolve(config: RunConfig) -> RunConfig:
    """Validate `config` and fill in what its defaults leave open: the batch size (the paper's
    min(512, n_train // 2) unless one is given, the whole training split for 0) and the loss dtype
    (float64 for StableMax, as Prieto et al.'s code computes it; float32 otherwise)."""
    config.validate()
    n_train = n_train_examples(n_examples(config.operation, config.p), config.train_frac)
    size = max(1, min(512, n_train // 2)) if config.batch_size is None else config.batch_size or n_train
    if not 1 <= size <= n_train:
        raise GrokkingError(f"--batch-size must be between 1 and the {n_train} training examples (got {size})")
    loss_dtype = config.loss_dtype or ("float64" if config.loss == "stablemax" else "float32")
    return config.replace(batch_size=size, loss_dtype=loss_dtype)


MAX_VALUES = 100_000  # values one range or list may name (seeds, sweep values)


def int_span(word: str, where: str) -> range | None:
    """The integers of a range word `a-b` (None when `word` is not one); `where` starts the error message."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", word)
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    if first > last:
        raise GrokkingError(f"{where}{word.strip()}: a range a-b needs a <= b")
    if last - first >= MAX_VALUES:
        raise GrokkingError(f"{where}{word.strip()}: at most {MAX_VALUES:,} values")
    return range(first, last + 1)


def repeated(values: list[Any]) -> list[str]:
    """The values (as text) that occur more than once."""
    counts = Counter(str(v) for v in values)
    return sorted(text for text, count in counts.items() if count > 1)


def parse_int_range(text: str, option: str) -> list[int]:
    """`0-2`, `0,3,7` or a mix `0-2,5` -> the integers, in order, without repeats."""
    values: list[int] = []
    for word in text.split(","):
        span = int_span(word, f"{option} ")
        if span is None and not word.strip().isdigit():
            raise GrokkingError(f"{option} takes a range like 0-2, a list like 0,3,7 or both (got {text!r})")
        values += span if span is not None else [int(word)]
        if len(values) > MAX_VALUES:
            raise GrokkingError(f"{option} {text!r}: at most {MAX_VALUES:,} values")
    twice = repeated(values)
    if twice:
        raise GrokkingError(f"{option} {', '.join(twice)} given more than once")
    return values


# Named architectures for `grokking train --arch`: the transformer switches each sets.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # openai/grok's grok/transformer.py, the code released with the paper: post-LN blocks, ReLU,
    # no biases, fixed sinusoidal positions, no final LayerNorm, logits over the whole vocabulary,
    # sequences <eos> x op y = c <eos> with the loss on c and the final <eos>.
    "openai": dict(
        layer_norm=True,
        norm_position="post",
        bias=False,
        positions="sinusoidal",
        activation="relu",
        logits="vocab",
        end_token=True,
        vocab="openai",
    ),
    # This project's original model: pre-LN blocks with a final LayerNorm, GELU, biases, learned
    # positions, logits over the answers, sequences [x, op, y, =] with the loss on the answer.
    "prenorm": dict(
        layer_norm=True,
        norm_position="pre",
        bias=True,
        positions="learned",
        activation="gelu",
        logits="answers",
        end_token=False,
        vocab="task",
    ),
}


def architecture(name: str) -> dict[str, Any]:
    return pick(ARCHITECTURES, name, "--arch")


PRENORM = RunConfig(preset="paper")  # the paper's hyperparameters on the pre-LN model
# ... on the paper's own model, with openai/grok's split (seed 0) and batches (a shorter last one a pass)
PAPER = PRENORM.replace(**ARCHITECTURES["openai"], split_seed=0, last_batch="keep")

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
    "nanda_add": PRENORM.replace(
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
    # A small setting that groks on a 2-core CPU in about a minute (README's first command), on the
    # pre-LN model (the README's timings of this preset were measured on it).
    "quick": PRENORM.replace(
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
    return pick(PRESETS, name, "preset")


def preset_overrides(config: RunConfig) -> str:
    """The training choices where a run departs from its preset, e.g. `loss_dtype=float64`, so
    that a figure of a variant is not mistaken for the preset itself."""
    if config.preset not in PRESETS:
        return ""
    preset = PRESETS[config.preset]
    # The values resolve() fills in (batch size, loss dtype) count as the preset's where its rule gives them.
    as_preset_would = resolve(config.replace(batch_size=preset.batch_size, loss_dtype=preset.loss_dtype))
    for name in ("batch_size", "loss_dtype"):
        if getattr(config, name) == getattr(as_preset_would, name):
            config = config.replace(**{name: getattr(preset, name)})
    # The split is compared as the seed it was drawn with (split_seed None: the run's own seed).
    config, preset = (
        config.replace(split_seed=config.data_seed),
        preset.replace(split_seed=config.replace(split_seed=preset.split_seed).data_seed),
    )
    ours, preset = config.to_dict(), preset.to_dict()
    ignored = RESUMABLE_FIELDS | {"seed", "eval_every", "operation", "p"}  # the label names the task and seed
    changes = [k for k in ours if k not in ignored and ours[k] != preset[k]]
    named = next(  # a whole named architecture in place of the preset's is said by its name
        (name for name, switches in ARCHITECTURES.items() if all(ours[k] == v for k, v in switches.items())), None
    )
    words = [f"arch={named}"] if named and any(k in ARCHITECTURES[named] for k in changes) else []
    words += [f"{k}={ours[k]}" for k in changes if not (words and k in ARCHITECTURES[named])]
    return ", ".join(words)


# Fields that may change when a run is resumed: they do not alter the training trajectory.
RESUMABLE_FIELDS = frozenset({"steps", "device", "compile", "stop_on_grok", "checkpoint_every", "snapshot_every"})


def config_differences(old: RunConfig, new: RunConfig, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Human-readable `key: old -> new` lines for the fields that differ."""
    a, b = old.to_dict(), new.to_dict()
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]
