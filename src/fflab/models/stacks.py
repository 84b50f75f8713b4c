"""Stacks of local learners built from the model settings: the parts every family's builder shares."""

from __future__ import annotations

import math

from fflab.config import ModelSettings, SpikingSettings
from fflab.errors import ConfigError
from fflab.layers import FFDense, FFLearner
from fflab.layers.conv import FFConv2d, FFLocal2d, receptive_field_mask, require_local_size
from fflab.layers.spiking import SpikingFFDense
from fflab.models.readout import LinearReadout


def per_layer(value, n: int) -> list:
    """A setting given once for all `n` layers, or as a list with one entry per layer."""
    if not isinstance(value, list):
        return [value] * n
    if len(value) not in (1, n):
        raise ValueError(f"expected one value or one per layer ({n}), got {value}")
    return value if len(value) == n else value * n


def learner_options(settings: ModelSettings, num_classes: int = 0, channel_groups: bool = True) -> list[dict]:
    """Each layer's goodness, threshold and objective options (the learner part of a layer's settings).
    `channel_groups`: the competitive loss scores each class by its own group of units (False: by other means, so
    the widths need not split into one group per class)."""
    n = len(settings.hidden)
    if settings.loss == "competitive" and channel_groups:
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


def readout_head(
    layers, chosen: list[int], num_classes: int, standardize: bool = False, bias: bool = True
) -> LinearReadout:
    """A zero linear readout on the activities of `layers[i]` for i in `chosen` (the layers' out_features wide)."""
    return LinearReadout(sum(layers[i].out_features for i in chosen), num_classes, chosen, standardize, bias)


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
