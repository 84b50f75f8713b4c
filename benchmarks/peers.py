"""Peers side by side: fflib 0.3.0 (from the registry) and fflab on the same network, batch size and data, in one run.

    pip install --no-deps fflib==0.3.0      # the `peers` extra; --no-deps: its pins would replace torch (see below)
    FFLAB_DATA=../shared/datasets python benchmarks/peers.py [--epochs 1] [--train-subset N] [--target 0.98]
        [--test-subset N] [--sides fflib,fflab-same,fflab-recipe] [--hidden 2000,2000] [--batch-size 128] [--threads 0]

One process trains, one after the other, on the first --train-subset MNIST training images (default 10,000; 0: all
60,000), read by fflab's own reader and handed to both, with the same torch thread count:

  fflib         fflib's FFNet as its example examples/ff_net_mnist.py builds and trains it: FFLinear layers
                (input scaled to unit length, ReLU, goodness = mean of squares, softplus loss around
                loss_threshold 20, one Adam per layer at lr 0.02), the one-hot label concatenated after the
                image, one random wrong label per image as the negative (its NegativeGenerator.RANDOM),
                batch 128, trained by FFSuite.run_train_epoch (its own loop) and scored by FFSuite.test with
                its TryAllClasses probe (the goodness of all layers for each of the 10 labels). Its reader,
                fflib.utils.data.mnist.FFMNIST, needs torchvision; it is replaced here by a TensorDataset of
                the same images in a DataLoader with the same arguments (batch_size, shuffle=True), which does
                no per-image PIL conversion, so it is if anything faster than the original. (The example also
                holds out 10% of the training images for validation; here every side trains on the same images.)
  fflab-same    fflab with the same recipe: model.label=concat, input_norm=length, init=torch (nn.Linear's),
                goodness mean_squares, loss softplus, theta 20, prediction by the goodness of all layers,
                Adam lr 0.02 without decay, random negatives, batch 128. Only the per-batch order of work
                differs: fflib passes each layer's activity up after a second forward pass with the updated
                weights, fflab passes up the activity it already computed (2 of fflib's 3 passes per layer).
  fflab-recipe  fflab's own recipe (--recipe, default configs/mnist-ff.toml: label overlaid on the first 10
                pixels, SymBa loss, hard negatives, cosine lr) on the same layer sizes and batch size.

Each epoch's training time is timed without the scoring of the full 10,000-image test set that follows it (fflib:
around FFSuite.run_train_epoch; fflab: train_run's per-epoch monitor, see benchmarks/time_to_accuracy.py). The
report gives samples/s, GFLOP/s of matrix products (fflib's counted here: per layer and sample, forward and weight
gradient for positive and negative rows plus its second forward pass, 12 * in * out), test accuracy per epoch and
the training seconds to --target, each as a ratio to fflib's. Where fflib never reaches the target, the ratio is a
lower bound (fflib's total training time over fflab's time to target). The record goes to
benchmarks/results/peers-<sizes>-b<batch>-e<epochs>-n<train images>-<date>-<time>.json (or under --results). The
default, one epoch of 10,000 images per side, took 6 minutes on two cores shared with other work (more than half of it
scoring the test set, untimed); the time to 98% needs the whole set and more epochs: --train-subset 0 --epochs 30
(fflib's example trains 60). On a shared machine, compare the best-epoch ratio too: each side's fastest epoch.

fflib 0.3.0 declares torch>=2.6,<3 and torchvision>=0.21,<0.22; that torchvision pins torch 2.6.0, so a plain
`pip install fflib` (or `pip install '.[peers]'`) would replace the installed torch with 2.6.0 and its CUDA 12.4
libraries. Its FFNet code needs only torch and tqdm: install it with --no-deps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import cpu_model, dated_path, git_commit  # noqa: E402
from time_to_accuracy import RESULTS, measure_peaks, run_to_target  # noqa: E402

from fflab.data import load_dataset  # noqa: E402
from fflab.io import write_json_atomic  # noqa: E402
from fflab.perf import set_threads  # noqa: E402

SIDES = ("fflib", "fflab-same", "fflab-recipe")
MNIST = str(Path(__file__).resolve().parent.parent / "configs" / "mnist-ff.toml")


def fflab_same_overrides(hidden: list[int], args) -> list[str]:
    """fflib's recipe in fflab settings (on top of configs/mnist-ff.toml)."""
    return [
        "model.label=concat",
        "model.input_norm=length",
        "model.init=torch",
        "model.goodness=mean_squares",
        "model.loss=softplus",
        f"model.theta={args.threshold}",
        f"model.predict_layers={list(range(len(hidden)))}",
        "train.optimizer=adam",
        f"train.lr={args.lr}",
        "train.lr_decay=none",
        "train.negatives=random",
        "train.precision=float32",
        *common_overrides(hidden, args),
    ]


