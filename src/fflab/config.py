"""Experiment settings: TOML files validated into typed dataclasses.

A config has the sections [data], [model], [train], [eval], [readout] and [spiking]. Every key is checked: an
unknown key or a value of the wrong type raises ConfigError naming the key and what was
expected. `apply_overrides` applies `section.key=value` strings (the CLI's --set).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fflab.data.registry import get_spec
from fflab.errors import ConfigError
from fflab.families import family_names, get_family
from fflab.schema import bounded, choice, choices_of, described
from fflab.vocab import (
    ACTIVATIONS,
    CONV_INPUT_NORMS,
    ENCODERS,
    GOODNESS,
    HARD_SCORE_SOURCES,
    INITS,
    INPUT_NORMS,
    LABEL_MODES,
    LAYER_ORDERS,
    LOSSES,
    LR_SCHEDULES,
    NEGATIVE_MODES,
    NEURON_RESETS,
    OBJECTIVES,
    OPTIMIZERS,
    PADDINGS,
    POOLS,
    PRECISION_SETTINGS,
    PREDICT_METHODS,
    READOUT_OPTIMIZERS,
    SCHEDULES,
    SCOPES,
    SURROGATES,
    TRACES,
)

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class DataSettings:
    name: str = described("digits", "data set name (`fflab data list` shows them)")
    path: str = described("", 'folder of MNIST-format files when name = "idx"')
    train_subset: int = bounded(0, 0, doc="use only the first N training samples (0: all)")
    test_subset: int = bounded(0, 0, doc="use only the first N test samples (0: all)")
    validation: int = bounded(
        0,
        0,
        doc="hold out the last N training samples (after train_subset); the run monitors and reports them "
        "in place of the test set, which it never reads (0: train on all, report the test set)",
    )
    mean: float = described(
        0.0, "images: every value x becomes (x - mean) / std, as torchvision's Normalize((mean,), (std,)) makes it"
    )
    std: float = bounded(1.0, 1e-12, doc="images: see data.mean (MNIST's usual pair: 0.1307 and 0.3081)")
    # Sequence data derived from MNIST (name = "seq-mnist" or "moving-mnist"):
    seq_mode: str = choice("rows", ["rows", "chunks"], doc="seq-mnist: row by row, or chunks of chunk_size pixels")
    chunk_size: int = bounded(28, 1, doc="seq-mnist chunks: pixels per step")
    permute_seed: int = bounded(-1, -1, doc="seq-mnist: fixed pixel permutation from this seed (-1: none)")
    frames: int = bounded(20, 1, doc="moving-mnist: frames per sequence")
    canvas: int = bounded(64, 28, doc="moving-mnist: canvas side in pixels")
    digits: int = bounded(1, 1, 2, doc="moving-mnist: digits per sequence (the label is the first digit)")
    train_sequences: int = bounded(60000, 1, doc="moving-mnist: training sequences")
    test_sequences: int = bounded(10000, 1, doc="moving-mnist: test sequences")
    sequence_seed: int = described(0, "moving-mnist: seed of the generated sequences")


@dataclass
class ModelSettings:
    kind: str = choice(
        "ff",
        family_names,
        doc="the model family (fflab.families): "
        + "; ".join(f"{name}: {get_family(name).summary}" for name in family_names()),
    )
    hidden: list[int] = described([500, 500], "units, or channels of conv/local layers")
    architecture: str = choice(
        "dense", ["dense", "conv", "local"], doc="layer type: fully connected, convolutional, locally connected"
    )
    activation: str = choice("relu", ACTIVATIONS)
    init: str = choice("kaiming", INITS)
    input_norm: str = choice("rms", tuple(dict.fromkeys((*INPUT_NORMS, *CONV_INPUT_NORMS))))
    goodness: str = choice("mean_squares", GOODNESS)
    # Convolutional and locally connected layers (architecture = "conv" or "local"):
    kernel: int | list[int] = described(
        3, 'receptive-field side (odd with padding "same"), for all layers or one per layer'
    )
    stride: int | list[int] = described(1, "step between neighbouring fields, for all layers or one per layer")
    padding: str = choice(
        "same", PADDINGS, doc="same: a field centred on every stride-th pixel; valid: fields wholly inside the map"
    )
    pool: list[int] = described([], "pooling factor after each layer; empty: none")
    pool_mode: str = choice("max", POOLS, doc="pooling after a layer: the maximum or the mean of each window")
    groups: list[int] = described([], "conv channel groups per layer; empty: 1")
    batch_norm: bool = described(False, "batch-normalise each layer's output (channel-wise competitive FF)")
    dropout: float = bounded(
        0.0, 0.0, 0.9, doc="conv/local layers: zero this fraction of each layer's activity while training (0: off)"
    )
    goodness_scope: str = choice("sample", SCOPES, doc="goodness of the whole map, of each position or of each channel")
    objective: str = choice("standard", OBJECTIVES)
    theta: float | list[float] = described(2.0, "one threshold for all layers, or one per layer")
    peer_weight: float = bounded(
        0.0, 0.0, doc="Hinton's peer normalisation, his lambdamean (0.03 in his code), scaled like the goodness; 0: off"
    )
    peer_momentum: float = bounded(0.9, 0.0, 1.0, doc="momentum of the running mean activity per unit")
    loss: str = choice(
        "softplus",
        LOSSES,
        doc="softplus: Hinton's threshold loss; symba: pairwise margin; competitive: softmax over class channel groups",
    )
    alpha: float = bounded(4.0, 0.0, doc="sharpness of the symba loss; logit scale of the competitive loss")
    label_smoothing: float = bounded(
        0.0, 0.0, 0.5, doc="competitive loss: cross-entropy against one-hot targets smoothed by this much"
    )
    label: str = choice("overlay", LABEL_MODES)
    label_value: float = bounded(1.0, 0.0, doc="value of the written label (pattern: the grating's amplitude)")
    label_at_input_max: bool = described(
        False,
        "overlay and concat: write the label at the largest value of the batch being labelled (x.max(), as "
        "mpezeshki's and Nicola97's overlay does) instead of model.label_value",
    )
    predict_layers: list[int] = described([], "0-based (ff, spiking); empty: all but the first")


@dataclass
class SpikingSettings:
    """Spiking neurons and spike encoding (LIF learners of the spiking, spiking-recurrent and hebbian kinds)."""

    beta: float = bounded(0.9, 0.0, 1.0, doc="membrane decay per step")
    threshold: float = bounded(1.0, 1e-6, doc="firing threshold")
    reset: str = choice("subtract", NEURON_RESETS, doc="after a spike: subtract the threshold, or set to zero")
    surrogate: str = choice("fast_sigmoid", SURROGATES, doc="the spike's gradient stand-in (surrogate training)")
    slope: float = bounded(25.0, 0.0, doc="surrogate sharpness")
    encoder: str = choice("rate", ENCODERS)
    steps: int = bounded(24, 1, doc="simulation steps per sample")
    gain: float = bounded(1.0, 0.0, doc="rate code: spike probability = gain * pixel")
    trace: str = choice("leaky", TRACES, doc="the output trace goodness is computed from")
    trace_decay: float = bounded(0.9, 0.0, 1.0, doc="leaky trace: decay per step")


@dataclass
class TrainSettings:
    epochs: int = bounded(10, 1, doc="passes over the training set")
    batch_size: int = bounded(100, 1, doc="training images per update")
    optimizer: str = choice("adam", OPTIMIZERS)
    lr: float = bounded(1e-3, 0.0, doc="learning rate at the start of the lr_decay schedule")
    lr_decay: str = choice("none", LR_SCHEDULES, doc="learning-rate schedule")
    momentum: float = bounded(0.9, 0.0, 1.0, doc="sgd momentum")
    weight_decay: float = bounded(0.0, 0.0, doc="decoupled for adamw; added to the gradient for adam and sgd")
    negatives: str = choice(
        "random",
        NEGATIVE_MODES,
        doc="permuted_with_repeats: the batch's labels in a random order, so about 1 in C negatives carries its "
        "image's own label (a bug of mpezeshki's and Nicola97's code, kept to reproduce them; never a default)",
    )
    fixed_negatives: bool = described(
        False,
        "ff, spiking: draw each training image's negative label once, before the first epoch, and keep it for "
        "every epoch and layer (mpezeshki's x_neg); random or permuted_with_repeats negatives",
    )
    hard_scores: str = choice("first_layer", HARD_SCORE_SOURCES, doc="what ranks wrong labels")
    refresh_every: int = bounded(1, 1, doc="epochs between refreshes of the 'refreshed' score bank")
    hybrid_blur_steps: int = bounded(6, 1, doc="blurs of the random bit image that makes a hybrid mask")
    schedule: str = choice("simultaneous", SCHEDULES, doc="all layers per batch, or one at a time")
    layer_order: str = choice(
        "together",
        LAYER_ORDERS,
        doc="ff, spiking: together: every layer's loss from one forward pass, then every layer steps; in_turn: each "
        "layer steps before the layer above sees its output, recomputed with the new weights (CheneyX2000's loop)",
    )
    shuffle: bool = described(True, "a fresh random order of the training set every epoch (false: its stored order)")
    layer_epochs: list[int] = described(
        [],
        "simultaneous schedule: layer k learns during the first layer_epochs[k] epochs only, then stays frozen "
        "(CwComp's interleaved layer training: early layers stop first); empty: every layer, every epoch",
    )
    hard_temperature: float = bounded(1.0, 1e-6, doc="softmax temperature for sampling hard negatives")
    augment_crop: int = bounded(0, 0, doc="random crops after zero-padding images by this many pixels (0: off)")
    augment_flip: bool = described(False, "random horizontal flips of training images")
    augment_mask: float = bounded(0.0, 0.0, 0.9, doc="zero this random fraction of each training image's values")
    seed: int = described(0, "the same seed gives the same run, bit for bit, on the same CPU")
    threads: int = bounded(0, 0, doc="torch threads (0: all cores)")
    device: str = described(
        "auto", '"auto" (a CUDA GPU when torch sees one and model.kind can use it), "cpu", "cuda[:N]"'
    )
    precision: str = choice(
        "float32",
        PRECISION_SETTINGS,
        doc="bfloat16: matrix products and convolutions in bfloat16, the rest float32; auto: bfloat16 where the "
        "device multiplies it faster than float32, else float32 (a run's config.toml records the choice)",
    )
    monitor_size: int = bounded(2000, 0, doc="per-epoch accuracy on this many train and test samples")
    monitor_every: int = bounded(1, 1, doc="monitor every this many epochs (and always after the last)")
    checkpoint_every: int = bounded(
        1, 0, doc="save the training state every this many epochs, for `fflab resume RUN` (0: never)"
    )
    tensorboard: bool = described(
        False,
        "also log each epoch's per-layer losses, accuracies and goodness histograms to RUN/tensorboard/ (needs "
        "`pip install 'fflab[tensorboard]'`)",
    )


@dataclass
class ReadoutSettings:
    """A linear softmax classifier on the normalised activities of frozen FF layers (Hinton 2022, 3.2)."""

    enabled: bool = described(False, "train the readout")
    layers: list[int] = described([], "0-based; empty: all but the first (recurrent: all)")
    online: bool = described(
        False,
        "ff, spiking: also learn one step on every training batch, alongside the layers, from a neutral-label pass "
        "(loeweX's jointly trained classifier); a readout ranking hard negatives, and a recurrent network's, always do",
    )
    epochs: int = bounded(
        10,
        0,
        doc="passes of the readout over the frozen network's training-set features (0: none, keep what it "
        "learned online)",
    )
    batch_size: int = bounded(100, 1, doc="images per readout update")
    optimizer: str = choice("adam", READOUT_OPTIMIZERS, doc="the readout's optimiser, online and after training")
    momentum: float = bounded(0.9, 0.0, 1.0, doc="sgd momentum of the readout")
    lr: float = bounded(1e-3, 0.0, doc="the readout's learning rate")
    lr_decay: str = choice(
        "none", LR_SCHEDULES, doc="schedule of the online readout's learning rate over training (train.lr_decay's)"
    )
    weight_decay: float = bounded(0.0, 0.0, doc="the readout's L2 penalty, added to its gradient")
    bias: bool = described(True, "the readout's linear map has a bias")
    standardize: bool = described(False, "scale each feature to zero mean, unit variance over the training set first")


@dataclass
class EvalSettings:
    batch_size: int = bounded(1000, 1, doc="images scored at once (test, validation or training set)")
    train_accuracy: bool = described(True, "also score the whole training set at the end")
    predict: str = choice(
        "goodness",
        PREDICT_METHODS,
        doc="the method test_accuracy reports (goodness+readout: recurrent networks with a readout)",
    )


@dataclass
class Config:
    name: str = described("", "names the default run directory, runs/<name>-<time>; default: the config file's name")
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    readout: ReadoutSettings = field(default_factory=ReadoutSettings)
    spiking: SpikingSettings = field(default_factory=SpikingSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    # The model family's own settings (Family.settings), from the config table named after the family.
    family_settings: Any = field(default=None, metadata={"family_table": True})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        own = d.pop("family_settings")
        if own is not None:
            d[get_family(self.model.kind).table()] = own
        return d

    def with_train(self, **changes: Any) -> Config:
        """This config with the given [train] settings changed (unvalidated: for values already checked)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))


