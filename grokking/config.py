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
from grokking.layout import Layout
from grokking.operations import OPERATIONS, get_operation, n_examples, n_train_examples, validate_task

MEMORIZED = 0.99  # train accuracy that counts as memorized
GENERALIZED = 0.99  # validation accuracy that counts as generalized
GROK_PATIENCE = 3  # stop_on_grok stops after this many evaluations in a row at val acc ≥ GENERALIZED
MAX_SEED = 2**32 - 1
MAX_INT = 2**63 - 1
MAX_PARAMETERS = 200_000_000  # 3 GiB of weights, gradients and Adam state in float32

TASK, MODEL, OPTIM, ACCEL, RUN = "Task", "Model", "Optimization", "Loss and accelerators", "Run, output and schedule"


def setting(
    default: Any,
    help: str,
    panel: str,
    *,
    flag: str | None = None,
    alias: str | None = None,
    choices: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    rule: str | None = None,
) -> Any:
    """A RunConfig field with what the CLI and validation need: its help, panel, flag (`--field-name`;
    `flag` only where one option sets several fields, as --betas), a short `alias` (--op), allowed
    choices, and bounds (`rule` words them where the default wording misleads).

    Bounds are the value's mathematical domain (lr > 0, a probability in [0, 1)), or protect a resource
    (memory, time); a value a researcher may try (weight decay 1000) is never refused."""
    meta = {"help": help, "panel": panel, "flag": flag, "alias": alias, "choices": choices}
    meta |= {"ge": ge, "gt": gt, "le": le, "lt": lt}
    return dataclasses.field(default=default, metadata={**meta, "rule": rule})


OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
MODELS = ("transformer", "mlp")
INITS = ("default", "nanda")
ACTIVATIONS = {"gelu": "GELU", "relu": "ReLU"}  # each choice and its torch.nn module
LOSSES = ("cross_entropy", "stablemax")
LOSS_DTYPES = ("float32", "float64")  # torch dtypes, by name
NORM_POSITIONS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal")
LOGITS = ("answers", "vocab")
GROKFAST_FILTERS = ("none", "ema", "ma")
PRECISIONS = ("fp32", "bf16")
VOCABULARIES = ("task", "openai")
LAST_BATCHES = ("drop", "keep")
SPLITS = ("permutation", "openai", "nanda")
DECAY_KINDS = ("to_zero", "to_init")
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
        alias="--op",
        choices=tuple(OPERATIONS),
    )
    p: int = setting(97, "Modulus (prime for div, div_odd; ignored by s5_*).", TASK, ge=3, le=1000)  # p² rows
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
    lr: float = setting(1e-3, "Learning rate after warmup.", OPTIM, gt=0)
    weight_decay: float = setting(1.0, "Weight decay (decoupled for adamw).", OPTIM, ge=0)
    beta1: float = setting(0.9, "Adam betas, e.g. --betas 0.9 0.98.", OPTIM, flag="--betas", ge=0, lt=1)
    beta2: float = setting(0.98, "Adam betas, e.g. --betas 0.9 0.98.", OPTIM, flag="--betas", ge=0, lt=1)
    eps: float = setting(1e-8, "Adam epsilon.", OPTIM, gt=0)
    warmup_steps: int = setting(10, "Linear warmup steps.", OPTIM, alias="--warmup", ge=0)
    last_batch: str = setting(
        "drop",
        "drop: every batch full, n-train // batch-size a pass over the data; keep: each pass ends with the "
        "rest, a shorter batch (openai/grok's loader).",
        OPTIM,
        choices=LAST_BATCHES,
    )
    batch_size: float | None = setting(
        None,
        "Batch size: a count, a fraction in (0, 1) of the training split (rounded up), or -1 (or 0) for the whole "
        "split, as openai/grok's --batchsize \\[default: min(512, ceil(n_train / 2))].",
        OPTIM,
        ge=-1,
        rule="a count, a fraction in (0, 1), or -1 for the whole training split",
    )
    weight_decay_kind: str = setting(
        "to_zero",
        "to_zero: decay toward 0; to_init: toward the initial weights (openai/grok's --weight_decay_kind; adamw).",
        OPTIM,
        choices=DECAY_KINDS,
    )
    noise_factor: float = setting(
        0.0,
        "Gaussian noise of this standard deviation added to each Adam update direction m/(√v̂+ε) before its "
        "step size lr/(1−β₁ᵗ) scales it (openai/grok's --noise_factor).",
        OPTIM,
        ge=0,
    )
    anneal_lr_steps: int = setting(
        0,
        "After warmup, a cosine from --lr to --lr/10 over this many steps, then --lr/10 (openai/grok's --anneal_lr "
        "with --anneal_lr_steps); 0: constant.",
        OPTIM,
        ge=0,
    )
    warmup_from_zero: bool = setting(
        False,
        "openai/grok's schedule: update k takes the warmup's lr of step k-1, so the first update has lr 0.",
        OPTIM,
    )
    model: str = setting(
        "transformer",
        "transformer, or mlp (embeddings of x and y concatenated, then hidden layers).",
        MODEL,
        choices=MODELS,
    )
    # the model's size is bounded by its parameter count as a whole (MAX_PARAMETERS), not field by field
    n_layers: int = setting(2, "Transformer blocks, or hidden layers of the MLP.", MODEL, ge=1, le=1024)  # modules
    d_model: int = setting(128, "Residual width (embedding width of the MLP).", MODEL, ge=1)
    n_heads: int = setting(4, "Attention heads.", MODEL, ge=1)
    d_mlp: int | None = setting(None, "Hidden width of the MLPs \\[default: 4 × d-model].", MODEL, ge=1)
    layer_norm: bool = setting(True, "LayerNorm in every block (placed by --norm-position).", MODEL)
    norm_position: str = setting(
        "pre",
        "pre: LayerNorm before attention, MLP and unembedding; post: after each residual add (openai/grok).",
        MODEL,
        choices=NORM_POSITIONS,
    )
    bias: bool = setting(True, "Biases in the attention and MLP linear layers (openai/grok has none).", MODEL)
    attention_bias: bool = setting(
        True, "With --bias, biases in the attention's maps too (Nanda et al.'s model has them in the MLP only).", MODEL
    )
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
    activation: str = setting("gelu", "gelu or relu.", MODEL, choices=tuple(ACTIVATIONS))
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
    attention_dropout: bool = setting(
        True,
        "Dropout also on the attention probabilities and output; openai/grok has it on the MLP output only.",
        MODEL,
    )
    weight_noise: float = setting(
        0.0,
        "Gaussian noise of this standard deviation added to every weight in each training forward (openai/grok's "
        "--weight_noise); not with --compile.",
        MODEL,
        ge=0,
    )
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
    grokfast_lambda: float = setting(2.0, "Grokfast amplification λ of the slow gradient.", ACCEL, ge=0)
    # the window is bounded because it keeps that many gradients of the whole model in memory
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
        "(faster on CPUs with BF16 in `grokking bench`; not measured on a GPU; it changes the numbers).",
        RUN,
        choices=PRECISIONS,
    )
    compile: bool = setting(
        False,
        "torch.compile the forward and loss of the training step (1.3x eager on a 2-core CPU in `grokking bench`; "
        "on CUDA in reduce-overhead mode, which uses CUDA graphs, not measured on a GPU); compiling takes "
        "seconds to a minute at the start, cached for later runs; numbers differ from eager in the last bits.",
        RUN,
    )
    split: str = setting(
        "permutation",
        "permutation: the table permuted by the split seed (this project's); openai: openai/grok's list of "
        "equations shuffled by np.random.RandomState(split seed), the same equations in each half as its code; "
        "nanda: Nanda et al.'s pairs shuffled by Python's random with the seed, the first int(frac·N) training.",
        TASK,
        choices=SPLITS,
    )
    label_noise: int = setting(
        0,
        "Training equations whose answer is replaced by that of a random equation (openai/grok's <op>_noisy_N); "
        "validation stays clean.",
        TASK,
        ge=0,
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
        if self.weight_decay_kind == "to_init" and self.optimizer != "adamw":
            raise GrokkingError("--weight-decay-kind to_init is openai/grok's decoupled decay: use --optimizer adamw")
        if self.weight_noise > 0 and self.compile:
            raise GrokkingError("--weight-noise perturbs the weights of the eager forward: drop --compile")


def task_vocab_size(config: RunConfig) -> int:
    """The tokens the task's sequences use: its elements, the operation token, `=` and the end token."""
    n_elements = get_operation(config.operation).n_elements(config.p)
    return Layout.of(n_elements, config.op_token, config.end_token).vocab_size


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
    """The `grokking train` option that sets field `name`: `--field-name`, or the option that sets it
    together with others (--betas for beta1)."""
    meta = RunConfig.__dataclass_fields__[name].metadata
    return meta.get("flag") or "--" + name.replace("_", "-")


def flag_alias(name: str) -> str | None:
    """The short alias of field `name`'s option, if it has one (--op for --operation)."""
    return RunConfig.__dataclass_fields__[name].metadata.get("alias")


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
    if meta["le"] is None:
        return rule
    limit = meta["le"]
    return rule + (f" and at most {limit:,}" if isinstance(limit, int) else f" and at most {limit:g}")


def _check_field(f: dataclasses.Field, value: Any, name: Callable[[str], str]) -> None:
    meta = f.metadata
    if not meta or value is None:
        return
    if meta["choices"] is not None and value not in meta["choices"]:
        noun = "operation" if f.name == "operation" and name is flag_name else name(f.name)
        raise GrokkingError(f"unknown {noun} {value!r}; choose one of {', '.join(meta['choices'])}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, int) and meta["le"] is None:  # every count must fit the 64-bit integers it becomes
        meta = {**meta, "le": MAX_INT}
    ok = math.isfinite(value)
    ok = ok and (meta["ge"] is None or value >= meta["ge"]) and (meta["gt"] is None or value > meta["gt"])
    ok = ok and (meta["le"] is None or value <= meta["le"]) and (meta["lt"] is None or value < meta["lt"])
    if not ok:
        rule = _range_rule(dict(meta), isinstance(value, int))
        raise GrokkingError(f"{name(f.name)} must be {rule} (got {value})")


def resolve(config: RunConfig) -> RunConfig:
    """Validate `config` and fill in what its defaults leave open: the batch size as a count (see
    `batch_count`) and the loss dtype (float64 for StableMax, as Prieto et al.'s code computes it;
    float32 otherwise)."""
    config.validate()
    n_train = n_train_examples(n_examples(config.operation, config.p), config.train_frac, config.split)
    if config.label_noise > n_train:
        raise GrokkingError(f"--label-noise must be at most the {n_train} training examples (got {config.label_noise})")
    loss_dtype = config.loss_dtype or ("float64" if config.loss == "stablemax" else "float32")
    return config.replace(batch_size=batch_count(config.batch_size, n_train), loss_dtype=loss_dtype)


def batch_count(hint: float | None, n_train: int) -> int:
    """The batch size of openai/grok's batch size hint over `n_train` training examples: None, the paper's
    min(512, ceil(n_train / 2)); -1 or 0, the whole split; a fraction in (0, 1), that share rounded up;
    otherwise a count."""
    if hint is None:
        return min(512, math.ceil(n_train / 2))
    if hint in (-1, 0):
        return n_train
    if 0 < hint < 1:
        return math.ceil(n_train * hint)
    if hint != int(hint) or not 1 <= hint <= n_train:
        raise GrokkingError(
            f"--batch-size must be a count from 1 to the {n_train} training examples, a fraction in (0, 1) "
            f"or -1 for all of them (got {hint:g})"
        )
    return int(hint)


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
        attention_dropout=False,
        attention_bias=False,
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
        attention_dropout=True,
        attention_bias=True,
    ),
}


