"""Wirings of local learners (and the backprop baseline), built by name from the settings."""

from __future__ import annotations

from fflab.config import ModelSettings, ReadoutSettings, SpikingSettings
from fflab.layers import FFDense
from fflab.layers.hebbian import HebbianFFLayer
from fflab.layers.recurrent import RecurrentLayer
from fflab.layers.spiking import SpikingFFDense
from fflab.models.backprop import BackpropNetwork
from fflab.models.feedforward import FFNetwork, LocalResult, all_but_first, predict_from_scores
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
    "predict_from_scores",
]


def learner_options(settings: ModelSettings) -> list[dict]:
    """Each layer's goodness, threshold and objective options (the learner part of a layer's settings)."""
    n = len(settings.hidden)
    thetas = settings.theta if isinstance(settings.theta, list) else [settings.theta] * n
    common = {
        "goodness": settings.goodness,
        "objective": settings.objective,
        "loss": settings.loss,
        "alpha": settings.alpha,
        "peer_weight": settings.peer_weight,
        "peer_momentum": settings.peer_momentum,
    }
    return [{**common, "theta": theta} for theta in thetas]


def dense_stack(settings: ModelSettings, input_dim: int) -> list[FFDense]:
    """The hidden layers the settings describe."""
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
        for i, options in enumerate(learner_options(settings))
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


def build_ff(
    settings: ModelSettings,
    input_dim: int,
    num_classes: int,
    readout: ReadoutSettings | None = None,
    *,
    spiking: SpikingSettings | None = None,
    **_,
) -> FFNetwork:
    """Hinton's FF network: dense learners on label-embedded (or, unsupervised, plain) inputs; with
    kind = "spiking", LIF learners trained through surrogate gradients."""
    embedding = LabelEmbedding(settings.label, num_classes, input_dim, settings.label_value)
    if settings.kind == "spiking":
        layers = spiking_stack(settings, embedding.input_dim, spiking or SpikingSettings())
    else:
        layers = dense_stack(settings, embedding.input_dim)
    head = None
    if readout is not None and readout.enabled:
        chosen = readout.layers or all_but_first(len(layers))
        head = LinearReadout(sum(settings.hidden[i] for i in chosen), num_classes, chosen)
    return FFNetwork(layers, embedding, settings.predict_layers, head)


def build_backprop(
    settings: ModelSettings, input_dim: int, num_classes: int, readout: ReadoutSettings | None = None, **_
) -> BackpropNetwork:
    """The same dense layers with a classifier head, for end-to-end backprop."""
    return BackpropNetwork(dense_stack(settings, input_dim), num_classes)


def build_recurrent(
    settings: ModelSettings,
    input_dim: int,
    num_classes: int,
    readout: ReadoutSettings | None = None,
    *,
    spiking: SpikingSettings | None = None,
    **_,
) -> RecurrentFFNetwork:
    """Hinton's recurrent FF network (Fig. 3): layers fed from below, above and themselves over time;
    with kind = "spiking-recurrent", LIF populations whose membrane leak is the damping."""
    s = spiking or SpikingSettings()
    widths = settings.hidden
    layers = [
        RecurrentLayer(
            input_dim + (settings.steps if settings.clock else 0) if i == 0 else widths[i - 1],
            widths[i + 1] if i + 1 < len(widths) else num_classes,
            width,
            wiring=settings.wiring,
            activation=settings.activation,
            inits=tuple(settings.source_init),
            top_down_sign=settings.top_down_sign,
            mix=tuple(settings.mix),
            spiking=(s.threshold, s.surrogate, s.slope) if settings.kind == "spiking-recurrent" else None,
            **options,
        )
        for i, (width, options) in enumerate(zip(widths, learner_options(settings), strict=True))
    ]
    head = None
    if readout is not None and readout.enabled:
        chosen = readout.layers or list(range(len(widths)))
        head = LinearReadout(sum(widths[i] for i in chosen), num_classes, chosen)
    return RecurrentFFNetwork(
        layers,
        input_dim,
        num_classes,
        steps=settings.steps,
        damping=settings.damping,
        window=tuple(settings.window),
        hidden_steps=settings.hidden_steps,
        clock=settings.clock,
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
) -> FFNetwork | RecurrentFFNetwork | BackpropNetwork | HebbianFFNetwork:
    """Create the network named by `settings.kind` (a registry, as in timm). Every builder takes the same
    arguments; `spiking` and `seed` (which fixes random label codes) matter only to spiking networks."""
    return MODEL_BUILDERS[settings.kind](settings, input_dim, num_classes, readout, spiking=spiking, seed=seed)
