"""Wirings of local learners (and the backprop baseline), built by name from the settings."""

from __future__ import annotations

import math

from fflab.config import ModelSettings, ReadoutSettings, SpikingSettings
from fflab.errors import ConfigError
from fflab.layers import FFDense, FFLearner
from fflab.layers.conv import FFConv2d, FFLocal2d, receptive_field_mask, require_local_size
from fflab.layers.hebbian import HebbianFFLayer
from fflab.layers.recurrent import RecurrentLayer
from fflab.layers.spiking import SpikingFFDense
from fflab.models.backprop import BackpropNetwork
from fflab.models.feedforward import FFNetwork, LocalResult, all_but_first, evaluating, predict_from_scores
from fflab.models.hebbian import HebbianFFNetwork
from fflab.models.readout import LinearReadout
from fflab.models.recurrent import RecurrentFFNetwork
from fflab.supervision import LabelEmbedding, label_codes

__all__ = [
    "BackpropNetwork",
    "FFNetwork",
    "HebbianFFNetwork",
    "LinearReadout",
    "LocalResult",
    "RecurrentFFNetwork",
    "build_model",
    "evaluating",
    "predict_from_scores",
]


def per_layer(value, n: int) -> list:
    """A setting given once for all `n` layers, or as a list with one entry per layer."""
    if not isinstance(value, list):
        return [value] * n
    if len(value) not in (1, n):
        raise ValueError(f"expected one value or one per layer ({n}), got {value}")
    return value if len(value) == n else value * n


def learner_options(settings: ModelSettings, num_classes: int = 0) -> list[dict]:
    """Each layer's goodness, threshold and objective options (the learner part of a layer's settings)."""
    n = len(settings.hidden)
    if settings.loss == "competitive":
        bad = [w for w in settings.hidden if w % num_classes]
        if bad:
            raise ConfigError(
                f"model.hidden: the competitive loss gives each of the {num_classes} classes an equal group of "
                f"units (channels), so every width must be a multiple of {num_classes}; got {settings.hidden}"
            )
    common = {
        "goodness": settings.goodness,
        "objective": settings.objective,
        "loss": settings.loss,
        "alpha": settings.alpha,
        "label_smoothing": settings.label_smoothing,
        "peer_weight": settings.peer_weight,
        "peer_momentum": settings.peer_momentum,
        "num_classes": num_classes,
    }
    return [{**common, "theta": theta} for theta in per_layer(settings.theta, n)]


def spatial_stack(
    settings: ModelSettings, in_shape: tuple[int, int, int], num_classes: int = 0
) -> list[FFConv2d | FFLocal2d]:
    """Convolutional or locally connected learners; each layer's output shape is the next one's input."""
    n = len(settings.hidden)
    kernels, strides, pools = per_layer(settings.kernel, n), per_layer(settings.stride, n), settings.pool or [1] * n
    groups = settings.groups or [1] * n
    layers: list[FFConv2d | FFLocal2d] = []
    shape = in_shape
    for i, options in enumerate(learner_options(settings, num_classes)):
        common = {
            "kernel": kernels[i],
            "stride": strides[i],
            "padding": settings.padding,
            "pool": pools[i],
            "pool_mode": settings.pool_mode,
            "batch_norm": settings.batch_norm,
            "dropout": settings.dropout,
            "scope": settings.goodness_scope,
            "activation": settings.activation,
            "input_norm": settings.input_norm,
            "init": settings.init,
            **options,
        }
        try:
            if settings.architecture == "conv":
                layer = FFConv2d(shape, settings.hidden[i], groups=groups[i], **common)
            else:
                layer = FFLocal2d(shape, settings.hidden[i], **common)
        except ValueError as err:
            raise ConfigError(f"model layer {i} (input {shape[0]}x{shape[1]}x{shape[2]}): {err}") from None
        layers.append(layer)
        shape = layer.out_shape
    return layers


def hidden_stack(
    settings: ModelSettings,
    input_dim: int,
    input_shape: tuple[int, ...] | None,
    num_classes: int = 0,
    extra_channels: int = 0,
) -> list[FFLearner]:
    """The hidden layers the settings describe: dense ones see `input_dim` values; convolutional and
    locally connected ones see images of `input_shape` (C, H, W) with `extra_channels` label planes."""
    if settings.architecture == "dense":
        return dense_stack(settings, input_dim, num_classes)
    if input_shape is None or len(input_shape) != 3:
        raise ConfigError(
            f"model.architecture = {settings.architecture!r} needs image inputs (C, H, W), got {input_shape}"
        )
    c, h, w = input_shape
    return spatial_stack(settings, (c + extra_channels, h, w), num_classes)


