"""A training run end to end: config in, run directory out.

The run directory holds config.toml (resolved), metrics.jsonl (one line per epoch),
summary.json, the model (model.safetensors + model.json) and plots/*.png; while the run is in
progress, also its training state (resume.pt), from which `fflab resume` continues a stopped run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from fflab.analysis.plots import (
    plot_activity_over_time,
    plot_goodness_histograms,
    plot_goodness_over_time,
    plot_training_curves,
)
from fflab.checkpoint import (
    SETTINGS,
    TRAINING_STATE,
    load_training_state,
    save_checkpoint,
    save_training_state,
    upgrade_saved_state,
)
from fflab.config import FEEDFORWARD_KINDS, RECURRENT_KINDS, Config, to_toml
from fflab.data import Dataset, FrameSource, SequenceDataset, load_dataset, load_sequence_dataset
from fflab.devices import dataset_to, resolve_device
from fflab.errors import DataError, FFLabError
from fflab.io import flush_to_disk, folder_lock, write_json_atomic, write_text_atomic, write_text_new
from fflab.models import BackpropNetwork, FFNetwork, RecurrentFFNetwork, build_model
from fflab.perf import compute_precision, set_threads, settle_precision
from fflab.supervision import random_wrong_labels
from fflab.training.evaluate import evaluate, goodness_samples, primary_method
from fflab.training.launch import (
    DEFAULT_TIMEOUT,
    join_group,
    leave_group,
    local_rank,
    run_local_workers,
    threads_per_worker,
    torchrun_world,
)
from fflab.training.parallel import DistributedFFTrainer, ParallelPlan, check_parallel_support
from fflab.training.readout import train_readout
from fflab.training.trainer import make_trainer

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


SEQUENCE_SETS = ("seq-mnist", "moving-mnist")


def rows(x, start: int, stop: int):
    """Rows start..stop-1 of a tensor, or (lazily) of a sequence frame source."""
    return x.rows(start, stop) if isinstance(x, FrameSource) else x[start:stop]


def evaluation_split(cfg: Config) -> str:
    """The held-out set a run monitors and reports: 'validation' (data.validation) or 'test'."""
    return "validation" if cfg.data.validation else "test"


def held_out_scores(split: str, result: dict) -> dict:
    """An evaluation's accuracies under the held-out split's name (`test_accuracy`, ...), as summaries store them."""
    return {f"{split}_{key}": result[key] for key in ("accuracy", "accuracy_by_method", "accuracy_per_layer")}


def load_for_config(cfg: Config, data_dir: str | None, progress: bool) -> Dataset | SequenceDataset:
    """The configured data set (images, or sequences derived from MNIST), cut to the configured subset sizes.

    With data.validation = N the last N training samples take the test split's place, so nothing
    downstream can read the test set.
    """
    d = cfg.data
    if d.name in SEQUENCE_SETS:
        if d.name == "seq-mnist":
            permute = None if d.permute_seed < 0 else d.permute_seed
            options = {"mode": d.seq_mode, "chunk_size": d.chunk_size, "permute_seed": permute}
        else:
            options = {
                "frames": d.frames,
                "canvas": d.canvas,
                "digits": d.digits,
                "train_sequences": d.train_sequences,
                "test_sequences": d.test_sequences,
                "seed": d.sequence_seed,
            }
        ds = load_sequence_dataset(d.name, data_dir=data_dir, progress=progress, **options)
    else:
        ds = load_dataset(d.name, data_dir=data_dir, path=d.path or None, progress=progress)
    if ds.num_classes < 2:
        raise DataError(f"{ds.name} holds {ds.num_classes} class; Forward-Forward needs at least two to tell apart")
    n_train = min(d.train_subset or len(ds.train_x), len(ds.train_x))
    if d.validation >= n_train:
        raise FFLabError(f"data.validation = {d.validation} leaves no training samples of the {n_train} there are")
    n_fit = n_train - d.validation
    if d.validation:  # held out: the end of the training rows
        held_x, held_y, start, stop = ds.train_x, ds.train_y, n_fit, n_train
    else:
        held_x, held_y, start, stop = ds.test_x, ds.test_y, 0, d.test_subset or len(ds.test_x)
    return dataclasses.replace(
        ds,
        train_x=rows(ds.train_x, 0, n_fit),
        train_y=ds.train_y[:n_fit],
        test_x=rows(held_x, start, stop),
        test_y=held_y[start:stop],
    )


def _where(device: torch.device, threads: int) -> str:
    return f"{threads} threads" if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"


RUN_TAKEN = "already holds a run (finished, running, or stopped before saving its state)"


def _check_every_frame_is_read(cfg: Config, ds: Dataset | SequenceDataset) -> None:
    """A recurrent network reads frame t at step t, and trains and predicts up to the counted window's end,
    so a longer sequence would lose its last frames without a word."""
    if not isinstance(ds, SequenceDataset) or cfg.model.kind not in RECURRENT_KINDS:
        return
    frames, last = ds.train_x.num_steps, cfg.model.window[1]
    if frames > last:
        raise FFLabError(
            f"model.window = {cfg.model.window}: {ds.name} sequences here have {frames} frames, but training and "
            f"prediction stop at step {last}, so frames {last + 1}-{frames} would never count; end model.window "
            f"(and model.steps) at step {frames} or later"
        )


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


def _fmt(values) -> str:
    return " ".join("-" if v is None else f"{v:.4f}" for v in values)


def _monitor_method(model) -> str | None:
    """What per-epoch monitoring can score before any readout is trained."""
    if isinstance(model, BackpropNetwork):
        return "backprop"
    if isinstance(model, FFNetwork) and not model.predicts_by_goodness:
        return None
    return "goodness"


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

    With `resume`, continue the stopped run in `run_dir` (`cfg` is its config.toml) from its last saved
    training state: the result is the one the run would have had without stopping. One process at a time
    works in a run directory: a second `fflab train` or `fflab resume` on it stops with an error.

    With a `parallel` plan this is one worker of a layer-parallel run (torch.distributed initialised):
    every worker trains its share, and rank 0 alone monitors, evaluates and writes the run directory
    (the other workers return an empty summary). `threads` overrides the config's torch threads for this
    process (a parallel run's share of the cores) without changing the config it saves.
    """
    run_dir = Path(run_dir)
    if resume and parallel is not None:
        raise FFLabError("layer-parallel runs save no training state, so they cannot be resumed")
    options = {"data_dir": data_dir, "progress": progress, "log": log, "parallel": parallel, "threads": threads}
    if parallel is not None and dist.get_rank() != 0:
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