def common_overrides(hidden: list[int], args) -> list[str]:
    """What every fflab side shares with fflib: sizes, batch, epochs, data, threads, seed, device."""
    return [
        f"model.hidden={hidden}",
        f"train.batch_size={args.batch_size}",
        f"train.epochs={args.epochs}",
        f"data.train_subset={args.train_subset}",
        f"data.test_subset={args.test_subset}",
        f"train.threads={args.threads}",
        f"train.seed={args.seed}",
        f"train.device={args.device}",
    ]


def fflib_flop_per_sample(sizes: list[int]) -> int:
    """Matrix-product FLOPs per training image in fflib's FFNet.run_train_combined: per layer, the positive and
    negative forward passes with gradient, their weight gradients, and the second forward pass of both after the
    update that feeds the next layer: 6 products of in x out per image, 2 FLOPs each."""
    return sum(12 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def run_fflib(ds, hidden: list[int], args, log) -> dict:
    """fflib's FFNet trained by its FFSuite, epoch by epoch; each epoch's training timed, then the test set scored."""
    try:
        import fflib
        from fflib.nn.ff_linear import FFLinear
        from fflib.nn.ff_net import FFNet
        from fflib.probes.one_hot import TryAllClasses
        from fflib.utils.data import FFDataProcessor
        from fflib.utils.ff_suite import FFSuite
    except ImportError as e:
        raise SystemExit(f"fflib is not installed ({e}): pip install --no-deps fflib==0.3.0") from None
    from torch.nn.functional import one_hot
    from torch.utils.data import DataLoader, TensorDataset

    classes = ds.num_classes
    n = args.train_subset or len(ds.train_x)
    train = TensorDataset(ds.train_x[:n].flatten(1), ds.train_y[:n])
    n_test = args.test_subset or len(ds.test_x)
    test = TensorDataset(ds.test_x[:n_test].flatten(1), ds.test_y[:n_test])

    class TensorMNIST(FFDataProcessor):
        """FFMNIST's loaders and label handling (one-hot, concatenated after the image; RANDOM negatives) over
        tensors, so that torchvision is not needed."""

        def __init__(self) -> None:
            self.train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
            self.test_loader = DataLoader(test, batch_size=args.batch_size)

        def get_train_loader(self):
            return self.train_loader

        def get_val_loader(self):
            return None

        def get_test_loader(self):
            return self.test_loader

        def get_all_loaders(self):
            return {"train": self.train_loader, "val": None, "test": self.test_loader}

        def encode_output(self, y):
            return one_hot(y, num_classes=classes).float()

        def combine_to_input(self, x, y):
            return torch.cat((x, y), 1)

        def generate_negative(self, x, y, net):
            rnd = torch.rand((x.shape[0], classes), device=x.device)
            rnd[torch.arange(x.shape[0]), y] = 0
            return x, one_hot(rnd.argmax(1), num_classes=classes).float()

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    sizes = [ds.input_dim + classes, *hidden]
    layers = [
        FFLinear(in_features=a, out_features=b, loss_threshold=args.threshold, lr=args.lr, device=device)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    net = FFNet(layers, device)
    probe = TryAllClasses(lambda x, y: net(torch.cat((x, y), 1)), output_classes=classes)
    suite = FFSuite(net, probe, TensorMNIST(), device)
    epochs, clock = [], 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        suite.run_train_epoch(validate=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        clock += seconds
        accuracy = suite.test()  # untimed: the whole test set, by its TryAllClasses probe
        epochs.append(
            {
                "epoch": epoch,
                "train_seconds": round(seconds, 3),
                "cumulative_train_seconds": round(clock, 3),
                "samples_per_second": round(n / seconds, 1),
                "test_accuracy": accuracy,
            }
        )
        log(f"fflib epoch {epoch}/{args.epochs}: {seconds:.1f}s ({n / seconds:,.0f} samples/s), test {accuracy:.2%}")
    reached = next((e for e in epochs if e["test_accuracy"] >= args.target), None)
    samples_per_second = n * args.epochs / clock
    flop = fflib_flop_per_sample(sizes)
    return {
        "side": "fflib",
        "library": f"fflib {fflib.__version__}",
        "settings": (
            f"FFNet of FFLinear {' -> '.join(map(str, sizes))} (label one-hot concatenated after the image), "
            f"loss_threshold {args.threshold}, Adam lr {args.lr} per layer, RANDOM negatives, batch "
            f"{args.batch_size}, FFSuite.run_train_epoch, TryAllClasses probe over all layers"
        ),
        "epochs": epochs,
        "epochs_run": args.epochs,
        "train_samples": n,
        "train_seconds": round(clock, 3),
        "samples_per_second": round(samples_per_second, 1),
        "best_epoch_samples_per_second": max(e["samples_per_second"] for e in epochs),
        "gflop_per_sample": float(f"{flop / 1e9:.4g}"),
        "train_gflop_per_second": round(flop * samples_per_second / 1e9, 2),
        "epoch_to_target": reached["epoch"] if reached else None,
        "seconds_to_target": reached["cumulative_train_seconds"] if reached else None,
        "final_accuracy": epochs[-1]["test_accuracy"],
    }


def run_fflab(side: str, hidden: list[int], args, log) -> dict:
    if side == "fflab-same":
        config, overrides = MNIST, fflab_same_overrides(hidden, args)
        settings = (
            f"fflab FF {hidden}, label concat, input_norm length, init torch, mean_squares goodness, softplus loss "
            f"theta {args.threshold}, Adam lr {args.lr} (no decay), random negatives, batch {args.batch_size}, "
            "float32, prediction by the goodness of all layers"
        )
    else:
        config, overrides = args.recipe, common_overrides(hidden, args)
        settings = f"{Path(config).name} with --set {' '.join(overrides[:2])} (its own loss, negatives, schedule)"
    r = run_to_target(config, overrides, args.target, 1, args.data_dir, None, log)
    return {
        "side": side,
        "library": "fflab",
        "settings": settings,
        "config": config,
        "overrides": overrides,
        "epochs": r["epochs"],
        "epochs_run": r["epochs_run"],
        "train_samples": r["train_samples"],
        "train_seconds": r["train_seconds"],
        "samples_per_second": r["samples_per_second"],
        "best_epoch_samples_per_second": max(e["samples_per_second"] for e in r["epochs"]),
        "gflop_per_sample": r["gflop_per_sample"],
        "train_gflop_per_second": r["train_gflop_per_second"],
        "epoch_to_target": r["epoch_to_target"],
        "seconds_to_target": r["seconds_to_target"],
        "final_accuracy": r["final_accuracy"],
    }


def ratios(row: dict, peer: dict) -> None:
    """row's speed as multiples of the peer's: samples/s, and training seconds to the target (a lower bound,
    marked '>=', where the peer never reached it)."""
    row["samples_per_second_vs_fflib"] = round(row["samples_per_second"] / peer["samples_per_second"], 2)
    # each side's fastest epoch: less swayed by other work on a shared machine than the means
    best, peer_best = row["best_epoch_samples_per_second"], peer["best_epoch_samples_per_second"]
    row["best_epoch_samples_per_second_vs_fflib"] = round(best / peer_best, 2)
    mine, theirs = row["seconds_to_target"], peer["seconds_to_target"]
    if mine is None:
        row["time_to_target_vs_fflib"] = None
    elif theirs is not None:
        row["time_to_target_vs_fflib"] = round(theirs / mine, 2)
    else:
        row["time_to_target_vs_fflib"] = f">={peer['train_seconds'] / mine:.2f}"


def markdown_row(r: dict) -> str:
    when = (
        f"{r['seconds_to_target']:.1f} s (epoch {r['epoch_to_target']})"
        if r["seconds_to_target"] is not None
        else f"not in {r['epochs_run']} epochs"
    )
    speed = r.get("samples_per_second_vs_fflib")
    faster = r.get("time_to_target_vs_fflib")
    faster = "-" if faster is None else (f"{faster}x" if isinstance(faster, str) else f"{faster:.2f}x")
    return (
        f"| {r['side']} | {r['samples_per_second']:,.0f} | {'-' if speed is None else f'{speed:.2f}x'} | "
        f"{r['train_gflop_per_second']:.1f} | {r['final_accuracy']:.2%} | {when} | {faster} |"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of every side (default 1)")
    parser.add_argument(
        "--train-subset", type=int, default=10000, help="first N training images (default 10000; 0: all 60,000)"
    )
    parser.add_argument("--test-subset", type=int, default=0, help="score the first N test images (default 0: all)")
    parser.add_argument("--target", type=float, default=0.98, help="test accuracy to time (default 0.98)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--hidden", default="2000,2000", help="layer sizes (fflib's example: 2000,2000)")
    parser.add_argument("--batch-size", type=int, default=128, help="fflib's example: 128")
    parser.add_argument("--lr", type=float, default=0.02, help="fflib's example: 0.02 (fflib, fflab-same)")
    parser.add_argument("--threshold", type=float, default=20.0, help="fflib's loss_threshold (fflab's theta): 20")
    parser.add_argument("--recipe", default=MNIST, help="fflab-recipe's config (default configs/mnist-ff.toml)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every side (default 0: all cores)")
    parser.add_argument("--seed", type=int, default=42, help="fflib's example: 42 (fflab's train.seed too)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda, for every side")
    parser.add_argument("--no-peaks", action="store_true", help="skip the matmul peaks")
    parser.add_argument("--data-dir")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines on stderr")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args(argv)
    args.side_list = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(args.side_list) - set(SIDES))
    if unknown or not args.side_list:
        parser.error(f"--sides: unknown {unknown}; choose from {', '.join(SIDES)}")
    try:
        args.hidden_sizes = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        parser.error(f"--hidden {args.hidden!r}: comma-separated layer sizes, e.g. 2000,2000")
    if args.epochs < 1 or args.batch_size < 1 or min(args.hidden_sizes) < 1:
        parser.error("--epochs, --batch-size and --hidden must be positive")
    if args.train_subset < 0 or args.test_subset < 0:
        parser.error("--train-subset and --test-subset are at least 0 (0: the whole set)")
    if not 0 < args.target <= 1:
        parser.error("--target is a fraction in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    hidden = args.hidden_sizes
    # Every side runs under the same process settings: fflab's (threads, denormals flushed, freed memory kept).
    threads = set_threads(args.threads)
    device = torch.device(args.device)
    peaks = None if args.no_peaks else measure_peaks(device)
    if peaks:
        log(f"matmul peaks on {device}, {threads} threads: {peaks} GFLOP/s")
    ds = load_dataset("mnist", data_dir=args.data_dir, progress=False)
    rows = []
    for side in args.side_list:
        log(f"--- {side}")
        rows.append(run_fflib(ds, hidden, args, log) if side == "fflib" else run_fflab(side, hidden, args, log))
    peer = next((r for r in rows if r["side"] == "fflib"), None)
    if peer is not None:
        for r in rows:
            ratios(r, peer)
    commit, dirty = git_commit()
    record = {
        "hidden": hidden,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "train_subset": args.train_subset,
        "test_subset": args.test_subset,
        "target": args.target,
        "seed": args.seed,
        "threads": threads,
        "device": str(device),
        "matmul_peak_gflop_per_second": peaks,
        "sides": rows,
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "git_commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    sizes = "x".join(map(str, hidden))
    n_train = min(args.train_subset or len(ds.train_x), len(ds.train_x))
    out = dated_path(args.results, f"peers-{sizes}-b{args.batch_size}-e{args.epochs}-n{n_train}")
    write_json_atomic(out, record)
    peak_text = (
        f", matmul peaks float32 {peaks['float32']:,.0f} / bfloat16 {peaks['bfloat16']:,.0f} GFLOP/s" if peaks else ""
    )
    print(
        f"network {sizes}, batch {args.batch_size}, {n_train} training images, "
        f"{args.epochs} epoch(s), {threads} threads on {device}{peak_text}; record: {out}"
    )
    for r in rows:
        print(f"- {r['side']}: {r['settings']}")
    print(f"\n| side | samples/s | vs fflib | GFLOP/s | test acc | to {args.target:.0%} | faster to it |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(markdown_row(r))


if __name__ == "__main__":
    main()
