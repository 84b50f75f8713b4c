"""A training run end to end: config in, run directory out.

The run directory holds config.toml (resolved), inputs.json (where its data came from: fflab.training.inputs),
metrics.jsonl (one line per epoch), summary.json, the model (model.safetensors + model.json) and plots/*.png;
while the run is in progress, also its training state (resume.pt), from which `fflab resume` continues a
stopped run. A run whose training diverges (fflab.training.health) stops with DivergedError, its last healthy
state kept.

A run reads top to bottom: `_setup` (threads, device, precision, data, model, trainer), `_restore` (a resumed
run's saved state) or `_claim_run_dir` (a new one's directory), `_fit` (training with per-epoch monitoring and
checkpoints), `_finalize` (readout, evaluation, plots, summary). What the model family does differently is the
family's (fflab.families); what a layer-parallel worker does differently is its `Role`'s.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from fflab.analysis.plots import plot_training_curves
from fflab.board import run_board
from fflab.checkpoint import (
    SETTINGS,
    TRAINING_STATE,
    load_training_state,
    save_checkpoint,
    save_training_state,
    upgrade_saved_state,
)
from fflab.config import Config, load_config, to_toml
from fflab.devices import dataset_to, resolve_device
from fflab.errors import DivergedError, FFLabError
from fflab.families import Family, get_family
from fflab.io import flush_to_disk, folder_lock, open_append, write_json_atomic, write_text_atomic, write_text_new
from fflab.models import build_model
from fflab.perf import compute_precision, set_threads, settle_precision
from fflab.training import cast_adam
from fflab.training.data import evaluation_split, held_out_scores, load_for_config, rows
from fflab.training.evaluate import evaluate
from fflab.training.inputs import record_inputs, reuse_inputs
from fflab.training.launch import (
    DEFAULT_TIMEOUT,
    join_group,
    leave_group,
    local_rank,
    run_local_workers,
    threads_per_worker,
    torchrun_world,
)
from fflab.training.parallel import ParallelPlan
from fflab.training.readout import train_readout
from fflab.training.trainer import steps_with_cast_adam

Log = Callable[[str], None]


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    """runs/<config name>-<start time>, with -2, -3, ... after it when a run started in the same second has it."""
    base = Path(root) / f"{cfg.name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, k = base, 1
    while True:
        try:
            run_dir.mkdir(parents=True)  # made here, so two runs started at once cannot both take the name
            return run_dir
        except FileExistsError:
            k += 1
            run_dir = base.with_name(f"{base.name}-{k}")


RUN_TAKEN = "already holds a run (finished, running, or stopped before saving its state)"


def _prepare_run_dir(run_dir: Path) -> None:
    """Refuse a directory that holds another run before any work is done; create it (and plots/) otherwise."""
    if (run_dir / TRAINING_STATE).exists():
        raise FFLabError(
            f"{run_dir} holds an unfinished run: continue it with `fflab resume {run_dir}`, or choose another --out"
        )
    if any((run_dir / name).exists() for name in ("config.toml", SETTINGS, "summary.json")):
        raise FFLabError(f"{run_dir} {RUN_TAKEN}; choose another --out or remove it")
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)


def _claim_run_dir(run_dir: Path, cfg: Config) -> None:
    """Make `run_dir` this run's by creating its config.toml exclusively: of two runs started on one
    directory at once, one gets it and the other stops here rather than writing over the first."""
    try:
        write_text_new(run_dir / "config.toml", to_toml(cfg))
    except FileExistsError:
        raise FFLabError(f"{run_dir} {RUN_TAKEN}; choose another --out or remove it") from None


def _completed_epochs(run_dir: Path, done: int) -> list[dict]:
    """The metrics of a stopped run's first `done` epochs, with metrics.jsonl cut back to them (an epoch
    whose line was written after the last saved state runs again). A torn last line (the run stopped while
    writing it) is such an epoch's, since each epoch's line is written before its state is saved."""
    path = run_dir / "metrics.jsonl"
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise FFLabError(f"{path}: cannot read the metrics of the epochs done ({e})") from None
    rows = []
    for k, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k < len(lines) - 1:
                raise FFLabError(f"{path}: line {k + 1} is not JSON ({e})") from None
    kept = [row for row in rows if row.get("epoch", 0) <= done]
    if len(kept) != done:
        raise FFLabError(f"{path} holds {len(kept)} of the {done} epochs the saved training state has done")
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))
    return kept


RESUME_SETTINGS = ("train.lr", "train.epochs")  # what `fflab resume --set` may change: nothing that was built


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The config of the stopped run in `run_dir` (its config.toml) with `overrides` ("train.lr=0.001") applied:
    only RESUME_SETTINGS may change, since the model, its data and its optimisers are already built."""
    run_dir = Path(run_dir)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUME_SETTINGS:
            raise FFLabError(
                f"--set {key}: a resumed run keeps the settings it was built with; only "
                f"{' and '.join(RESUME_SETTINGS)} may change (to change {key}, start a new run with `fflab train`)"
            )
    return load_config(run_dir / "config.toml", overrides, stored=True)