def _type_name(tp: Any) -> str:
    if isinstance(tp, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, _type_name(item))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type `tp`; ints are accepted where floats are expected."""
    if isinstance(tp, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return value


def _check_field(f: dataclasses.Field, value: Any, key: str) -> None:
    meta, options = f.metadata, choices_of(f)
    if options is not None and value not in options:
        raise ConfigError(f"{key}: expected one of {list(options)}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and value < low:
        raise ConfigError(f"{key}: expected a value >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: expected a value <= {high}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("family_table")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' in {where}{hint}; known keys: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        tp, key = hints[name], prefix + name
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a [{key}] table, got {value!r}")
            values[name] = _build(tp, value, key + ".")
        else:
            values[name] = _coerce(value, tp, key)
            _check_field(fields[name], values[name], key)
    return cls(**values)


def config_from_dict(data: dict[str, Any], *, stored: bool = False) -> Config:
    """Validate a nested dict (as read from TOML) into a Config (`stored`: see `validate`)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    model = data.get("model")
    kind = model.get("kind", ModelSettings.kind) if isinstance(model, dict) else ModelSettings.kind
    family = get_family(kind) if isinstance(kind, str) else None
    own_table = family.table() if family is not None and family.settings is not None else None
    _move_old_layout(data, own_table, stored)
    owned = {}
    for name in family_names():
        other = get_family(name)
        if other.settings is not None and other.table() in data:
            if other.table() != own_table:
                raise ConfigError(
                    f"[{other.table()}] holds the settings of model.kind {name!r}; this config's kind {kind!r} "
                    "never reads them"
                )
            owned = data.pop(other.table())
            if not isinstance(owned, dict):
                raise ConfigError(f"{own_table}: expected a [{own_table}] table, got {owned!r}")
    cfg = _build(Config, data, "")
    if own_table is not None:
        cfg.family_settings = _build(family.settings, owned, own_table + ".")
    return validate(cfg, stored=stored)


