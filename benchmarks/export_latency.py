"""Prediction latency per 1,000 images: a network exported to ONNX and run by onnxruntime, against fflab's own
prediction (`fflab.load(RUN).predict_proba`, the same logits and probabilities), on one machine, same threads.

    FFLAB_DATA=../shared/datasets python benchmarks/export_latency.py [RUN_DIR ...] [--config mnist-ff ...]
        [--images 1000] [--repeats 5] [--threads 1] [--results benchmarks/results]

A RUN_DIR is a trained run; a --config is built untrained from a shipped config for its data set's image shape
(latency does not depend on the weights; `train.precision` is set to float32, as ONNX computes). Inputs are the
first --images test images (random ones if the data set is not there). Two timings per network, each the median
of --repeats:
  batch    - all images in one call (throughput: what scoring a folder costs),
  single   - one call per image, 1,000 calls (what a service answering one request at a time pays),
and whether the ONNX graph predicted the same class as fflab for every image. The record goes to
benchmarks/results/export-latency-<date>-<time>.json. Default configs: mnist-ff, mnist-conv, mnist-backprop.
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import REPO, RESULTS, cpu_model, dated_path, git_commit  # noqa: E402

import fflab  # noqa: E402
from fflab.checkpoint import save_checkpoint  # noqa: E402
from fflab.config import load_config  # noqa: E402
from fflab.errors import FFLabError  # noqa: E402
from fflab.export import export_onnx  # noqa: E402
from fflab.io import write_json_atomic  # noqa: E402
from fflab.models import build_model  # noqa: E402
from fflab.training.data import load_for_config  # noqa: E402

DEFAULT_CONFIGS = ("mnist-ff", "mnist-conv", "mnist-backprop")


def untrained_run(config: str, folder: Path) -> tuple[Path, torch.Tensor | None]:
    """A run directory holding an untrained network of `config` (float32), and the data set's test images."""
    cfg = load_config(REPO / "configs" / f"{config}.toml", ["train.precision=float32"])
    try:
        ds = load_for_config(cfg, None, progress=False)
        shape, names, test_x = ds.input_shape, list(ds.class_names), ds.test_x
    except FFLabError:  # the data set is not here: the MNIST family's shape, random images
        shape, names, test_x = (1, 28, 28), [str(i) for i in range(10)], None
    torch.manual_seed(0)
    model = build_model(cfg, math.prod(shape), len(names), input_shape=tuple(shape))
    meta = {
        "dataset": cfg.data.name,
        "input_dim": math.prod(shape),
        "input_shape": list(shape),
        "num_classes": len(names),
        "class_names": names,
    }
    save_checkpoint(folder, model, cfg, **meta)
    return folder, test_x


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, ONNX Runtime's graph preparation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(run_dir: Path, x: torch.Tensor | None, images: int, repeats: int, threads: int, workdir: Path) -> dict:
    import onnxruntime as ort

    model = fflab.load(run_dir)
    if x is None:
        try:
            x = load_for_config(model.config, None, progress=False).test_x
        except FFLabError:
            x = torch.rand(images, *model.input_shape, generator=torch.Generator().manual_seed(0))
    x = x[:images].contiguous()
    path = export_onnx(model, workdir / f"{run_dir.name}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    arr = x.numpy()

    def ort_batch():
        return session.run(["probabilities"], {"images": arr})[0]

    def ort_single():
        for i in range(len(arr)):
            session.run(["probabilities"], {"images": arr[i : i + 1]})

    def fflab_batch():
        return model.predict_proba(x)

    def fflab_single():
        for i in range(len(x)):
            model.predict_proba(x[i : i + 1])

    same = int((ort_batch().argmax(1) == fflab_batch().argmax(1)).sum())
    per_1000 = 1000 / len(x)
    timings = {
        "onnxruntime_batch_s": median_seconds(ort_batch, repeats) * per_1000,
        "fflab_batch_s": median_seconds(fflab_batch, repeats) * per_1000,
        "onnxruntime_single_s": median_seconds(ort_single, max(1, repeats // 2)) * per_1000,
        "fflab_single_s": median_seconds(fflab_single, max(1, repeats // 2)) * per_1000,
    }
    return {
        "run": str(run_dir),
        "config": model.config.name,
        "kind": model.kind,
        "architecture": model.config.model.architecture,
        "hidden": list(model.config.model.hidden),
        "method": model.method,
        "parameters": sum(p.numel() for p in model.network.parameters()),
        "onnx_bytes": path.stat().st_size,
        "images": len(x),
        "same_class": same,
        **{k: round(v, 4) for k, v in timings.items()},
        "batch_speedup": round(timings["fflab_batch_s"] / timings["onnxruntime_batch_s"], 2),
        "single_speedup": round(timings["fflab_single_s"] / timings["onnxruntime_single_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="trained runs to measure")
    parser.add_argument("--config", action="append", default=[], help="a shipped config, built untrained")
    parser.add_argument("--images", type=int, default=1000, help="images per measurement (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is kept (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON record")
    args = parser.parse_args(argv)
    import onnxruntime

    torch.set_num_threads(args.threads)
    configs = args.config or ([] if args.runs else list(DEFAULT_CONFIGS))
    started = datetime.datetime.now(datetime.UTC)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        targets = [(Path(r), None) for r in args.runs]
        targets += [untrained_run(c, work / c) for c in configs]
        for run_dir, x in targets:
            row = measure(run_dir, x, args.images, args.repeats, args.threads, work)
            if str(run_dir).startswith(tmp):
                row["run"] = f"untrained {row['config']}"
            rows.append(row)
            print(
                f"{row['run']}: {row['kind']} {row['architecture']} {row['hidden']}, per 1,000 images: "
                f"batch fflab {row['fflab_batch_s']:.3f}s / onnxruntime {row['onnxruntime_batch_s']:.3f}s "
                f"({row['batch_speedup']}x); one at a time fflab {row['fflab_single_s']:.2f}s / onnxruntime "
                f"{row['onnxruntime_single_s']:.2f}s ({row['single_speedup']}x); same class "
                f"{row['same_class']}/{row['images']}",
                flush=True,
            )
    commit, dirty = git_commit()
    record = {
        "benchmark": "export_latency",
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fflab_version": fflab.__version__,
        "commit": commit,
        "dirty": dirty,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu": cpu_model(),
        "threads": args.threads,
        "repeats": args.repeats,
        "note": "seconds per 1,000 images, median of repeats; the machine may be shared (indicative figures)",
        "results": rows,
    }
    out = dated_path(args.results, "export-latency", started)
    write_json_atomic(out, record)
    print(f"record written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