def _lead_choice(value: str) -> str:
    """Rank 0's `value`, on every worker of a parallel run."""
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def _train(
    cfg: Config,
    run_dir: Path,
    saved: dict | None,
    *,
    data_dir: str | None,
    progress: bool,
    log: Log,
    parallel: ParallelPlan | None,
    threads: int | None,
) -> dict:
    """train_run's work: from scratch, or from the `saved` training state of a stopped run."""
    wall_start = time.perf_counter()
    lead = parallel is None or dist.get_rank() == 0
    resume = saved is not None
    threads = set_threads(cfg.train.threads if threads is None else threads)
    device = resolve_device(cfg, local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and implicit CUDA allocations use the current device
    chosen, precision_note = settle_precision(cfg.train.precision, device) if lead else (cfg.train.precision, None)
    if parallel is not None:  # every worker computes in the precision the lead chose
        chosen = _lead_choice(chosen)
    # the run's config.toml records the precision that ran, so `fflab eval` and `fflab resume` reuse it
    cfg = cfg.with_train(precision=chosen)
    torch.manual_seed(cfg.train.seed)
    ds = dataset_to(load_for_config(cfg, data_dir, progress and lead), device)
    if not resume:  # a run started before this check keeps going as it began
        _check_every_frame_is_read(cfg, ds)
    model = build_model(
        cfg.model, ds.input_dim, ds.num_classes, cfg.readout, cfg.spiking, cfg.train.seed, input_shape=ds.input_shape
    ).to(device)
    precision = compute_precision(cfg.train.precision, device)  # training, monitoring, readout and evaluation
    if parallel is None:
        trainer = make_trainer(model, cfg.train, progress=progress, image_shape=ds.input_shape, readout=cfg.readout)
    else:
        trainer = DistributedFFTrainer(
            model, cfg.train, parallel, progress=progress and lead, image_shape=ds.input_shape
        )
        if not lead:
            with precision:
                trainer.fit(ds.train_x, ds.train_y)
            return {}
    done, resumes, wall_before, monitor_seconds = 0, [], 0.0, 0.0
    if saved is None:
        _claim_run_dir(run_dir, cfg)
    else:
        upgraded = upgrade_saved_state(model, saved["model"])
        if upgraded:  # the optimisers' moments still have the old layout's shapes
            raise FFLabError(
                f"{run_dir / TRAINING_STATE} was saved by an older fflab, whose weights of {', '.join(upgraded)} had "
                "another layout (tiled products from before stop 36, or dense ones from before tiling): the run "
                "cannot continue from it; start it again"
            )
        try:
            model.load_state_dict(saved["model"])
            trainer.load_state_dict(saved["trainer"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise FFLabError(f"{run_dir / TRAINING_STATE} does not fit the run's config.toml ({e})") from None
        done, wall_before, monitor_seconds = saved["epoch"], saved["wall_seconds"], saved["monitor_seconds"]
        resumes = [*saved["resumes"], done]
    reads_schedule = cfg.model.kind in FEEDFORWARD_KINDS  # a backprop baseline keeps the setting, unread
    schedule = f", {cfg.train.schedule}" if reads_schedule else ""
    layerwise = reads_schedule and cfg.train.schedule == "greedy"
    total_epochs = cfg.train.epochs * (len(cfg.model.hidden) if layerwise else 1)
    workers = f", {parallel.mode}-parallel on {parallel.world_size} workers" if parallel else ""
    held_out = evaluation_split(cfg)
    log(
        f"fflab: {cfg.name or 'run'} ({cfg.model.kind}) on {ds.name} ({len(ds.train_x)} train / {len(ds.test_x)} "
        f"{held_out}), layers {cfg.model.hidden}, {total_epochs} epochs{schedule}, {_where(device, threads)}{workers} "
        f"-> {run_dir}" + (f", resumed after epoch {done}" if resume else "")
    )
    if lead and precision_note:
        log(precision_note)

    m = cfg.train.monitor_size
    method = _monitor_method(model) if m else None
    monitor = [("train", rows(ds.train_x, 0, m), ds.train_y[:m]), (held_out, rows(ds.test_x, 0, m), ds.test_y[:m])]
    history: list[dict] = _completed_epochs(run_dir, done) if resume else []
    every = cfg.train.checkpoint_every if parallel is None else 0
    with open(run_dir / "metrics.jsonl", "a" if resume else "w") as metrics:

        def on_epoch(stats) -> None:
            nonlocal monitor_seconds
            t = time.perf_counter()
            due = stats.epoch % cfg.train.monitor_every == 0 or stats.epoch == total_epochs
            if method and due:
                for name, x, y in monitor:
                    result = evaluate(model, x, y, cfg.eval.batch_size, method)
                    stats.extra[f"{name}_accuracy"] = result["accuracy"]
                    if result["accuracy_per_layer"]:
                        stats.extra[f"{name}_accuracy_per_layer"] = result["accuracy_per_layer"]
            monitor_seconds += time.perf_counter() - t
            row = stats.as_dict()
            history.append(row)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            accs = "  ".join(
                f"{name} {row[f'{name}_accuracy']:.2%}" for name, *_ in monitor if f"{name}_accuracy" in row
            )
            log(
                f"epoch {stats.epoch:>3}/{total_epochs}  loss {_fmt(stats.loss)}  "
                f"{accs}  {stats.train_seconds:.1f}s ({stats.samples_per_second:,.0f} samples/s)"
            )
            if every and (stats.epoch % every == 0 or stats.epoch == total_epochs):
                flush_to_disk(run_dir / "metrics.jsonl")  # the epochs a saved state has done are on disk before it
                save_training_state(
                    run_dir,
                    stats.epoch,
                    model,
                    trainer.state_dict(),
                    monitor_seconds=monitor_seconds,
                    wall_seconds=wall_before + time.perf_counter() - wall_start,
                    resumes=resumes,
                )

        with precision:
            trainer.fit(ds.train_x, ds.train_y, on_epoch, done)
    train_seconds = sum(h["train_seconds"] for h in history)
    meta = {
        "dataset": ds.name,
        "input_dim": ds.input_dim,
        "input_shape": list(ds.input_shape),
        "num_classes": ds.num_classes,
        "class_names": list(ds.class_names),
    }
    save_checkpoint(run_dir, model, cfg, **meta)

    readout_seconds = 0.0
    # A recurrent network's readout has also learned online (for hard negatives), on features that kept changing.
    if isinstance(model, FFNetwork | RecurrentFFNetwork) and model.readout is not None:
        t = time.perf_counter()
        with precision:
            for row in train_readout(model, ds.train_x, ds.train_y, cfg.readout, seed=cfg.train.seed):
                log(
                    f"readout epoch {row['readout_epoch']:>2}/{cfg.readout.epochs}  loss {row['loss']:.4f}  "
                    f"train {row['train_accuracy']:.2%}"
                )
        readout_seconds = time.perf_counter() - t
        save_checkpoint(run_dir, model, cfg, **meta)

    primary = primary_method(cfg)
    eval_start = time.perf_counter()
    with precision:
        held = evaluate(model, ds.test_x, ds.test_y, cfg.eval.batch_size, primary)
        train = None
        if cfg.eval.train_accuracy:
            train = evaluate(model, ds.train_x, ds.train_y, cfg.eval.batch_size, primary)
    eval_seconds = time.perf_counter() - eval_start

    _write_plots(cfg, model, trainer, ds, history, run_dir)
    samples = len(ds.train_x) * total_epochs
    summary = {
        "dataset": ds.name,
        "config": cfg.name,
        "model": cfg.model.kind,
        "predict": primary,
        **held_out_scores(held_out, held),
        "train_accuracy": train["accuracy"] if train else None,
        "epochs": total_epochs,
        "train_samples": len(ds.train_x),
        f"{held_out}_samples": len(ds.test_x),
        "train_seconds": round(train_seconds, 3),
        "readout_seconds": round(readout_seconds, 3),
        "monitor_seconds": round(monitor_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "wall_seconds": round(wall_before + time.perf_counter() - wall_start, 3),
        "samples_per_second": round(samples / train_seconds, 1),
        "train_gflop_per_second": round(trainer.flops_per_sample() * samples / train_seconds / 1e9, 2),
        "threads": threads,
        "device": str(device),
        "precision": cfg.train.precision,
        "torch": torch.__version__,
    }
    if resumes:
        summary["resumed_after_epochs"] = resumes
    if parallel is not None:
        busy = [h["worker_busy"] for h in history]
        summary["parallel"] = {
            **parallel.describe(trainer.layer_groups),
            "worker_busy": [round(sum(b) / len(busy), 3) for b in zip(*busy, strict=True)],
        }
    write_json_atomic(run_dir / "summary.json", summary)
    (run_dir / TRAINING_STATE).unlink(missing_ok=True)  # the run is complete: model.safetensors is its result
    train_text = f", train accuracy {summary['train_accuracy']:.2%}" if train else ""
    methods = ", ".join(f"{k} {v:.2%}" for k, v in held["accuracy_by_method"].items())
    log(
        f"{held_out} accuracy {held['accuracy']:.2%} by {primary}{train_text} ({held_out} by method: {methods}); "
        f"train {train_seconds:.1f}s, eval {eval_seconds:.1f}s -> {run_dir}"
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
    check_parallel_support(cfg.model, cfg.train, plan)
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
            build_model(cfg.model, ds.input_dim, ds.num_classes, cfg.readout, cfg.spiking, input_shape=ds.input_shape)
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
    options = {"data_dir": data_dir, "progress": progress, "parallel": plan, "threads": threads}
    if dir_held_by_parent:
        return _train(cfg, run_dir, None, log=print, **options)
    return train_run(cfg, run_dir, **options)


def _write_plots(cfg: Config, model, trainer, ds: Dataset, history: list[dict], run_dir: Path) -> None:
    """Training curves for every run; goodness histograms for FF networks; goodness and activity over
    time for recurrent ones."""
    plots = run_dir / "plots"
    plot_training_curves(history, plots / "training_curves.png")
    gen = torch.Generator().manual_seed(cfg.train.seed + 1)
    n = min(500 if isinstance(model, RecurrentFFNetwork) else 2000, len(ds.test_x))
    x, y = ds.test_x[:n], ds.test_y[:n]  # a slice of a sequence source renders just these rows
    if isinstance(model, RecurrentFFNetwork):
        wrong = random_wrong_labels(y, model.num_classes, gen)
        pos, neg = model.trace(x, y).goodness.mean(2), model.trace(x, wrong).goodness.mean(2)
        plot_goodness_over_time(pos, neg, plots / "goodness_over_time.png", model.window, model.hidden_steps)
        plot_activity_over_time(
            model.trace(x[:4], y[:4], keep_activities=True).activities, plots / "activity_over_time.png"
        )
    elif isinstance(model, FFNetwork):
        pos, neg = goodness_samples(model, trainer.make_pairs(x, y, gen), n, y)
        theta = cfg.model.theta if cfg.model.loss == "softplus" else None  # symba has no threshold
        plot_goodness_histograms(pos, neg, plots / "goodness_histograms.png", theta)