def _move_old_layout(data: dict[str, Any], own_table: str | None, stored: bool) -> None:
    """Keys of the older layout (e.g. model.steps, now recurrent.steps): a stored config's move into the family's
    table (or are dropped, where another family owns them: older runs saved every key); a new config's are an
    error naming the new key."""
    moved = {old: new for name in family_names() for old, new in get_family(name).moved_keys.items()}
    for old, new in moved.items():
        section, key = old.split(".")
        if not isinstance(data.get(section), dict) or key not in data[section]:
            continue
        table, new_key = new.split(".")
        if not stored:
            raise ConfigError(
                f"{old} has moved: write it as {new_key} in the [{table}] table (--set {new}=...), which the kinds "
                f"that read it own"
            )
        value = data[section].pop(key)
        if table == own_table:
            data.setdefault(table, {})[new_key] = value


def validate(cfg: Config, *, stored: bool = False) -> Config:
    """Checks that span several fields: the core's here, each family's by its `validate`. A `stored` config is a
    run's own, trained earlier (a checkpoint, a run to resume): the checks for settings that are merely ignored
    are skipped, so runs saved before they existed stay readable."""
    m, t, d = cfg.model, cfg.train, cfg.data
    family = get_family(m.kind)
    if d.name in ("idx", "image-folder") and not d.path:
        holds = "the folder of its IDX files" if d.name == "idx" else "its folder (holding train/ and test/)"
        raise ConfigError(f"data.path: the {d.name!r} data set needs {holds} in data.path")
    if d.validation and d.test_subset:
        raise ConfigError("data.test_subset: a run with data.validation never reads the test set; drop one of them")
    if d.validation and d.train_subset and d.validation >= d.train_subset:
        raise ConfigError(
            f"data.validation = {d.validation} leaves no training samples of data.train_subset = {d.train_subset}"
        )
    if not m.hidden or any(h < 1 for h in m.hidden):
        raise ConfigError(f"model.hidden: expected a non-empty list of positive layer widths, got {m.hidden}")
    for key, layers in (("model.predict_layers", m.predict_layers), ("readout.layers", cfg.readout.layers)):
        bad = [i for i in layers if not 0 <= i < len(m.hidden)]
        if bad:
            raise ConfigError(f"{key}: layer indices {bad} out of range 0..{len(m.hidden) - 1} (0-based)")
    if isinstance(m.theta, list) and len(m.theta) != len(m.hidden):
        raise ConfigError(f"model.theta: expected one threshold per layer ({len(m.hidden)}), got {len(m.theta)}")
    if t.layer_epochs and not family.layer_schedules:
        raise ConfigError(
            "train.layer_epochs: per-layer training windows are for feed-forward FF networks (model.kind 'ff' "
            f"or 'spiking') under the simultaneous schedule; got kind {m.kind!r}, schedule {t.schedule!r}"
        )
    if t.hard_scores == "readout" and t.negatives in ("hard", "hardest"):
        if not family.online_readout:
            raise ConfigError(f"train.hard_scores = 'readout': model.kind {m.kind!r} has no online readout")
        if not cfg.readout.enabled:
            raise ConfigError("train.hard_scores = 'readout' needs readout.enabled = true")
    _validate_spatial(cfg, family)
    check_device_setting(t.device, family, d.name)
    competitive = m.loss == "competitive"
    if m.label_smoothing and not competitive:
        raise ConfigError(f"model.label_smoothing is for model.loss = 'competitive', not {m.loss!r}")
    if family.learns_locally and (
        competitive != (t.negatives == "none") or (competitive and (m.label != "none" or not family.competitive))
    ):
        raise ConfigError(
            "model.loss = 'competitive' (channel-wise competitive FF) needs no negatives and no label input: it "
            "goes with train.negatives = 'none', model.label = 'none' and model.kind = 'ff'; got "
            f"loss = {m.loss!r}, negatives = {t.negatives!r}, label = {m.label!r}, kind = {m.kind!r}"
        )
    _validate_training_options(cfg, family)
    family.validate(cfg)
    if cfg.eval.predict in ("readout", "goodness+readout") and not cfg.readout.enabled and family.learns_locally:
        raise ConfigError(f"eval.predict = {cfg.eval.predict!r} needs readout.enabled = true")
    if cfg.eval.predict == "goodness+readout" and cfg.eval.predict not in family.prediction_methods:
        raise ConfigError(
            "eval.predict = 'goodness+readout' combines a recurrent network's goodness with its linear readout: "
            f"it needs model.kind = 'recurrent' or 'spiking-recurrent', got {m.kind!r}"
        )
    if not stored:
        _reject_ignored_settings(cfg, family)
    return cfg