def _resumable(cfg: Config) -> dict:
    return {"train.lr": cfg.train.lr, "train.epochs": cfg.train.epochs}


def _fmt(values) -> str:
    return " ".join("-" if v is None else f"{v:.4f}" for v in values)


class Role:
    """How this process takes part in a run: alone (this class), or as a worker of a layer-parallel run."""

    writes = True  # monitors, evaluates and writes the run directory
    plan: ParallelPlan | None = None

    def settle_precision(self, setting: str, device: torch.device) -> tuple[str, str | None]:
        """The precision the run computes in ("auto" settled), and a note for the log."""
        return settle_precision(setting, device)

    def make_trainer(self, family: Family, model, cfg: Config, progress: bool, image_shape):
        return family.make_trainer(model, cfg, progress=progress, image_shape=image_shape)

    def checkpoint_every(self, cfg: Config) -> int:
        return cfg.train.checkpoint_every

    def describe(self) -> str:
        return ""

    def summary(self, trainer, history: list[dict]) -> dict:
        return {}


@dataclass
class ParallelRole(Role):
    """A worker of a layer-parallel run (torch.distributed initialised): every worker trains its share; rank 0
    alone monitors, evaluates and writes the run directory. Parallel runs save no training state."""

    plan: ParallelPlan

    @property
    def writes(self) -> bool:
        return dist.get_rank() == 0

    def settle_precision(self, setting: str, device: torch.device) -> tuple[str, str | None]:
        """Rank 0 settles "auto"; every worker computes in the precision it chose."""
        chosen, note = settle_precision(setting, device) if self.writes else (setting, None)
        shared = [chosen]
        dist.broadcast_object_list(shared, src=0)
        return shared[0], note

    def make_trainer(self, family: Family, model, cfg: Config, progress: bool, image_shape):
        return family.make_parallel_trainer(model, cfg, self.plan, progress=progress, image_shape=image_shape)

    def checkpoint_every(self, cfg: Config) -> int:
        return 0

    def describe(self) -> str:
        return f", {self.plan.mode}-parallel on {self.plan.world_size} workers"

    def summary(self, trainer, history: list[dict]) -> dict:
        busy = [h["worker_busy"] for h in history]
        return {
            "parallel": {
                **self.plan.describe(trainer.layer_groups),
                "worker_busy": [round(sum(b) / len(busy), 3) for b in zip(*busy, strict=True)],
            }
        }


