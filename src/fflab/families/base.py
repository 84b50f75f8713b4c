"""What a model family is: the one place that knows a kind of network from settings to analysis.

Core code (the run pipeline, evaluation, checkpoints, analysis, the CLI, devices, parallel training) holds a
`Family` and asks it; it never tests a kind by name or a model by class. This module imports no torch, so the
config schema can ask a family to validate settings without loading it; a family imports its models and
trainers inside the methods that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fflab.errors import ConfigError

if TYPE_CHECKING:
    from fflab.config import Config

# A rule of `Family.ignored_settings`: (keys, why). The keys may not move from their defaults under this family.
IgnoredRule = tuple[list[str], str]


def require_settings(needs: dict[str, tuple[Any, Any]], why: str) -> None:
    """ConfigError for the first setting of `needs` ({key: (value, wanted)}) not at its wanted value, saying `why`
    the family needs it."""
    for key, (value, wanted) in needs.items():
        if value != wanted:
            raise ConfigError(f"{key}: {why}; set {key} = {wanted!r}, got {value!r}")


def analog_export_refusal(name: str, fmt: str) -> str | None:
    """`Family.export_refusal` of a family of analog units: ONNX writes them, NIR is for spiking neurons."""
    return None if fmt == "onnx" else f"a {name!r} network is analog: export it with --format onnx"


def spiking_export_refusal(name: str, fmt: str) -> str | None:
    """`Family.export_refusal` of a family of spiking neurons: NIR writes them, ONNX has no operators for them."""
    if fmt == "nir":
        return None
    return (
        f"a {name!r} network computes with spiking neurons over time steps (and, for a rate code, random input "
        "spikes), which ONNX has no operators for: export it with --format nir"
    )


class Family:
    """A kind of FF network (`model.kind`). Subclass it, set `name`, and override what differs.

    `settings`, when set, is a dataclass of the family's own options, read from the config table named after
    the family (`[<name>]`, hyphens as underscores); other families' configs may not hold that table.
    `moved_keys` maps keys of an older config layout to their place in that table: a run saved under the old
    layout still loads, and a new config that uses one gets an error naming where it went.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `fflab settings` (model.kind)
    settings: ClassVar[type | None] = None
    architectures: ClassVar[tuple[str, ...]] = ("dense",)  # the model.architecture values it builds
    runs_on_gpu: ClassVar[bool] = False  # training and prediction place their tensors on a CUDA device
    trains_in_parallel: ClassVar[bool] = False  # layer-parallel training (pipeline / data parallel)
    learns_locally: ClassVar[bool] = True  # trained on the FF loss and negatives (not end to end)
    competitive: ClassVar[bool] = False  # takes the channel-wise competitive loss
    online_readout: ClassVar[bool] = True  # a readout can learn alongside, ranking hard negatives
    readout_always_online: ClassVar[bool] = False  # its readout learns alongside the layers whatever the settings
    layer_schedules: ClassVar[bool] = False  # train.schedule "greedy" and train.layer_epochs windows
    prediction_methods: ClassVar[tuple[str, ...]] = ("goodness", "readout")  # what eval.predict may name
    moved_keys: ClassVar[dict[str, str]] = {}

    # -- settings ---------------------------------------------------------------------------------

    @classmethod
    def table(cls) -> str:
        """The config table of the family's own settings."""
        return cls.name.replace("-", "_")

    def options(self, cfg: Config) -> Any:
        """The family's own settings in `cfg` (their defaults where a Config was made without its table)."""
        return cfg.family_settings if cfg.family_settings is not None else self.settings()

    def validate(self, cfg: Config) -> None:
        """Cross-field checks of `cfg` that only this family needs; raise ConfigError naming the key."""

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        """Settings this family never reads, with why: moving one from its default is an error (the run would
        silently ignore it). Only checked for new configs, not for a run's stored one."""
        return []

    def primary_method(self, cfg: Config) -> str:
        """The prediction method whose accuracy a run reports as its test (or validation) accuracy."""
        return cfg.eval.predict

    def total_epochs(self, cfg: Config) -> int:
        """Epochs the schedule runs in all (a greedy schedule runs train.epochs per layer)."""
        return cfg.train.epochs

    def describe_schedule(self, cfg: Config) -> str:
        """A few words on the training schedule for the run's first log line ("" when it has none)."""
        return ""

    # -- building and training (these import torch) ---------------------------------------------------

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        """The untrained network (an nn.Module whose forward(x) returns per-class scores). Every family defines it."""
        raise NotImplementedError(f"model family {self.name!r} ({type(self).__name__}) does not define build()")

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        """The fflab.training.trainer.Trainer that fits `model`. Every family defines it."""
        raise NotImplementedError(f"model family {self.name!r} ({type(self).__name__}) does not define make_trainer()")

    def make_parallel_trainer(self, model, cfg: Config, plan, *, progress: bool = True, image_shape=None):
        """The trainer of one worker's share of a layer-parallel run under `plan` (families that train in parallel)."""
        from fflab.training.parallel import DistributedFFTrainer

        return DistributedFFTrainer(model, cfg.train, plan, progress=progress, image_shape=image_shape)

    def check_data(self, cfg: Config, ds) -> None:
        """Checks of the loaded data against the settings (a new run only); FFLabError on a mismatch."""

    def monitor_method(self, model) -> str | None:
        """The prediction method per-epoch monitoring scores (None: none before a readout is trained)."""
        return "goodness"

    def has_readout(self, model) -> bool:
        """Whether the run fits a linear readout on the frozen network after training."""
        return getattr(model, "readout", None) is not None

    def write_plots(self, cfg: Config, model, trainer, ds, plots: Path) -> None:
        """Plots of this family beside the training curves every run gets."""

    def check_parallel(self, cfg: Config, plan) -> None:
        """FFLabError unless this family can train `cfg` layer-parallel under `plan`."""
        from fflab.errors import FFLabError

        if not self.trains_in_parallel:
            raise FFLabError(f"parallel training runs feed-forward FF networks; {self.name!r} trains in one process")

    # -- analysis --------------------------------------------------------------------------------

    def latents(self, model, x):
        """The held-out representation `fflab analyze` compares: every layer's activity for a neutral label."""
        from fflab.batching import in_batches

        return in_batches(model.latents, x)

    def spike_trains(self, model, x) -> tuple[list, list] | None:
        """(each layer's input train or None where analog, each layer's output spikes), [T, N, .]; None for
        networks that do not spike."""
        return None

    def export_refusal(self, network, fmt: str) -> str | None:
        """Why `fflab export --format FMT` ("onnx" or "nir") cannot write `network`, one of this family's (None: it
        can, though the exporter may still refuse some of its settings)."""
        return f"fflab does not write a {self.name!r} network as {fmt.upper()} yet"

    def inference_cost(self, model, trains, static_input: bool = True) -> dict:
        """Cost of one input's forward pass: multiply-accumulates, and for spiking runs spikes and synaptic ops."""
        return {"macs_per_sample": model.forward_flops() // 2}