def _validate_training_options(cfg: Config, family) -> None:
    """Checks of the label value, negatives, layer order and online readout options."""
    m, t, r = cfg.model, cfg.train, cfg.readout
    if m.label_at_input_max and m.label not in ("overlay", "concat"):
        raise ConfigError(
            f"model.label_at_input_max writes the label at the batch's largest value: it needs model.label = "
            f"'overlay' or 'concat', got {m.label!r}"
        )
    if t.fixed_negatives and t.negatives not in ("random", "permuted_with_repeats"):
        raise ConfigError(
            "train.fixed_negatives draws each image's negative label once: it needs train.negatives = 'random' or "
            f"'permuted_with_repeats' (hard negatives follow the model as it learns), got {t.negatives!r}"
        )
    online = (
        r.online or family.readout_always_online or (t.negatives in ("hard", "hardest") and t.hard_scores == "readout")
    )
    if r.enabled and r.epochs == 0 and (not online or r.standardize):
        raise ConfigError(
            "readout.epochs = 0 keeps the readout as it learned during training: it needs readout.online = true (or "
            "a readout that ranks hard negatives, or a recurrent network's) and readout.standardize = false"
        )
    if r.lr_decay != "none" and not (r.enabled and online):
        raise ConfigError(
            "readout.lr_decay schedules a readout that learns during training: it needs readout.enabled and "
            "readout.online (or a readout that ranks hard negatives, or a recurrent network's)"
        )
    if r.online and not r.enabled:
        raise ConfigError("readout.online needs readout.enabled = true")