@dataclass
class Run:
    """What the stages of one run share."""

    cfg: Config
    run_dir: Path
    family: Family
    role: Role
    log: Log
    progress: bool
    threads: int
    device: torch.device
    ds: object = None
    model: torch.nn.Module = None
    trainer: object = None
    precision: contextlib.AbstractContextManager = None
    precision_note: str | None = None
    wall_start: float = field(default_factory=time.perf_counter)
    done: int = 0  # epochs completed before this process started (a resumed run)
    resumes: list[int] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)  # settings changed on resuming (RESUME_SETTINGS)
    saved_epoch: int = 0  # the epoch of the training state in the run directory (0: none)
    wall_before: float = 0.0
    monitor_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    @property
    def total_epochs(self) -> int:
        return self.family.total_epochs(self.cfg)

    @property
    def held_out(self) -> str:
        return evaluation_split(self.cfg)


def train_run(
    cfg: Config,
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    progress: bool = True,
    log: Log = print,
    parallel: ParallelPlan | None = None,
    threads: int | None = None,
    resume: bool = False,
) -> dict:
    """Train and evaluate the configured network; write everything to `run_dir`; return the summary.

    With `resume`, continue the stopped run in `run_dir` (`cfg` is its config.toml, or `resume_config`'s) from
    its last saved training state: the result is the one the run would have had without stopping. Without
    `data_dir` it reads the data from where the run recorded (inputs.json). One process at a time works in a
    run directory: a second `fflab train` or `fflab resume` on it stops with an error.

    With a `parallel` plan this is one worker of a layer-parallel run (torch.distributed initialised):
    every worker trains its share, and rank 0 alone monitors, evaluates and writes the run directory
    (the other workers return an empty summary). `threads` overrides the config's torch threads for this
    process (a parallel run's share of the cores) without changing the config it saves.
    """
    run_dir = Path(run_dir)
    if resume and parallel is not None:
        raise FFLabError("layer-parallel runs save no training state, so they cannot be resumed")
    role = Role() if parallel is None else ParallelRole(parallel)
    options = {"data_dir": data_dir, "progress": progress, "log": log, "role": role, "threads": threads}
    if not role.writes:
        return _train(cfg, run_dir, None, **options)  # a worker that writes nothing
    with _working_in(run_dir, new=not resume):
        saved = load_training_state(run_dir) if resume else None
        return _train(cfg, run_dir, saved, **options)


@contextlib.contextmanager
def _working_in(run_dir: Path, *, new: bool) -> Iterator[None]:
    """Hold `run_dir` for this process, or stop if another one holds it; a `new` run's directory is made
    (to hold it) and then checked to hold no other run."""
    if new:
        run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(folder_lock(run_dir))
        except FileNotFoundError:  # train_run(resume=True) on a missing directory (the CLI checks first)
            raise FFLabError(f"{run_dir}: no such run directory") from None
        except BlockingIOError:
            raise FFLabError(
                f"{run_dir} is in use: another fflab process is training in it (fflab train or fflab resume); "
                "wait for it to end or stop it"
            ) from None
        if new:
            _prepare_run_dir(run_dir)
        yield


def _train(
    cfg: Config,
    run_dir: Path,
    saved: dict | None,
    *,
    data_dir: str | None,
    progress: bool,
    log: Log,
    role: Role,
    threads: int | None,
) -> dict:
    """train_run's work: from scratch, or from the `saved` training state of a stopped run."""
    data = reuse_inputs(run_dir, cfg, data_dir) if saved is not None else (cfg, data_dir)  # as it read before
    run = _setup(cfg, run_dir, data, progress, log, role, threads, resumed=saved is not None)
    if not role.writes:
        with run.precision:
            run.trainer.fit(run.ds.train_x, run.ds.train_y)
        return {}
    if saved is None:
        _claim_run_dir(run_dir, run.cfg)
    else:
        _restore(run, saved)
    record_inputs(run_dir, *data)
    _announce(run)
    try:
        _fit(run)
    except DivergedError as e:
        raise _how_to_go_on(run, e) from None
    return _finalize(run)