def dense_stack(settings: ModelSettings, input_dim: int, num_classes: int = 0) -> list[FFDense]:
    """Fully connected hidden layers."""
    widths = [input_dim, *settings.hidden]
    return [
        FFDense(
            widths[i],
            widths[i + 1],
            activation=settings.activation,
            init=settings.init,
            input_norm=settings.input_norm,
            **options,
        )
        for i, options in enumerate(learner_options(settings, num_classes))
    ]


def neuron_options(s: SpikingSettings) -> dict:
    """The LIF neuron and output-trace settings every spiking layer takes."""
    return {
        "beta": s.beta,
        "threshold": s.threshold,
        "reset": s.reset,
        "trace_kind": s.trace,
        "trace_decay": s.trace_decay,
    }


def spiking_stack(settings: ModelSettings, input_dim: int, spiking: SpikingSettings) -> list[SpikingFFDense]:
    """Spiking hidden layers (surrogate-gradient FF): the first encodes its analog input, the others take spikes."""
    widths = [input_dim, *settings.hidden]
    s = spiking
    return [
        SpikingFFDense(
            widths[i],
            widths[i + 1],
            steps=s.steps,
            encoder=s.encoder,
            gain=s.gain,
            surrogate=s.surrogate,
            slope=s.slope,
            input_norm=settings.input_norm,
            spike_input=i > 0,
            **neuron_options(s),
            **options,
        )
        for i, options in enumerate(learner_options(settings))
    ]


def readout_head(layers, chosen: list[int], num_classes: int, standardize: bool = False) -> LinearReadout:
    """A zero linear readout on the activities of `layers[i]` for i in `chosen` (the layers' out_features wide)."""
    return LinearReadout(sum(layers[i].out_features for i in chosen), num_classes, chosen, standardize)


def build_ff(
    settings: ModelSettings,
    input_dim: int,
    num_classes: int,
    readout: ReadoutSettings | None = None,
    *,
    spiking: SpikingSettings | None = None,
    input_shape: tuple[int, ...] | None = None,
    **_,
) -> FFNetwork:
    """Hinton's FF network: dense, convolutional or locally connected learners on label-embedded (or
    plain) inputs; with kind = "spiking", LIF learners trained through surrogate gradients."""
    embedding = LabelEmbedding(settings.label, num_classes, input_dim, settings.label_value, input_shape)
    if settings.kind == "spiking":
        layers = spiking_stack(settings, embedding.input_dim, spiking or SpikingSettings())
    else:
        layers = hidden_stack(settings, embedding.input_dim, input_shape, num_classes, embedding.extra_channels)
    head = None
    if readout is not None and readout.enabled:
        head = readout_head(layers, readout.layers or all_but_first(len(layers)), num_classes, readout.standardize)
    return FFNetwork(layers, embedding, settings.predict_layers, head)


def build_backprop(
    settings: ModelSettings,
    input_dim: int,
    num_classes: int,
    readout: ReadoutSettings | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    **_,
) -> BackpropNetwork:
    """The same layers with a classifier head, for end-to-end backprop."""
    return BackpropNetwork(hidden_stack(settings, input_dim, input_shape, num_classes), num_classes)


def local_source_masks(
    channels: list[int], input_shape: tuple[int, ...] | None, kernel, lateral: bool = True
) -> tuple[list[tuple[int, int, int]], list[tuple]]:
    """Each layer's map (C, H, W) and its (bottom-up, top-down, lateral) receptive-field masks for a recurrent
    net of locally connected maps: every layer is a `channels[i]` x H x W map of the input's size, and a
    unit sees a kernel x kernel field of the map below, the map above and its own map (the top layer sees
    the whole label); without `lateral`, no mask of its own map."""
    if input_shape is None or len(input_shape) != 3:
        raise ConfigError(f"model.architecture = 'local' needs images (C, H, W); this data set gives {input_shape}")
    _, h, w = input_shape
    shapes = [tuple(input_shape), *[(c, h, w) for c in channels]]
    kernels = per_layer(kernel, len(channels))
    top, masks = len(channels) - 1, []
    for i, (c, k) in enumerate(zip(channels, kernels, strict=True)):
        sources = (shapes[i], shapes[i + 2] if i < top else None, shapes[i + 1] if lateral else None)
        try:
            require_local_size(c * h * w, sum(math.prod(s) for s in sources if s), f"model.hidden: layer {i}")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        masks.append(tuple(None if s is None else receptive_field_mask(s, c, k) for s in sources))
    return shapes[1:], masks