def check_device_setting(device: str, family, data_name: str) -> None:
    """Config-time checks of train.device: its spelling, and that the run can use a GPU if it names one."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda") and not gpu_capable(family, data_name):
        gpu_families = [name for name in family_names() if get_family(name).runs_on_gpu]
        raise ConfigError(
            f"train.device = {device!r}: model.kind {family.name!r} on {data_name!r} runs on the CPU only so far "
            f"(CUDA: kinds {', '.join(gpu_families)} on image data); set train.device = 'cpu' or 'auto'"
        )


def gpu_capable(family, data_name: str) -> bool:
    """Whether a run of `family` on data set `data_name` can use a GPU: sequence data sets are rendered batch by
    batch on the CPU, and only some families place their tensors on a device."""
    return family.runs_on_gpu and get_spec(data_name).kind != "derived"


def setting_keys(section: type, name: str) -> list[str]:
    """Every key of a settings section, as "name.key"."""
    return [f"{name}.{f.name}" for f in dataclasses.fields(section)]


def _reject_ignored_settings(cfg: Config, family) -> None:
    """A setting moved from its default where this model, loss and data set never read it is an error: the
    run would silently ignore it. Settings of other model kinds stay accepted where a baseline keeps them
    (e.g. `--set model.kind=backprop` on an FF config, an analog twin of a spiking config)."""
    m, t, d = cfg.model, cfg.train, cfg.data
    rules = [
        (
            m.loss == "competitive",
            ["model.peer_weight", "model.objective", "model.goodness_scope"],
            "the competitive loss scores whole groups of channels against each other, so it has no peer "
            "normalisation, objective or goodness scope",
        ),
        *((True, keys, why) for keys, why in family.ignored_settings(cfg)),
        (
            t.negatives != "hard",
            ["train.hard_temperature"],
            f"the temperature samples 'hard' wrong labels; negatives = {t.negatives!r} draws none that way",
        ),
        (
            t.negatives not in ("hard", "hardest") or t.hard_scores != "refreshed",
            ["train.refresh_every"],
            "only the 'refreshed' bank of scores for hard negatives (train.hard_scores) is refreshed",
        ),
        (
            t.negatives != "hybrid",
            ["train.hybrid_blur_steps"],
            "the blur shapes the masks of 'hybrid' negatives (unsupervised FF)",
        ),
        (
            family.learns_locally and t.optimizer != "sgd",
            ["train.momentum"],
            f"{t.optimizer!r} keeps its own moment estimates; train.momentum is SGD's",
        ),
        (
            cfg.readout.optimizer != "sgd",
            ["readout.momentum"],
            "readout.momentum is the readout's SGD momentum",
        ),
        (
            family.learns_locally and not family.layer_schedules,
            ["train.fixed_negatives", "train.layer_order", "readout.online"],
            f"these shape the feed-forward trainer (kinds ff and spiking); model.kind {m.kind!r} "
            + ("always trains its readout online" if family.readout_always_online else "never reads them"),
        ),
        (
            m.architecture == "dense",
            [
                "model.kernel",
                "model.stride",
                "model.padding",
                "model.pool",
                "model.pool_mode",
                "model.batch_norm",
                "model.goodness_scope",
            ],
            f"these shape convolutional and locally connected layers, which a dense {m.kind} network does not have",
        ),
        (d.name != "seq-mnist", ["data.seq_mode", "data.chunk_size", "data.permute_seed"], "seq-mnist settings"),
        (
            d.name != "moving-mnist",
            [
                "data.frames",
                "data.canvas",
                "data.digits",
                "data.train_sequences",
                "data.test_sequences",
                "data.sequence_seed",
            ],
            "moving-mnist settings",
        ),
        (
            get_spec(d.name).kind == "derived",
            ["data.path"],
            f"{d.name} is built from the MNIST files in the data directory (--data-dir or $FFLAB_DATA)",
        ),
        (
            get_spec(d.name).kind == "derived",
            ["data.mean", "data.std"],
            f"data.mean and data.std rescale images; {d.name} holds sequences",
        ),
    ]
    defaults = Config()
    for applies, keys, why in rules:
        if not applies:
            continue
        changed = [key for key in keys if _setting(cfg, key) != _setting(defaults, key)]
        if changed:
            them = "it at its default" if len(changed) == 1 else "them at their defaults"
            raise ConfigError(f"{', '.join(changed)}: {why}; leave {them}")


def _setting(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _validate_spatial(cfg: Config, family) -> None:
    """Checks of convolutional / locally connected settings and of image augmentation."""
    m, t, n = cfg.model, cfg.train, len(cfg.model.hidden)
    spatial = m.architecture != "dense"
    if m.architecture not in family.architectures:
        raise ConfigError(
            f"model.architecture = {m.architecture!r}: model.kind {m.kind!r} builds "
            f"{' or '.join(repr(a) for a in family.architectures)} layers"
        )
    if not spatial and (m.label in ("channels", "pattern") or m.input_norm == "group"):
        raise ConfigError(
            "model.label = 'channels' or 'pattern' and model.input_norm = 'group' are for images in "
            "feed-forward nets: set model.architecture to 'conv' or 'local' with model.kind 'ff' or 'backprop'"
        )
    if m.dropout and not spatial:
        raise ConfigError(
            "model.dropout is for convolutional and locally connected layers (architecture 'conv' or 'local')"
        )
    kernels = m.kernel if isinstance(m.kernel, list) else [m.kernel]
    odd = m.padding == "same"  # a centred field needs a middle pixel
    if len(kernels) not in (1, n) or any(k < 1 or (odd and k % 2 == 0) for k in kernels):
        size = "an odd size (padding 'same')" if odd else "a positive size"
        raise ConfigError(f"model.kernel: expected {size}, or one per layer ({n}), got {m.kernel}")
    strides = m.stride if isinstance(m.stride, list) else [m.stride]
    if len(strides) not in (1, n) or any(s < 1 for s in strides):
        raise ConfigError(f"model.stride: expected a positive integer, or one per layer ({n}), got {m.stride}")
    for key, values in (("model.pool", m.pool), ("model.groups", m.groups)):
        if values and (len(values) != n or any(v < 1 for v in values)):
            raise ConfigError(f"{key}: expected one positive integer per layer ({n}) or an empty list, got {values}")
    if m.groups and m.architecture != "conv":
        raise ConfigError("model.groups: channel groups are for convolutional layers (architecture = 'conv')")
    if (t.augment_crop or t.augment_flip or t.augment_mask) and get_spec(cfg.data.name).kind == "derived":
        raise ConfigError(
            f"train.augment_crop / augment_flip / augment_mask: image augmentation needs image data; "
            f"{cfg.data.name!r} holds sequences"
        )


def load_config(path: str | Path, overrides: typing.Sequence[str] = (), *, stored: bool = False) -> Config:
    """Read a TOML config file, apply `section.key=value` overrides, validate (`stored`: see `validate`)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    data.setdefault("name", path.stem)
    return config_from_dict(apply_overrides(data, overrides), stored=stored)


