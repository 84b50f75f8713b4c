"""Layer-parallel FF training over torch.distributed: pipeline, data parallel, or both.

Every learner's input is detached, so a layer needs nothing from the layers above it. That makes
two kinds of parallelism exact:

pipeline - ranks own consecutive groups of layers (stages). Stage 0 draws the batch and makes the
           positive and negative data; each stage runs its layers on what the stage below sent,
           sends its last layer's detached activity up, then updates. Nothing flows back, so stage
           k works on batch t while stage k+1 works on batch t-1. Each layer sees exactly the
           inputs it sees in single-process training, in the same order, so the result is the same.
data     - every replica of a stage takes a slice of each batch, and the replicas average each
           layer's gradient (one all-reduce per layer, started as soon as that layer's backward is
           done, so it overlaps the layers still computing). Equal to single-process training up to
           the rounding of the summed gradients.
both     - a grid of stages x replicas.

Rank r is stage r // replicas, replica r % replicas. The model is built identically on every rank
(same seed); at each epoch's end every layer's weights are broadcast from the rank that trained it,
so every rank holds the whole trained network for monitoring, checkpoints and the next epoch's
refreshed negatives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist

from fflab.config import TrainSettings
from fflab.errors import FFLabError
from fflab.models import FFNetwork, LocalResult
from fflab.training.trainer import FFTrainer, batch_bounds

PARALLEL_MODES = ("pipeline", "data", "both")


def balance_layers(costs: Sequence[float], stages: int) -> list[list[int]]:
    """Split layers 0..L-1 into `stages` consecutive non-empty groups whose largest total cost is least.

    The pipeline runs at the pace of its slowest stage, so that is the quantity to minimise.
    """
    n = len(costs)
    if not 1 <= stages <= n:
        raise FFLabError(f"cannot split {n} layers into {stages} pipeline stages (each stage needs a layer)")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    # best[k][i]: least max-stage cost splitting the first i layers into k stages; cut[k][i]: last cut.
    best = [[float("inf")] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                worst = max(best[k - 1][j], prefix[i] - prefix[j])
                if worst < best[k][i]:
                    best[k][i], cut[k][i] = worst, j
    groups, i = [], n
    for k in range(stages, 0, -1):
        j = cut[k][i]
        groups.append(list(range(j, i)))
        i = j
    return groups[::-1]


@dataclass(frozen=True)
class ParallelPlan:
    """Who does what: `stages` pipeline stages times `world_size // stages` data-parallel replicas."""

    mode: str
    world_size: int
    stages: int

    def __post_init__(self) -> None:
        if self.mode not in PARALLEL_MODES:
            raise FFLabError(f"unknown parallel mode {self.mode!r}; expected one of {list(PARALLEL_MODES)}")
        if self.world_size < 1 or self.stages < 1 or self.world_size % self.stages:
            raise FFLabError(f"{self.world_size} workers cannot form {self.stages} equal pipeline stages")
        expected = {"pipeline": self.world_size, "data": 1}.get(self.mode)
        if expected is not None and self.stages != expected:
            raise FFLabError(f"parallel mode {self.mode!r} with {self.world_size} workers has {expected} stage(s)")

    @classmethod
    def create(cls, mode: str, world_size: int, stages: int | None = None) -> ParallelPlan:
        """The plan for a mode: pipeline uses every worker as a stage, data one stage, both `stages`."""
        if mode == "both" and stages is None:
            raise FFLabError("parallel mode 'both' needs the number of pipeline stages (--stages)")
        if mode != "both" and stages is not None:
            raise FFLabError(f"--stages applies to --parallel both; {mode!r} sets the stages itself")
        if world_size < 1:
            raise FFLabError(f"parallel training needs at least 1 worker, got {world_size}")
        default = {"pipeline": world_size, "data": 1}.get(mode, stages)
        return cls(mode, world_size, stages if stages is not None else default)

    @property
    def replicas(self) -> int:
        return self.world_size // self.stages

    def stage_of(self, rank: int) -> int:
        return rank // self.replicas

    def replica_of(self, rank: int) -> int:
        return rank % self.replicas

    def rank_of(self, stage: int, replica: int) -> int:
        return stage * self.replicas + replica

    def describe(self, layer_groups: list[list[int]]) -> dict:
        return {
            "mode": self.mode,
            "world_size": self.world_size,
            "stages": self.stages,
            "replicas": self.replicas,
            "layers_per_stage": layer_groups,
        }


def shard(n: int, parts: int, index: int) -> slice:
    """Rows of part `index` when n rows are split into `parts` near-equal consecutive parts."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return slice(start, start + base + (index < extra))