def architecture(name: str) -> dict[str, Any]:
    return pick(ARCHITECTURES, name, "--arch")


PRENORM = RunConfig(preset="paper")  # the paper's hyperparameters on the pre-LN model
# ... on the paper's own model, with openai/grok's split (its equations shuffled by seed 0), its batches
# (a shorter last one a pass) and its schedule (the first update at lr 0)
PAPER = PRENORM.replace(
    **ARCHITECTURES["openai"], split="openai", split_seed=0, last_batch="keep", warmup_from_zero=True
)

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
    # Power et al. Fig. 2 (left): AdamW with weight decay 1, the intervention that generalizes from the least
    # training data within a 10⁵-step budget.
    "paper_wd": PAPER.replace(preset="paper_wd", optimizer="adamw", weight_decay=1.0, steps=100_000),
    # Nanda et al. 2023 as their transformers.py trains it: x+y mod 113, their split of 30 % of the pairs
    # (3,830), full-batch AdamW with their warmup (the first update at lr 0), 50,000 steps; one layer without
    # LayerNorm, attention without biases, ReLU MLP of width 512 with biases, tokens [x, y, =], logits over
    # all 114 tokens, their initialisation.
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
        attention_bias=False,
        logits="vocab",
        split="nanda",
        warmup_from_zero=True,
        steps=50_000,
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
    ignored = RESUMABLE_FIELDS | {"seed", "eval_every", "operation", "p"} | inert_fields(config)  # label: task, seed
    changes = [k for k in ours if k not in ignored and ours[k] != preset[k]]
    named = next(  # a whole named architecture in place of the preset's is said by its name
        (name for name, switches in ARCHITECTURES.items() if all(ours[k] == v for k, v in switches.items())), None
    )
    words = [f"arch={named}"] if named and any(k in ARCHITECTURES[named] for k in changes) else []
    words += [f"{k}={ours[k]}" for k in changes if not (words and k in ARCHITECTURES[named])]
    return ", ".join(words)


def inert_fields(config: RunConfig) -> set[str]:
    """The fields whose value changes nothing in this config, so that a label need not name them: a run dir
    written before such a field existed loads its default, which is not necessarily the preset's."""
    inert = set()
    if config.dropout == 0:
        inert.add("attention_dropout")
    if not config.bias:
        inert.add("attention_bias")
    if config.weight_decay == 0:
        inert.add("weight_decay_kind")
    return inert


# Fields that may change when a run is resumed: they do not alter the training trajectory.
RESUMABLE_FIELDS = frozenset({"steps", "device", "compile", "stop_on_grok", "checkpoint_every", "snapshot_every"})


def config_differences(old: RunConfig, new: RunConfig, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Human-readable `key: old -> new` lines for the fields that differ, leaving out those that change
    nothing in either (`inert_fields`: a run dir written before such a field existed loads its default)."""
    a, b = old.to_dict(), new.to_dict()
    ignore = ignore | (inert_fields(old) & inert_fields(new))
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]
