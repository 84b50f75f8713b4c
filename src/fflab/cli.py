"""Command line: fflab train | resume | eval | predict | export | analyze | settings | data."""

from __future__ import annotations

import argparse
import difflib
import signal
import sys
import threading
from pathlib import Path

from fflab.errors import FFLabError


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _config_path(text: str) -> Path:
    """A config file path, or the name of a ready config in ./configs (e.g. `mnist-ff`)."""
    p = Path(text)
    if p.is_file():
        return p
    name = text.removeprefix("configs/").removesuffix(".toml")
    named = Path("configs") / f"{name}.toml"
    if named.is_file():
        return named
    if p.is_absolute() or text.startswith(("./", "../")):  # a path, not a name
        raise FFLabError(f"config file not found: {text}")
    folder = Path("configs")
    ready = sorted(f.relative_to(folder).with_suffix("").as_posix() for f in folder.rglob("*.toml"))
    by_stem = {Path(r).name: r for r in reversed(ready)}  # "loewex" finds reference/loewex; configs/ wins a tie
    close = difflib.get_close_matches(name, [*ready, *by_stem], n=1)
    hint = f"; did you mean {by_stem.get(close[0], close[0])!r}?" if close else "."
    listed = f" The configs in ./configs: {', '.join(ready)}." if ready else " ./configs holds no configs here."
    raise FFLabError(f"config not found: {text!r} is neither a file nor a config in ./configs{hint}{listed}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, `kill`), raised where the program is, so that it ends as after Ctrl-C:
    the write in progress removes its temporary file and the run keeps its last saved state."""


def _terminate(signum, frame) -> None:
    raise Terminated


def _stopped(stop: KeyboardInterrupt, hint: str = "") -> int:
    """Say that Ctrl-C (exit status 130) or SIGTERM (143) stopped the command."""
    terminated = isinstance(stop, Terminated)
    print(f"fflab: {'terminated (SIGTERM)' if terminated else 'interrupted'}{hint}", file=sys.stderr)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def _interrupted(run_dir: Path, stop: KeyboardInterrupt) -> int:
    """Ctrl-C or SIGTERM during training: say how to go on where the run saved its state."""
    from fflab.checkpoint import TRAINING_STATE

    hint = f"; continue with `fflab resume {run_dir}`" if (run_dir / TRAINING_STATE).exists() else ""
    return _stopped(stop, hint)


def cmd_train(args: argparse.Namespace) -> int:
    from fflab.config import load_config
    from fflab.training.run import default_run_dir, train_parallel, train_run

    cfg = load_config(_config_path(args.config), args.set)
    run_dir = Path(args.out) if args.out else default_run_dir(cfg)
    if args.parallel is None:
        if args.workers is not None or args.stages is not None:
            raise FFLabError("--workers and --stages choose how to run --parallel training; add --parallel MODE")
        try:
            train_run(cfg, run_dir, data_dir=args.data_dir, progress=not args.no_progress)
        except KeyboardInterrupt as stop:
            return _interrupted(run_dir, stop)
        return 0
    train_parallel(
        cfg,
        run_dir,
        args.parallel,
        workers=args.workers,
        stages=args.stages,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        timeout=args.timeout,
    )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from fflab.checkpoint import require_run_directory
    from fflab.training.run import resume_config, train_run

    run_dir = Path(args.run_dir)
    require_run_directory(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise FFLabError(f"{run_dir} is not a run directory: it has no config.toml")
    try:
        train_run(
            resume_config(run_dir, args.set),
            run_dir,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            resume=True,
        )
    except KeyboardInterrupt as stop:
        return _interrupted(run_dir, stop)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from fflab.checkpoint import load_checkpoint
    from fflab.io import write_json_atomic
    from fflab.perf import compute_precision, set_threads
    from fflab.training.data import evaluation_split, held_out_scores, load_for_config
    from fflab.training.evaluate import evaluate, primary_method
    from fflab.training.inputs import reuse_inputs

    model, cfg, _ = load_checkpoint(args.run_dir)
    set_threads(cfg.train.threads)
    ds = load_for_config(*reuse_inputs(Path(args.run_dir), cfg, args.data_dir), progress=not args.no_progress)
    with compute_precision(cfg.train.precision, "cpu"):  # the run's precision reproduces its summary's score
        result = evaluate(model, ds.test_x, ds.test_y, cfg.eval.batch_size, primary_method(cfg))
    # a run trained with data.validation is re-scored on its held-out rows, under their name
    result = {"dataset": ds.name, "predict": primary_method(cfg), **held_out_scores(evaluation_split(cfg), result)}
    write_json_atomic(Path(args.run_dir) / "eval.json", result)
    print(json.dumps(result, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from fflab.inference import predict_files

    records = predict_files(args.run_dir, args.inputs, top=args.top, invert=args.invert)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    width = max(len(r["input"]) for r in records)
    for r in records:
        print(f"{r['input']:<{width}}  " + "  ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from fflab.export import export_run

    path = export_run(args.run_dir, args.format, args.out)
    print(path)
    if args.check:
        from fflab.export import verify_export

        print(json.dumps(verify_export(args.run_dir, args.format, path, args.data_dir), indent=2))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    import json
    import time

    from fflab.analysis.compare import analyze_runs

    out = Path(args.out) if args.out else Path(args.run_dirs[0]).parent / f"analysis-{time.strftime('%Y%m%d-%H%M%S')}"
    result = analyze_runs(
        args.run_dirs,
        out,
        data_dir=args.data_dir,
        samples=args.samples,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(json.dumps(result, indent=2))
    print(f"analysis written to {out}", file=sys.stderr)
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from fflab.config import apply_overrides, config_from_dict, load_config, to_toml

    if args.config:
        cfg = load_config(_config_path(args.config), args.set)
    else:
        cfg = config_from_dict(apply_overrides({}, args.set))
    print(to_toml(cfg, annotate=True), end="")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from fflab import data

    if args.action == "list":
        root = data.resolve_data_dir(args.data_dir)
        print(f"data directory: {root}")
        for spec in data.available_datasets():
            print(f"  {spec.name:<14} {spec.description}")
        return 0
    if not args.name:
        raise FFLabError(f"fflab data {args.action} needs a data set name (see `fflab data list`)")
    if args.action == "download":
        paths = data.download_dataset(args.name, args.data_dir, progress=not args.no_progress)
        for path in paths:
            print(path)
        if not paths:
            print(f"{args.name}: nothing to download, it comes with fflab's dependencies")
        return 0
    checks = data.verify_dataset(args.name, args.data_dir, path=args.path)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.path}: {c.detail}")
    return 0 if all(c.ok for c in checks) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fflab", description="Forward-Forward learning toolkit")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="data directory (default: $FFLAB_DATA, else the user cache)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")

    train = sub.add_parser("train", help="train a network from a TOML config")
    train.add_argument("config", help="config file, or the name of one in ./configs")
    overrides(train)
    train.add_argument("--out", help="run directory (default: runs/<config>-<time>)")
    par = train.add_argument_group("layer-parallel training (docs/scaling.md)")
    par.add_argument(
        "--parallel",
        choices=["pipeline", "data", "both"],
        help="pipeline: workers own groups of layers; data: workers split each batch; both: a grid",
    )
    par.add_argument("--workers", type=int, help="start this many worker processes here (omit under torchrun)")
    par.add_argument("--stages", type=int, help="pipeline stages for --parallel both (workers / stages replicas)")
    par.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a worker waits on another before failing (default 300)"
    )
    common(train)
    train.set_defaults(func=cmd_train)

    res = sub.add_parser("resume", help="continue a stopped training run from its last saved epoch")
    res.add_argument("run_dir")
    res.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change train.lr or train.epochs from here on (e.g. a lower lr after a diverged epoch)",
    )
    common(res)
    res.set_defaults(func=cmd_resume)

    ev = sub.add_parser("eval", help="evaluate a trained run on its test set")
    ev.add_argument("run_dir")
    common(ev)
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="classify image files, folders of images, .npy arrays or IDX files")
    pr.add_argument("run_dir")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="PNG/JPEG files, folders of them, .npy or IDX files")
    pr.add_argument("--top", type=positive_int, default=1, help="show the N most probable classes (default 1)")
    pr.add_argument("--invert", action="store_true", help="use 1 - value (dark strokes on a light background)")
    pr.add_argument("--json", action="store_true", help="print JSON records instead of lines")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="write a trained network as ONNX (analog) or NIR (spiking)")
    ex.add_argument("run_dir")
    ex.add_argument("--format", required=True, choices=["onnx", "nir"])
    ex.add_argument("--out", help="output file (default: RUN_DIR/model.onnx or model.nir)")
    ex.add_argument(
        "--check",
        action="store_true",
        help="compare with fflab: ONNX predictions on the run's test set (onnxruntime), NIR spikes (snnTorch)",
    )
    ex.add_argument("--data-dir", help="data directory for --check (default: $FFLAB_DATA, else the user cache)")
    ex.set_defaults(func=cmd_export)

    an = sub.add_parser("analyze", help="latents, sparsity, separability, CKA and cost of trained runs")
    an.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    an.add_argument("--out", help="output folder (default: analysis-<time> beside the first run)")
    an.add_argument(
        "--samples",
        type=positive_int,
        default=10000,
        help="held-out samples to analyse (test or validation; default 10000)",
    )
    an.add_argument("--threads", type=int, default=0, help="torch threads (default 0: one per core)")
    common(an)
    an.set_defaults(func=cmd_analyze)

    st = sub.add_parser("settings", help="every config key with its value and what it accepts, as commented TOML")
    st.add_argument("config", nargs="?", help="config file or name in ./configs (default: the built-in defaults)")
    overrides(st)
    st.set_defaults(func=cmd_settings)

    d = sub.add_parser("data", help="list, download or verify data sets")
    d.add_argument("action", choices=["list", "download", "verify"])
    d.add_argument("name", nargs="?")
    d.add_argument("--path", help="folder of the 'idx' or 'image-folder' data set (or of a cifar10 copy)")
    common(d)
    d.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM ends a command as Ctrl-C does (only the main thread may handle signals; an embedding caller's
    # handler is put back afterwards)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return args.func(args)
    except FFLabError as e:
        print(f"fflab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system refusal not named where it happened (a read-only run directory)
        from fflab.io import describe_os_error

        print(f"fflab: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        return _stopped(stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
