import pytest

from grokking.config import PRESETS, RunConfig, preset_config, preset_overrides, resolve
from grokking.errors import GrokkingError


@pytest.mark.parametrize("name", ["paper_late", "paper_wd"])
def test_paper_presets_hold_the_papers_values(name):
    c = resolve(PRESETS[name])
    assert (c.operation, c.p, c.train_frac) == ("div", 97, 0.5)
    assert (c.n_layers, c.d_model, c.n_heads, c.dropout) == (2, 128, 4, 0.0)
    assert (c.lr, c.beta1, c.beta2, c.eps, c.warmup_steps) == (1e-3, 0.9, 0.98, 1e-8, 10)
    assert c.batch_size == min(512, 4656 // 2) == 512


def test_paper_late_is_adam_without_decay_for_a_million_steps():
    c = PRESETS["paper_late"]
    assert (c.optimizer, c.weight_decay, c.steps) == ("adam", 0.0, 1_000_000)


def test_paper_wd_is_adamw_with_decay_one():
    c = PRESETS["paper_wd"]
    assert (c.optimizer, c.weight_decay, c.steps) == ("adamw", 1.0, 100_000)


def test_quick_stops_on_grok():
    assert PRESETS["quick"].stop_on_grok


def test_json_round_trip(tiny):
    assert RunConfig.from_dict(tiny.to_dict()) == tiny


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, "unknown config keys"),
        ({"p": "97"}, "should be of type int"),
        ({"stop_on_grok": 1}, "should be of type bool"),
        ({"train_frac": 1.0}, "strictly between 0 and 1"),
        ({"steps": 0}, "config: steps must be a positive"),  # the key of the JSON, not a flag
        ({"d_model": 30, "n_heads": 4}, "divisible by --n-heads"),
        ({"optimizer": "sgd"}, "adam, adamw"),
        ({"device": "tpu"}, "auto, cpu, cuda, mps"),
    ],
)
def test_from_dict_validates(tiny, change, message):
    with pytest.raises(GrokkingError, match=message):
        RunConfig.from_dict({**tiny.to_dict(), **change})


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(GrokkingError, match="paper_late, paper_wd, nanda_add, quick"):
        preset_config("paper")


def test_batch_size_larger_than_train_set_is_refused(tiny):
    with pytest.raises(GrokkingError, match="--batch-size"):
        resolve(tiny.replace(batch_size=1000))


def test_openai_vocabulary_is_refused_for_a_task_with_more_tokens():
    openai = RunConfig(operation="add", vocab="openai", end_token=True, logits="vocab")
    openai.replace(p=236).validate()  # 236 numbers, the operation, `=` and eos: 239 tokens
    with pytest.raises(GrokkingError, match="needs 240 tokens, more than openai/grok's 239: use --vocab task"):
        openai.replace(p=237).validate()


def test_research_values_are_allowed_and_only_the_domain_is_enforced(tiny):
    """Hyperparameters need only be finite and in their domain: a researcher may try odd values."""
    odd = tiny.replace(weight_decay=1000.0, lr=50.0, eps=2.0, grokfast_lambda=1e9, warmup_steps=10**12)
    odd.validate()
    for change, message in [
        ({"lr": 0.0}, "--lr must be positive"),
        ({"weight_decay": -1.0}, "--weight-decay must be at least 0"),
        ({"beta1": 1.0}, r"--betas must be in \[0, 1\)"),
        ({"lr": float("inf")}, "--lr must be positive"),
    ]:
        with pytest.raises(GrokkingError, match=message):
            tiny.replace(**change).validate()


def test_resources_stay_bounded(tiny):
    with pytest.raises(GrokkingError, match="parameters"):
        tiny.replace(d_model=8192, n_heads=1, n_layers=2).validate()
    with pytest.raises(GrokkingError, match="--n-layers must be"):
        tiny.replace(d_model=1, n_heads=1, n_layers=10**6).validate()


def test_batch_size_takes_openai_groks_hints():
    """grok/data.py calculate_batchsize: 0 (here: unset) min(512, ceil(n/2)); -1 all; a fraction, rounded up."""
    tiny = RunConfig(p=11)  # 110 equations, 55 training ones
    assert [resolve(tiny.replace(batch_size=hint)).batch_size for hint in (None, -1, 0, 0.25, 7)] == [28, 55, 55, 14, 7]
    assert resolve(RunConfig()).batch_size == 512
    with pytest.raises(GrokkingError, match="a count from 1 to the 55 training examples"):
        resolve(tiny.replace(batch_size=56))


def test_a_label_names_only_departures_that_change_something():
    """A run dir written before a switch existed loads its default; where the switch does nothing
    (attention biases without biases, attention dropout without dropout) its label does not name it."""
    older = resolve(PRESETS["paper_wd"].replace(attention_bias=True, attention_dropout=True))
    assert preset_overrides(older) == ""
    assert preset_overrides(older.replace(dropout=0.1)) == "dropout=0.1, attention_dropout=True"