def _how_to_go_on(run: Run, err: DivergedError) -> DivergedError:
    """`err` with what is kept and how to go on: from the last healthy state, with a lower learning rate."""
    lr = run.cfg.train.lr
    lower = f"train.lr={lr / 10:.3g}"
    if run.saved_epoch:
        state = run.run_dir / TRAINING_STATE
        then = (
            f"the training state after epoch {run.saved_epoch} is kept in {state}: go on from it with a lower "
            f"learning rate, e.g. `fflab resume {run.run_dir} --set {lower}` (train.lr = {lr:g} now)"
        )
    else:
        why = (
            "no epoch ended healthy"
            if run.role.checkpoint_every(run.cfg)
            else "this run saves no training state (train.checkpoint_every = 0, or layer-parallel training)"
        )
        then = (
            f"{why}, so there is no state to go on from: train again with a lower learning rate than "
            f"train.lr = {lr:g}, e.g. `--set {lower}`, into a new run directory"
        )
    return DivergedError(f"{err}; {then}", epoch=err.epoch, layer=err.layer, quantity=err.quantity, value=err.value)


def _setup(
    cfg: Config,
    run_dir: Path,
    data: tuple[Config, str | None],
    progress: bool,
    log: Log,
    role: Role,
    threads: int | None,
    *,
    resumed: bool,
) -> Run:
    """Threads, device and precision; then the data (`data`: the config and data directory to load it with),
    the model and its trainer."""
    family = get_family(cfg.model.kind)
    threads = set_threads(cfg.train.threads if threads is None else threads)
    device = resolve_device(cfg, local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and implicit CUDA allocations use the current device
    chosen, precision_note = role.settle_precision(cfg.train.precision, device)
    # the run's config.toml records the precision that ran, so `fflab eval` and `fflab resume` reuse it
    cfg = cfg.with_train(precision=chosen)
    run = Run(cfg, run_dir, family, role, log, progress and role.writes, threads, device)
    torch.manual_seed(cfg.train.seed)
    run.ds = ds = dataset_to(load_for_config(*data, run.progress), device)
    if not resumed:  # a run started before a data check existed keeps going as it began
        family.check_data(cfg, ds)
    run.model = build_model(cfg, ds.input_dim, ds.num_classes, input_shape=ds.input_shape).to(device)
    run.precision = compute_precision(cfg.train.precision, device)  # training, monitoring, readout, evaluation
    run.trainer = role.make_trainer(family, run.model, cfg, run.progress, ds.input_shape)
    run.precision_note = precision_note
    return run


def _announce(run: Run) -> None:
    """The run's first log lines: what trains on what, where, and in which precision."""
    cfg, ds, device = run.cfg, run.ds, run.device
    schedule = run.family.describe_schedule(cfg)
    threads = f"{run.threads} thread{'s' if run.threads != 1 else ''}"
    where = threads if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"
    epochs = f"{run.total_epochs} epoch{'s' if run.total_epochs != 1 else ''}"
    run.log(
        f"fflab: {cfg.name or 'run'} ({cfg.model.kind}) on {ds.name} ({len(ds.train_x)} train / "
        f"{len(ds.test_x)} {run.held_out}), layers {cfg.model.hidden}, {epochs}"
        f"{', ' + schedule if schedule else ''}, {where}{run.role.describe()} -> {run.run_dir}"
        + (f", resumed after epoch {run.done}" if run.done else "")
    )
    if run.precision_note:
        run.log(run.precision_note)
    if _casts_unfused(run):
        run.log(
            "note: CastAdam's kernel could not be built here (no working C compiler `cc`, or no writable cache "
            "folder), so the bfloat16 dense layers cast their weights at every step and torch's Adam steps them: "
            "the same training, a few per cent slower on wide layers"
        )
    m = cfg.train.monitor_size
    if 0 < m < len(ds.test_x) and run.family.monitor_method(run.model):
        run.log(
            f"the accuracies on epoch lines score the first {m:,} train and {run.held_out} images "
            f"(train.monitor_size); the final {run.held_out} accuracy scores all {len(ds.test_x):,}"
        )


def _casts_unfused(run: Run) -> bool:
    """Whether this run would step dense weights with CastAdam, but its kernel cannot be built here."""
    trainer, layers = run.trainer, getattr(run.model, "layers", [])
    casts = [trainer.kept_casts(layer) for layer in layers] if hasattr(trainer, "kept_casts") else []
    return any(steps_with_cast_adam(run.cfg.train, c) for c in casts) and cast_adam.kernel() is None


def _restore(run: Run, saved: dict) -> None:
    """Continue a stopped run: its weights, its trainer's state, and the record of the epochs it has done."""
    state_path = run.run_dir / TRAINING_STATE
    upgraded = upgrade_saved_state(run.model, saved["model"])
    if upgraded:  # the optimisers' moments still have the old layout's shapes
        raise FFLabError(
            f"{state_path} was saved by an older fflab, whose weights of {', '.join(upgraded)} had another layout "
            "(tiled products saved before 2026-12-05, or dense ones from before tiling): the run "
            "cannot continue from it; start it again"
        )
    try:
        run.model.load_state_dict(saved["model"])
        run.trainer.load_state_dict(saved["trainer"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise FFLabError(f"{state_path} does not fit the run's config.toml ({e})") from None
    run.done, run.wall_before, run.monitor_seconds = saved["epoch"], saved["wall_seconds"], saved["monitor_seconds"]
    run.saved_epoch = run.done
    run.resumes = [*saved["resumes"], run.done]
    run.changes = list(saved.get("changes", []))
    # settings changed from here on (`fflab resume --set`), compared with those the state was saved under
    written = _resumable(load_config(run.run_dir / "config.toml", stored=True))
    before, now = saved.get("settings", written), _resumable(run.cfg)
    if before != now:
        if now["train.epochs"] != before["train.epochs"]:
            _check_new_epochs(run)
        changed = {key: value for key, value in now.items() if before.get(key) != value}
        run.changes = [c for c in run.changes if c["after_epoch"] != run.done] + [{"after_epoch": run.done, **changed}]
    if written != now:  # config.toml holds them, so that a later resume goes on with them
        write_text_atomic(run.run_dir / "config.toml", to_toml(run.cfg))
    run.history = _completed_epochs(run.run_dir, run.done)


def _check_new_epochs(run: Run) -> None:
    """A resumed run may train for more or fewer epochs, but not for fewer than it has done; nor may a greedy
    schedule (whose phases are train.epochs long each) change its phases."""
    if run.cfg.train.schedule == "greedy":
        raise FFLabError("train.epochs: a greedy schedule's phases are train.epochs long; it cannot change on resume")
    if run.total_epochs < run.done:
        raise FFLabError(
            f"train.epochs = {run.cfg.train.epochs}: the run has done {run.done} epochs already "
            f"(give {run.done} to finish it with what it has)"
        )


def _fit(run: Run) -> None:
    """Train the remaining epochs; after each, score the monitor samples, log, and save the training state."""
    cfg, ds, model = run.cfg, run.ds, run.model
    m = cfg.train.monitor_size
    method = run.family.monitor_method(model) if m else None
    monitor = [("train", rows(ds.train_x, 0, m), ds.train_y[:m]), (run.held_out, rows(ds.test_x, 0, m), ds.test_y[:m])]
    every = run.role.checkpoint_every(cfg)
    with open_append(run.run_dir / "metrics.jsonl", new=not run.done) as metrics, run_board(run) as board:

        def on_epoch(stats) -> None:
            t = time.perf_counter()
            due = stats.epoch % cfg.train.monitor_every == 0 or stats.epoch == run.total_epochs
            if method and due:
                for name, x, y in monitor:
                    result = evaluate(model, x, y, cfg.eval.batch_size, method)
                    stats.extra[f"{name}_accuracy"] = result["accuracy"]
                    if result["accuracy_per_layer"]:
                        stats.extra[f"{name}_accuracy_per_layer"] = result["accuracy_per_layer"]
            run.monitor_seconds += time.perf_counter() - t
            row = stats.as_dict()
            run.history.append(row)
            metrics.write(json.dumps(row) + "\n")
            board.epoch(row)  # TensorBoard, when train.tensorboard is set (fflab.board)
            accs = "  ".join(
                f"{name} {row[f'{name}_accuracy']:.2%}" for name, *_ in monitor if f"{name}_accuracy" in row
            )
            run.log(
                f"epoch {stats.epoch:>3}/{run.total_epochs}  loss {_fmt(stats.loss)}  "
                f"{accs}  {stats.train_seconds:.1f}s ({stats.samples_per_second:,.0f} samples/s)"
            )
            if every and (stats.epoch % every == 0 or stats.epoch == run.total_epochs):
                flush_to_disk(run.run_dir / "metrics.jsonl")  # the epochs a saved state has done are on disk first
                save_training_state(
                    run.run_dir,
                    stats.epoch,
                    model,
                    run.trainer.state_dict(),
                    monitor_seconds=run.monitor_seconds,
                    wall_seconds=run.wall_before + time.perf_counter() - run.wall_start,
                    resumes=run.resumes,
                    changes=run.changes,
                    settings=_resumable(cfg),
                )
                run.saved_epoch = stats.epoch

        with run.precision:
            run.trainer.fit(ds.train_x, ds.train_y, on_epoch, run.done)


def _finalize(run: Run) -> dict:
    """Save the model, fit its readout, score the held-out (and training) set, plot, write summary.json."""
    cfg, ds, model, log = run.cfg, run.ds, run.model, run.log
    train_seconds = sum(h["train_seconds"] for h in run.history)
    meta = {
        "dataset": ds.name,
        "input_dim": ds.input_dim,
        "input_shape": list(ds.input_shape),
        "num_classes": ds.num_classes,
        "class_names": list(ds.class_names),
    }
    save_checkpoint(run.run_dir, model, cfg, **meta)

    readout_seconds = 0.0
    # A readout that also learned online (for hard negatives) saw features that kept changing: it is refit.
    if run.family.has_readout(model):
        t = time.perf_counter()
        with run.precision:
            for row in train_readout(model, ds.train_x, ds.train_y, cfg.readout, seed=cfg.train.seed):
                log(
                    f"readout epoch {row['readout_epoch']:>2}/{cfg.readout.epochs}  loss {row['loss']:.4f}  "
                    f"train {row['train_accuracy']:.2%}"
                )
        readout_seconds = time.perf_counter() - t
        save_checkpoint(run.run_dir, model, cfg, **meta)

    primary = run.family.primary_method(cfg)
    eval_start = time.perf_counter()
    with run.precision:
        held = evaluate(model, ds.test_x, ds.test_y, cfg.eval.batch_size, primary)
        train = None
        if cfg.eval.train_accuracy:
            train = evaluate(model, ds.train_x, ds.train_y, cfg.eval.batch_size, primary)
    eval_seconds = time.perf_counter() - eval_start

    plots = run.run_dir / "plots"
    plot_training_curves(run.history, plots / "training_curves.png")
    run.family.write_plots(cfg, model, run.trainer, ds, plots)
    samples = len(ds.train_x) * run.total_epochs
    held_out = run.held_out
    summary = {
        "dataset": ds.name,
        "config": cfg.name,
        "model": cfg.model.kind,
        "predict": primary,
        **held_out_scores(held_out, held),
        "train_accuracy": train["accuracy"] if train else None,
        "epochs": run.total_epochs,
        "train_samples": len(ds.train_x),
        f"{held_out}_samples": len(ds.test_x),
        "train_seconds": round(train_seconds, 3),
        "readout_seconds": round(readout_seconds, 3),
        "monitor_seconds": round(run.monitor_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "wall_seconds": round(run.wall_before + time.perf_counter() - run.wall_start, 3),
        "samples_per_second": round(samples / train_seconds, 1),
        "train_gflop_per_second": round(run.trainer.flops_per_sample() * samples / train_seconds / 1e9, 2),
        "threads": run.threads,
        "device": str(run.device),
        "precision": cfg.train.precision,
        "torch": torch.__version__,
    }
    if run.resumes:
        summary["resumed_after_epochs"] = run.resumes
    if run.changes:
        summary["changed_on_resume"] = run.changes
    summary.update(run.role.summary(run.trainer, run.history))
    write_json_atomic(run.run_dir / "summary.json", summary)
    (run.run_dir / TRAINING_STATE).unlink(missing_ok=True)  # the run is complete: model.safetensors is its result
    train_text = f", train accuracy {summary['train_accuracy']:.2%}" if train else ""
    methods = ", ".join(f"{k} {v:.2%}" for k, v in held["accuracy_by_method"].items())
    log(
        f"{held_out} accuracy {held['accuracy']:.2%} by {primary}{train_text} ({held_out} by method: {methods}); "
        f"train {train_seconds:.1f}s, eval {eval_seconds:.1f}s -> {run.run_dir}"
    )
    return summary


def train_parallel(
    cfg: Config,
    run_dir: str | Path,
    mode: str,
    *,
    workers: int | None = None,
    stages: int | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict:
    """A layer-parallel training run (see fflab.training.parallel): `workers` new processes on this
    machine, or, without `workers`, this process as one rank of a torchrun launch. Returns the summary
    (empty on the ranks of a torchrun launch other than 0)."""
    launched = torchrun_world()
    if workers is not None and workers < 1:
        raise FFLabError(f"--workers must be at least 1, got {workers}")
    if (workers is None) == (launched is None):
        raise FFLabError(
            "parallel training needs either --workers N (processes on this machine) or a start by torchrun, not both"
            if workers
            else "parallel training needs --workers N, or a start by torchrun"
        )
    world, here = (workers, workers) if workers is not None else (launched[1], launched[2])
    plan = ParallelPlan.create(mode, world, stages)
    get_family(cfg.model.kind).check_parallel(cfg, plan)
    if ":" in cfg.train.device and here > 1:
        raise FFLabError(
            f"train.device = {cfg.train.device!r} would put all {here} workers of this machine on one GPU; "
            "use 'cuda' (each worker takes its own) or 'auto'"
        )
    # One GPU per worker on each machine (resolving the last one checks there are enough), else the CPU.
    # The workers are told which, so that all of them agree with the backend chosen here.
    on_gpu = resolve_device(cfg, local_rank=here - 1, gpus_needed=here).type == "cuda"
    backend = "nccl" if on_gpu else "gloo"
    cfg = cfg.with_train(device="cuda" if on_gpu else "cpu")
    run_dir = Path(run_dir)
    args = (cfg, run_dir, plan, data_dir, progress, threads_per_worker(cfg.train.threads, here))
    if workers is not None:
        # Fail here, once, rather than in every worker: the run directory, the data (downloaded now if
        # missing, so the workers do not all fetch it) and the model must all be usable. This process holds
        # the run directory until its workers end, so rank 0 does not lock it again.
        with _working_in(run_dir, new=True):
            ds = load_for_config(cfg, data_dir, progress)
            build_model(cfg, ds.input_dim, ds.num_classes, input_shape=ds.input_shape)
            del ds
            run_local_workers(_parallel_worker, workers, (*args, True), timeout, backend)
            return json.loads((run_dir / "summary.json").read_text())
    join_group(launched[0], world, timeout=timeout, backend=backend)
    try:
        return _parallel_worker(*args, False)
    finally:
        leave_group()


def _parallel_worker(
    cfg: Config,
    run_dir: Path,
    plan: ParallelPlan,
    data_dir: str | None,
    progress: bool,
    threads: int,
    dir_held_by_parent: bool,
) -> dict:
    options = {"data_dir": data_dir, "progress": progress, "threads": threads}
    if dir_held_by_parent:
        return _train(cfg, run_dir, None, log=print, role=ParallelRole(plan), **options)
    return train_run(cfg, run_dir, parallel=plan, **options)