def build_recurrent(
    settings: ModelSettings,
    input_dim: int,
    num_classes: int,
    readout: ReadoutSettings | None = None,
    *,
    spiking: SpikingSettings | None = None,
    input_shape: tuple[int, ...] | None = None,
    **_,
) -> RecurrentFFNetwork:
    """Hinton's recurrent FF network (Fig. 3): layers fed from below, above and themselves over time;
    with kind = "spiking-recurrent", LIF populations whose membrane leak is the damping; with
    architecture = "local", every source reaches a unit through a local receptive field."""
    s = spiking or SpikingSettings()
    widths, maps, masks = settings.hidden, [None] * len(settings.hidden), [None] * len(settings.hidden)
    if settings.architecture == "local":
        maps, masks = local_source_masks(settings.hidden, input_shape, settings.kernel, settings.lateral)
        widths = [math.prod(m) for m in maps]
    layers = [
        RecurrentLayer(
            input_dim + (settings.steps if settings.clock else 0) if i == 0 else widths[i - 1],
            widths[i + 1] if i + 1 < len(widths) else num_classes,
            width,
            masks=masks[i],
            map_shape=maps[i],
            wiring=settings.wiring,
            activation=settings.activation,
            inits=tuple(settings.source_init),
            top_down_sign=settings.top_down_sign,
            lateral=settings.lateral,
            mix=tuple(settings.mix),
            spiking=(s.threshold, s.surrogate, s.slope) if settings.kind == "spiking-recurrent" else None,
            **options,
        )
        for i, (width, options) in enumerate(zip(widths, learner_options(settings), strict=True))
    ]
    head = None
    if readout is not None and readout.enabled:
        head = readout_head(layers, readout.layers or list(range(len(layers))), num_classes, readout.standardize)
    return RecurrentFFNetwork(
        layers,
        input_dim,
        num_classes,
        steps=settings.steps,
        damping=settings.damping,
        window=tuple(settings.window),
        hidden_steps=settings.hidden_steps,
        clock=settings.clock,
        score=settings.score,
        readout=head,
    )


def build_hebbian(
    settings: ModelSettings,
    input_dim: int,
    num_classes: int,
    readout: ReadoutSettings | None = None,
    *,
    spiking: SpikingSettings | None = None,
    seed: int = 0,
    **_,
) -> HebbianFFNetwork:
    """Neo-Hebbian FF (arXiv 2406.16479): LIF (or analog ReLU) layers on the image and a label code."""
    s = spiking or SpikingSettings()
    codes = label_codes(s.label_code, num_classes, s.code_bits, seed)
    widths = [input_dim + codes.shape[1], *settings.hidden]
    layers = [
        HebbianFFLayer(
            widths[i],
            widths[i + 1],
            neuron=s.neuron,
            third_factor=s.third_factor,
            goodness=settings.goodness,
            scale=s.scale,
            theta=settings.theta,
            eligibility_decay=s.eligibility_decay,
            eligibility_rate=s.eligibility_rate,
            top_k=s.top_k,
            init_scale=s.init_scale,
            surrogate=s.surrogate,
            slope=s.slope,
            post_gate=s.post_gate,
            **neuron_options(s),
        )
        for i in range(len(settings.hidden))
    ]
    return HebbianFFNetwork(
        layers, codes, encoder=s.encoder, steps=s.steps, rest_steps=s.rest_steps, gain=s.gain, seed=seed
    )


MODEL_BUILDERS = {
    "ff": build_ff,
    "spiking": build_ff,
    "recurrent": build_recurrent,
    "spiking-recurrent": build_recurrent,
    "backprop": build_backprop,
    "hebbian": build_hebbian,
}


def build_model(
    settings: ModelSettings,
    input_dim: int,
    num_classes: int,
    readout: ReadoutSettings | None = None,
    spiking: SpikingSettings | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
) -> FFNetwork | RecurrentFFNetwork | BackpropNetwork | HebbianFFNetwork:
    """Create the network named by `settings.kind` (a registry, as in timm). Every builder takes the same
    arguments; `spiking` and `seed` (which fixes random label codes) matter only to spiking networks,
    `input_shape` (C, H, W) to convolutional and locally connected ones and to label channels."""
    try:
        return MODEL_BUILDERS[settings.kind](
            settings, input_dim, num_classes, readout, spiking=spiking, seed=seed, input_shape=input_shape
        )
    except ConfigError:
        raise
    except ValueError as err:  # a layer rejecting its settings for this data (widths, label sizes, ...)
        raise ConfigError(f"model ({settings.kind}, {input_dim} inputs, {num_classes} classes): {err}") from err
