"""Residual wiring of channel-wise competitive conv learners: DeeperForward's deep FF network (Sun et al., ICLR 2025).

Each learner is an FFConv2d with the competitive loss: its channels form one group per class and a class's score
is its group's mean activity ("mean goodness"). What a learner passes on is not its activity but the activity
group-normalised per class group (each sample's group standardised over its channels and positions: the mean, the
goodness, is taken out before the next learner sees it), joined with a shortcut where a residual block ends:

    z_0 = prepare(image)                       per-channel standardisation, then per-image layer norm
    h_i = learner_i(z_{i-1}.detach())          conv -> ReLU -> dropout (training); score_i = group means of h_i
    z_i = GroupNorm(h_i; classes)              (+ shortcut, or concatenated with it, where a block ends)

The shortcut of a block is the representation its first learner took in (the stem's, then each block's output),
average-pooled to the block's map size where a strided learner shrank it: added where the channels match,
concatenated where they do not (DeeperForward's parameter-free "addition" and "concatenation" residuals). Every
learner's input is detached and the shortcut carries no gradient, so no gradient crosses learners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fflab.models.feedforward import FFNetwork, LocalResult

JOINS = ("add", "concat")


def block_plan(n_layers: int, block_layers: int, joins: Sequence[str]) -> tuple[list[str | None], list[bool]]:
    """Per learner: how the shortcut joins its output (None: no join) and whether its output is the next shortcut.

    Learner 0 is the stem; learners 1.. form blocks of `block_layers` (0: a plain chain without shortcuts). A
    block's last learner joins the shortcut (`joins[b]` for block b) and its output becomes the next block's."""
    if block_layers == 0:
        if joins:
            raise ValueError(f"joins are for residual blocks; block_layers = 0 makes none, got {list(joins)}")
        return [None] * n_layers, [False] * n_layers
    blocks, extra = divmod(n_layers - 1, block_layers)
    if extra or blocks == 0:
        raise ValueError(
            f"{n_layers} learners are a stem and {n_layers - 1} more, which do not form blocks of {block_layers}"
        )
    if len(joins) != blocks:
        raise ValueError(f"expected one join per residual block ({blocks}), got {list(joins)}")
    bad = [j for j in joins if j not in JOINS]
    if bad:
        raise ValueError(f"unknown join {bad[0]!r}; expected one of {list(JOINS)}")
    plan: list[str | None] = [None] * n_layers
    taps = [False] * n_layers
    taps[0] = True
    for b, join in enumerate(joins):
        last = (b + 1) * block_layers
        plan[last], taps[last] = join, True
    return plan, taps


def resolve_joins(widths: Sequence[int], block_layers: int, joins: Sequence[str]) -> list[str]:
    """The joins as given, or where none are given, each block's by the rule of DeeperForward's paper: "add"
    where its last learner's channels equal the shortcut's, else "concat"."""
    if joins or block_layers == 0:
        return list(joins)
    chosen: list[str] = []
    shortcut = widths[0]
    for last in range(block_layers, len(widths), block_layers):
        chosen.append("add" if widths[last] == shortcut else "concat")
        shortcut = widths[last] if chosen[-1] == "add" else widths[last] + shortcut
    return chosen


def output_channels(widths: Sequence[int], joins: Sequence[str | None], taps: Sequence[bool]) -> list[int]:
    """Channels of what each learner passes on: its own, plus the shortcut's where it concatenates one. ValueError
    where an "add" join meets a shortcut of other channels."""
    out, shortcut = [], 0
    for i, (width, join) in enumerate(zip(widths, joins, strict=True)):
        if join == "add" and width != shortcut:
            raise ValueError(
                f"learner {i} adds a shortcut of {shortcut} channels to its {width}: an 'add' join needs equal "
                "channels ('concat' puts them side by side)"
            )
        channels = width + shortcut if join == "concat" else width
        out.append(channels)
        if taps[i]:
            shortcut = channels
    return out


def sip_range(scores: torch.Tensor, labels: torch.Tensor) -> tuple[int, int, float]:
    """DeeperForward's "signal integrating and pruning": the consecutive layers start..end (0-based, inclusive)
    whose summed class scores [N, C, L] classify `labels` best on held-out data, and that accuracy. Of equally
    good ranges, the one ending first, then starting first (the original's scan order)."""
    cumulative = torch.cat([torch.zeros_like(scores[:, :, :1]), scores.cumsum(2)], 2)
    best, choice = -1, (0, 0)
    for end in range(scores.shape[2]):
        for start in range(end + 1):
            correct = int(((cumulative[:, :, end + 1] - cumulative[:, :, start]).argmax(1) == labels).sum())
            if correct > best:
                best, choice = correct, (start, end)
    return choice[0], choice[1], best / len(labels)


class ResidualFFNetwork(FFNetwork):
    """Channel-wise competitive conv learners in a residual wiring (kind "residual-ff"); see the module doc.

    `joins[i]` says how learner i's output meets the shortcut ("add", "concat" or None), `taps[i]` whether what
    learner i passes on becomes the shortcut. `channel_mean` / `channel_std` standardise each input channel and
    `image_norm` layer-normalises each image before the first learner (DeeperForward's input pipeline).
    """

    def __init__(
        self,
        layers,
        embedding,
        joins: Sequence[str | None],
        taps: Sequence[bool],
        predict_layers: Sequence[int] | None = None,
        *,
        channel_mean: Sequence[float] = (),
        channel_std: Sequence[float] = (),
        image_norm: bool = True,
    ) -> None:
        super().__init__(layers, embedding, predict_layers)
        if not self.competitive:
            raise ValueError("a residual FF network's learners score classes by channel groups (competitive loss)")
        if len(joins) != len(layers) or len(taps) != len(layers):
            raise ValueError(f"expected a join and a tap flag per learner ({len(layers)})")
        self.joins, self.taps = list(joins), list(taps)
        self.image_norm = image_norm
        channels = layers[0].in_shape[0]
        for name, values in (("channel_mean", channel_mean), ("channel_std", channel_std)):
            if values and len(values) != channels:
                raise ValueError(f"{name}: expected one value per input channel ({channels}), got {list(values)}")
        mean = torch.tensor(list(channel_mean) or [0.0] * channels).view(1, -1, 1, 1)
        std = torch.tensor(list(channel_std) or [1.0] * channels).view(1, -1, 1, 1)
        self.register_buffer("channel_mean", mean, persistent=False)  # settings, rebuilt from the config
        self.register_buffer("channel_std", std, persistent=False)
        self.kind = "residual-ff"

    # -- the wiring -------------------------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The first learner's input: images [N, C, H, W] (or their flattened rows) standardised per channel,
        then each image as a whole (layer norm over channels and positions, no learned scale)."""
        x = x.reshape(len(x), *self.layers[0].in_shape)
        x = (x - self.channel_mean) / self.channel_std
        return F.layer_norm(x, x.shape[1:]) if self.image_norm else x

    def passed_on(self, i: int, h: torch.Tensor, shortcut: torch.Tensor | None):
        """(what learner i passes on, the shortcut after it) for its activity `h`: the activity normalised per
        class group, joined with the shortcut where learner i ends a block; neither carries a gradient."""
        layer = self.layers[i]
        z = F.group_norm(h.detach(), layer.num_classes)
        join = self.joins[i]
        if join is not None:
            s = shortcut if shortcut.shape[-2:] == z.shape[-2:] else F.adaptive_avg_pool2d(shortcut, z.shape[-2:])
            z = z + s.to(z.dtype) if join == "add" else torch.cat([z, s.to(z.dtype)], 1)
        return z, (z if self.taps[i] else shortcut)

    def run(
        self,
        z: torch.Tensor,
        layers: Sequence[int],
        visit: Callable[[int, torch.Tensor], None],
        shortcut: torch.Tensor | None = None,
        grad: Sequence[int] = (),
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run learners `layers` (consecutive) on `z` (with the shortcut live before the first of them), calling
        visit(i, h) with each one's activity; learners in `grad` keep their graph. Returns what the last passes
        on and the shortcut after it (a pipeline stage sends both up)."""
        for i in layers:
            with torch.set_grad_enabled(i in grad and torch.is_grad_enabled()):
                h = self.layers[i](z.detach())
            visit(i, h)
            z, shortcut = self.passed_on(i, h, shortcut)
        return z, shortcut

    # -- what FFNetwork's callers use -------------------------------------------------------------------------

    def activities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every learner's activity (before its group normalisation) for images `x`."""
        out: list[torch.Tensor] = []
        self.run(self.prepare(x), range(len(self.layers)), lambda i, h: out.append(h))
        return out

    def local_losses(self, x, n_pos, layers=None, labels=None) -> list[LocalResult]:
        """Each trained learner's own competitive loss on the batch `x` (every row positive; `labels` its classes).
        With `layers`, only those learn; the learners below them run without gradient, those above not at all."""
        active = list(range(len(self.layers))) if layers is None else sorted(layers)
        results: list[LocalResult] = []

        def visit(i: int, h: torch.Tensor) -> None:
            if i in active:
                loss, g = self.layers[i].local_loss(h, n_pos, labels)
                results.append(LocalResult(loss, g.detach()))

        self.run(self.prepare(x), range(max(active) + 1), visit, grad=active)
        return results

    @torch.no_grad()
    def label_scores(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Each class's score (its channel group's mean activity) in the first `depth` learners: [N, C, depth]."""
        depth = len(self.layers) if depth is None else depth
        scores: list[torch.Tensor] = []
        self.run(self.prepare(x), range(depth), lambda i, h: scores.append(self.layers[i].class_goodness(h)))
        return torch.stack(scores, 2)

    def readout_features(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("residual FF networks predict by goodness; they have no linear readout")

    @torch.no_grad()
    def select_layers(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
        """Set `predict_layers` to the consecutive learners whose summed scores classify the held-out (x, y) best
        (DeeperForward's SIP; see `sip_range`); return that held-out accuracy."""
        from fflab.batching import in_batches
        from fflab.models.feedforward import evaluating

        with evaluating(self):
            scores = in_batches(self.label_scores, x, batch_size)
        start, end, accuracy = sip_range(scores, y)
        self.predict_layers = list(range(start, end + 1))
        return accuracy