class DistributedFFTrainer(FFTrainer):
    """An FFTrainer that runs one rank's share of a ParallelPlan (the process group must be initialised).

    Only rank 0 should be given progress bars and callbacks; every rank must call `fit` with the same
    data. `wait_seconds` counts the time spent blocked on other ranks, for utilisation figures.
    """

    HEADER = 8  # int64 slots: n_pos, ndim, then up to 6 dims of the activity sent between stages
    # health is checked at each epoch's end only, where every rank holds the same sums and the whole network
    # (a rank that stopped alone mid-epoch would leave the others waiting on it)
    check_every = 0

    def __init__(
        self,
        model: FFNetwork,
        settings: TrainSettings,
        plan: ParallelPlan,
        *,
        progress: bool = True,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        self.plan = plan  # before the optimisers are made (`kept_casts`)
        super().__init__(model, settings, progress=progress, image_shape=image_shape)
        self.rank = dist.get_rank()
        if dist.get_world_size() != plan.world_size:
            raise FFLabError(f"the plan is for {plan.world_size} workers but {dist.get_world_size()} joined")
        self.stage, self.replica = plan.stage_of(self.rank), plan.replica_of(self.rank)
        self.layer_groups = balance_layers([layer.forward_flops() for layer in model.layers], plan.stages)
        self.active = self.layer_groups[self.stage]
        self.owner = {i: plan.rank_of(s, 0) for s, group in enumerate(self.layer_groups) for i in group}
        # Every rank creates every group (torch.distributed requires it), in the same order.
        groups = [dist.new_group([plan.rank_of(s, r) for r in range(plan.replicas)]) for s in range(plan.stages)]
        self.replica_group = groups[self.stage]
        if plan.replicas > 1:  # replicas must not draw the same noise (e.g. spike encoding) for different rows
            torch.manual_seed(settings.seed + 1_000_003 * self.replica)
        self.wait_seconds = 0.0  # blocked on other ranks, this epoch
        self.epoch_wait_seconds = 0.0  # ... during the epoch's steps
        self.pending_sends: list = []
        self.device = next(model.parameters()).device  # NCCL moves CUDA tensors only: every message lives here

    def kept_casts(self, layer) -> dict:
        """None with data-parallel replicas: they all-reduce the weights' `.grad`, which `CastAdam` bypasses."""
        return {} if self.plan.replicas > 1 else super().kept_casts(layer)

    # -- communication ---------------------------------------------------------------------------

    def _blocking(self, what: str, fn: Callable):
        """Run a call that waits on other ranks: count the time, and turn a lost rank into a clear error."""
        start = time.perf_counter()
        try:
            result = fn()
            if self.device.type == "cuda":  # NCCL calls only queue work on the GPU: wait for it here
                torch.cuda.synchronize(self.device)
            return result
        except (RuntimeError, dist.DistError) as e:
            raise FFLabError(
                f"rank {self.rank} (stage {self.stage}, replica {self.replica}) lost contact with the other "
                f"ranks while {what}: another rank stopped (see its own error) or timed out. Cause: {e}"
            ) from e
        finally:
            self.wait_seconds += time.perf_counter() - start

    def _send_up(self, h: torch.Tensor, labels: torch.Tensor, n_pos: int) -> None:
        """Send the detached activity, the labels and the positive-row count to the next stage.

        Asynchronous, so this stage goes on with its update; at most two batches are in flight.
        """
        if h.dim() > self.HEADER - 2:
            raise FFLabError(f"activities of {h.dim()} dimensions are too many to send between stages")
        header = torch.zeros(self.HEADER, dtype=torch.long)
        header[0], header[1] = n_pos, h.dim()
        header[2 : 2 + h.dim()] = torch.tensor(h.shape)
        header = header.to(self.device)
        dest = self.plan.rank_of(self.stage + 1, self.replica)
        # float32 whatever the precision: the receiver's buffer is float32 (bfloat16 activity is cast up)
        tensors = [header, h.detach().float().contiguous(), labels.contiguous()]
        self._blocking("sending to the next stage", lambda: [w.wait() for w in self.pending_sends[:-3]])
        self.pending_sends = self.pending_sends[-3:] + [dist.isend(t, dest) for t in tensors]

    def _receive(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        source = self.plan.rank_of(self.stage - 1, self.replica)
        header = torch.empty(self.HEADER, dtype=torch.long, device=self.device)

        def receive():
            dist.recv(header, source)
            n_pos, ndim = int(header[0]), int(header[1])
            h = torch.empty(header[2 : 2 + ndim].tolist(), device=self.device)
            dist.recv(h, source)
            labels = torch.empty(n_pos, dtype=torch.long, device=self.device)
            dist.recv(labels, source)
            return h, labels, n_pos

        return self._blocking("waiting for the stage below", receive)

    def _finish_sends(self) -> None:
        self._blocking("sending to the next stage", lambda: [w.wait() for w in self.pending_sends])
        self.pending_sends = []

    # -- data ------------------------------------------------------------------------------------

    def label_scores_for(
        self, x: torch.Tensor, idx: torch.Tensor | None, y: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Data parallel: each replica scores its slice of the batch and they share the scores, so
        every replica draws the whole batch's negatives exactly as a single process would."""
        refreshed = self.settings.hard_scores == "refreshed"
        if idx is None or self.plan.replicas == 1 or not self.pairs.needs_scores or refreshed:
            return super().label_scores_for(x, idx, y)  # idx None: outside training, on rank 0 alone
        rows = shard(len(x), self.plan.replicas, self.replica)
        local = super().label_scores_for(x[rows], None)
        return self._gather_rows(local, len(x), "sharing label scores", self.replica_group)

    def _gather_rows(self, local: torch.Tensor, n: int, what: str, group=None) -> torch.Tensor:
        """The n rows [n, K] that the members of `group` (default: every rank) computed a shard each of."""
        members = dist.get_world_size(group)
        width = -(-n // members)  # all_gather needs equal sizes: pad every shard to the largest
        padded = local.new_zeros(width, local.shape[1])
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(members)]
        self._blocking(what, lambda: dist.all_gather(parts, padded, group=group))
        return torch.cat([p[: len(range(n)[shard(n, members, k)])] for k, p in enumerate(parts)])

    def batch_inputs(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Only the first stage reads (and augments) the batch; the others receive what it made."""
        return super().batch_inputs(x, idx) if self.stage == 0 else x[:0]

    def _my_rows(self, both: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """This replica's slice of the positive rows and the matching negative rows."""
        n = len(y)
        if self.plan.replicas == 1:
            return both, y, n
        rows = shard(n, self.plan.replicas, self.replica)
        pos = both[:n][rows]
        parts = [pos, both[n:][rows]] if len(both) > n else [pos]
        return torch.cat(parts), y[rows], len(pos)

    # -- the step --------------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> list[LocalResult | None]:
        """This rank's layers' update on batch (x, y); the stages above stage 0 take theirs from below."""
        if self.stage == 0:
            both, labels, n_pos = self._my_rows(self.make_pairs(x, y, idx=idx), y)
        else:
            both, labels, n_pos = self._receive()
        h = both
        results = []
        share = n_pos / len(y)
        batch_activity = partial(self._batch_activity, share=share) if self.plan.replicas > 1 else None
        for i in self.active:
            h = self.model.layers[i](h.detach())
            loss, g = self.model.layers[i].local_loss(h, n_pos, labels, batch_activity)
            results.append(LocalResult(loss, g.detach()))
        if self.stage + 1 < self.plan.stages:
            self._send_up(h, labels, n_pos)
        if self.plan.replicas > 1:
            # Weighted by this replica's share of the batch, losses (so gradients) and statistics summed
            # over the replicas are the whole batch's.
            results = [LocalResult(r.loss * share, r.goodness * share) for r in results]
        self.update(results)
        return self.by_slot(results)

    def _batch_activity(self, activity: torch.Tensor, share: float) -> torch.Tensor:
        """The whole batch's mean activity per unit, from each replica's mean over its own rows (for peer
        normalisation, whose running means must stay equal on every replica)."""
        total = (activity.float() * share).to(self.device)
        self._blocking("sharing mean activities", lambda: dist.all_reduce(total, group=self.replica_group))
        return total.to(activity.device)

    def backward(self, results: list[LocalResult]) -> None:
        """Data parallel: each layer's backward, then an all-reduce (sum) of its gradient, started at once
        so that the later layers' backward overlaps it."""
        if self.plan.replicas == 1:
            return super().backward(results)
        works = []
        for i, r in zip(self.active, results, strict=True):
            r.loss.backward()
            grads = [p.grad for p in self.model.layers[i].parameters() if p.grad is not None]
            flat = torch.cat([g.flatten() for g in grads])
            works.append((grads, flat, dist.all_reduce(flat, group=self.replica_group, async_op=True)))
        for grads, flat, work in works:
            self._blocking("averaging gradients", work.wait)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    # -- epochs ----------------------------------------------------------------------------------

    def fit(self, x, y, on_epoch=None, done: int = 0):
        n, b, r = len(x), self.settings.batch_size, self.plan.replicas
        smallest = min(stop - start for start, stop in batch_bounds(n, b))
        if smallest < r:
            raise FFLabError(
                f"{n} training samples in batches of {b} give a batch of {smallest} rows, too few for "
                f"{r} data-parallel replicas to have a row each; change train.batch_size or data.train_subset"
            )
        return super().fit(x, y, on_epoch, done)

    def start_epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        """A refreshed score bank is computed by every rank, a shard each (all hold the whole network
        after the last epoch), and gathered: no rank idles while one scores the whole training set."""
        self.wait_seconds = 0.0
        if self.refresh_due(epoch):
            rows = shard(len(x), self.plan.world_size, self.rank)
            local = self.score_bank_for(x[rows]) if rows.stop > rows.start else x.new_zeros(0, self.model.num_classes)
            self.score_bank = self._gather_rows(local, len(x), "sharing refreshed label scores")

    def combine_epoch_sums(self, sums: torch.Tensor, trained: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and goodness sums of every layer, from the ranks that trained it (replicas' shares added)."""
        self._finish_sends()
        both = torch.cat([sums.flatten(), trained.double()]).to(self.device)
        self._blocking("combining epoch statistics", lambda: dist.all_reduce(both))
        both = both.cpu()
        self.epoch_wait_seconds = self.wait_seconds
        k = sums.numel()
        return both[:k].view_as(sums), both[k:] > 0

    def end_epoch(self, stats) -> None:
        """Give every rank the whole network (each layer from the rank that trained it) and record the
        share of the epoch each rank spent computing rather than waiting."""
        for i, layer in enumerate(self.model.layers):
            for t in layer.state_dict().values():  # parameters and the buffers that change (not fixed masks)
                self._blocking("sharing trained layers", lambda t=t, i=i: dist.broadcast(t, self.owner[i]))
                torch.autograd.graph.increment_version(t)  # a collective write moves no version counter
        busy = torch.zeros(self.plan.world_size, dtype=torch.float64)
        busy[self.rank] = max(0.0, 1.0 - self.epoch_wait_seconds / stats.train_seconds)
        busy = busy.to(self.device)
        self._blocking("combining utilisation", lambda: dist.all_reduce(busy))
        stats.extra["worker_busy"] = [round(b, 3) for b in busy.tolist()]