def parse_value(text: str) -> Any:
    """A --set value as TOML (numbers, booleans, lists, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def overrides_tag(overrides: typing.Sequence[str]) -> str:
    """A file-name suffix naming `overrides` ("-train.lr_0.01-..."; "" for none), for results files."""
    return "".join("-" + item.replace("=", "_") for item in overrides)


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b=value` applied."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. train.lr=0.01), got {item!r}")
        *sections, leaf = key.split(".")
        node = data
        for s in sections:
            node = node.setdefault(s, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {s!r} is not a section")
        node[leaf] = parse_value(raw.strip())
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _field_note(f: dataclasses.Field) -> str:
    """What a field accepts, from its metadata: choices, bounds and doc."""
    meta, options = f.metadata, choices_of(f)
    parts = []
    if options is not None:
        parts.append("one of " + ", ".join(options))
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        parts.append(f"{low} to {high}")
    elif low is not None:
        parts.append(f">= {low}")
    elif high is not None:
        parts.append(f"<= {high}")
    if meta.get("doc"):
        parts.append(meta["doc"])
    return "; ".join(parts)


def _toml_lines(obj: Any, annotate: bool) -> list[str]:
    lines = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) or f.metadata.get("family_table"):
            continue
        line = f"{f.name} = {_toml_value(value)}"
        note = _field_note(f) if annotate else ""
        lines.append(f"{line}  # {note}" if note else line)
    return lines


def to_toml(cfg: Config, *, annotate: bool = False) -> str:
    """The config as TOML text that load_config reads back to an equal Config; `annotate` adds a comment
    to each key saying what it accepts (`fflab settings`)."""
    lines = _toml_lines(cfg, annotate)
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            table = get_family(cfg.model.kind).table() if f.metadata.get("family_table") else f.name
            lines += ["", f"[{table}]"] + _toml_lines(section, annotate)
    return "\n".join(lines) + "\n"
