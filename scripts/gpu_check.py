"""The GPU check: CUDA tests, GPU throughput, time to 98% on the GPU, and 4-worker pipeline scaling on 16 CPU cores.

Run through scripts/gpu-check, which picks the Python (see there). Steps, in this order, each in its own process
with a time limit taken from one budget (--budget, default 540 s, so that the whole check ends inside 10 minutes):

  env               the GPU (nvidia-smi, torch), torch and Python versions, CPU model and cores, git commit
  cuda-tests        pytest tests/test_devices.py (its CUDA tests run where torch sees a GPU, else they skip)
  throughput        benchmarks/train_step.py's step_rate on the GPU: mnist-ff (float32, bfloat16), the 4x2000
                    network of mnist-hinton's size (float32, bfloat16) and cifar10-conv (precision auto), with
                    the GPU's and the CPU's float32 and bfloat16 matmul peaks
  pipeline          benchmarks/parallel.py's run_setting on the CPU cores: mnist-ff on 4x2000 layers, one
                    process on all cores, and layer-parallel pipelines of 1 worker (all cores; cores/4 threads)
                    and of 4 workers with cores/4 threads each; speed-ups of 4 workers over 1
  time-to-accuracy  benchmarks/time_to_accuracy.py configs/mnist-ff.toml --target 0.98 on the GPU
  pipeline-cli      `fflab train configs/mnist-ff.toml --parallel pipeline --workers 4` (and --workers 1) on the
                    4x2000 layers, train.threads = all cores, one epoch of a subset: the CLI end to end

--dry-run runs the same steps on this machine's CPU with tiny sizes (CUDA tests skip, the GPU throughput runs on
the CPU). Records go to --out (default $OUT, else ./gpu-check-out): gpu-check.json (the environment, every step's
status, time and headline figures), one JSON per step and gpu-check.log (everything the steps printed): 7 files.

--pack-data DIR copies what the steps read into DIR, for a machine that cannot download: mnist/ and a
cifar10-jpeg.tar of the first --cifar-per-class training and a fifth as many test images of each class (about
30 MB in all with the default 1,000). scripts/gpu-check reads runs/gpu-data when it is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))  # benchmarks/records.py: the machine and commit a record names
STEPS = ("env", "cuda-tests", "throughput", "pipeline", "time-to-accuracy", "pipeline-cli")
FOUR = "model.hidden=[2000,2000,2000,2000]"  # the 4x2000 network (mnist-hinton's layer sizes)

# What each step runs, on the GPU machine and in the CPU dry run.
SIZES = {
    "gpu": {
        "limits": {"cuda-tests": 180, "throughput": 150, "pipeline": 150, "time-to-accuracy": 180, "pipeline-cli": 150},
        "throughput": {
            "steps": 50,
            "repeats": 3,
            "runs": [
                ("mnist-ff", "configs/mnist-ff.toml", []),
                ("mnist-ff bfloat16", "configs/mnist-ff.toml", ["train.precision=bfloat16"]),
                ("mnist-ff 4x2000", "configs/mnist-ff.toml", [FOUR]),
                ("mnist-ff 4x2000 bfloat16", "configs/mnist-ff.toml", [FOUR, "train.precision=bfloat16"]),
                ("cifar10-conv", "configs/cifar10-conv.toml", []),
            ],
            "peaks": {},
        },
        "pipeline": {"config": "configs/mnist-ff.toml", "overrides": [FOUR], "steps": 40},
        "time-to-accuracy": ["configs/mnist-ff.toml", "--target", "0.98"],
        "pipeline-cli": [FOUR, "data.train_subset=12000", "data.test_subset=2000"],
    },
    "dry": {
        "limits": {"cuda-tests": 240, "throughput": 240, "pipeline": 240, "time-to-accuracy": 180, "pipeline-cli": 240},
        "throughput": {
            "steps": 2,
            "repeats": 1,
            "runs": [
                ("mnist-ff", "configs/mnist-ff.toml", ["model.hidden=[64,64]"]),
                ("mnist-ff bfloat16", "configs/mnist-ff.toml", ["model.hidden=[64,64]", "train.precision=bfloat16"]),
                ("cifar10-conv", "configs/cifar10-conv.toml", ["model.hidden=[10,10,10,10]"]),
            ],
            "peaks": {"sizes": (256,), "repeats": 2, "rounds": 1},
        },
        "pipeline": {"config": "configs/mnist-ff.toml", "overrides": ["model.hidden=[64,64,64,64]"], "steps": 3},
        "time-to-accuracy": ["configs/digits-ff.toml", "--target", "0.5", "--set", "train.epochs=2", "--quick-peaks"],
        "pipeline-cli": ["model.hidden=[64,64,64,64]", "data.train_subset=1000", "data.test_subset=200"],
    },
}


class Check:
    """One check's output folder, log and time budget."""

    def __init__(self, out: Path, budget: float, dry: bool) -> None:
        self.out, self.dry = out, dry
        self.limits = SIZES["dry" if dry else "gpu"]["limits"]
        self.deadline = time.monotonic() + budget
        self.log_file = open(out / "gpu-check.log", "a", buffering=1)  # noqa: SIM115 (open for the whole check)
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(BENCH), os.environ.get("PYTHONPATH", "")]),
            "FFLAB_CACHE": str(self.tmp / "cache"),  # decoded images stay out of the user's cache
        }

    def log(self, text: str) -> None:
        print(text, flush=True)
        self.log_file.write(text + "\n")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, command: list[str], limit: float) -> tuple[int | None, str]:
        """Run `command` (its own process group, so that workers it starts end with it) for at most `limit`
        seconds; its output goes to the log. Returns (exit code, or None on timeout; output)."""
        self.log(f"$ {' '.join(command)}")
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=max(limit, 1))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            code = None
            output += f"\n[stopped after {limit:.0f} s]\n"
        self.log_file.write(output)
        return code, output

    def write(self, name: str, record: dict) -> str:
        path = self.out / name
        path.write_text(json.dumps(record, indent=2) + "\n")
        return name


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def environment() -> dict:
    """What ran the check: GPU, torch, Python, CPU, git commit."""
    import torch
    from records import cpu_model, git_commit

    commit, dirty = git_commit()
    record = {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "git_commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record["gpu"] = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "capability": list(torch.cuda.get_device_capability(0)),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        record["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    return record


def pytest_counts(output: str) -> dict:
    """passed/failed/skipped/error counts from pytest's closing line."""
    import re

    last = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    counts = {}
    if last:
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last[-1]):
            counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return counts


# --- steps run in their own process (python scripts/gpu_check.py _NAME JSON_OUT MODE) ---


def step_throughput(mode: str, out: str) -> None:
    import torch
    import train_step

    from fflab.perf import matmul_peak_gflops, set_threads

    sizes = SIZES[mode]["throughput"]
    device = "cuda" if mode == "gpu" else "cpu"
    threads = set_threads(0)
    rows = []
    for name, config, overrides in sizes["runs"]:
        start = time.perf_counter()
        try:
            r = train_step.step_rate(config, sizes["steps"], sizes["repeats"], [*overrides, f"train.device={device}"])
            r["samples_per_second"] = round(r["samples_per_second"], 1)
            r["gflop_per_second"] = round(r["gflop_per_second"], 1)
        except Exception as e:  # one config failing should not hide the others' figures
            r = {"error": f"{type(e).__name__}: {e}"}
        rows.append(
            {"name": name, "config": config, "overrides": overrides, **r, "seconds": time.perf_counter() - start}
        )
        print(f"{name}: {r}", flush=True)
    peaks = {}
    places = ["cuda", "cpu"] if device == "cuda" else ["cpu"]
    for place in places:
        options = sizes["peaks"] if place == "cpu" or mode == "dry" else {}
        peaks[place] = {
            p: round(matmul_peak_gflops(device=place, precision=p, **options), 1) for p in ("float32", "bfloat16")
        }
    print(f"matmul peaks (GFLOP/s): {peaks}", flush=True)
    record = {"device": device, "threads": threads, "steps": sizes["steps"], "repeats": sizes["repeats"]}
    record |= {"rows": rows, "matmul_peak_gflop_per_second": peaks, "torch": torch.__version__}
    Path(out).write_text(json.dumps(record, indent=2))


def step_pipeline(mode: str, out: str) -> None:
    import parallel

    from fflab.config import load_config
    from fflab.training.parallel import ParallelPlan

    sizes = SIZES[mode]["pipeline"]
    cores = os.cpu_count() or 1
    per = max(1, cores // 4)
    cfg = load_config(str(ROOT / sizes["config"]), [*sizes["overrides"], "train.device=cpu"])
    one, four = ParallelPlan.create("pipeline", 1), ParallelPlan.create("pipeline", 4)
    settings = [
        (f"single process, {cores} threads", None, cores),
        (f"pipeline, 1 worker, {cores} threads", one, cores),
        (f"pipeline, 1 worker, {per} thread{'s' * (per > 1)}", one, per),
        (f"pipeline, 4 workers, {per} thread{'s' * (per > 1)} each", four, per),
    ]
    rows = []
    for name, plan, threads in settings:
        row = parallel.run_setting(cfg, name, plan, threads, sizes["steps"])
        rows.append(row)
        print(f"{name}: {row['samples_per_second']:,.0f} samples/s, busy {row['worker_busy']}", flush=True)
    rate = {r["setting"]: r["samples_per_second"] for r in rows}
    four_rate = rate[settings[3][0]]
    record = {
        "config": sizes["config"],
        "overrides": sizes["overrides"],
        "steps": sizes["steps"],
        "cores": cores,
        "rows": rows,
        "speedup_4_workers_vs_1_worker_same_cores": round(four_rate / rate[settings[1][0]], 2),
        "speedup_4_workers_vs_1_worker_same_threads_per_worker": round(four_rate / rate[settings[2][0]], 2),
        "speedup_4_workers_vs_single_process": round(four_rate / rate[settings[0][0]], 2),
    }
    print({k: v for k, v in record.items() if k.startswith("speedup")}, flush=True)
    Path(out).write_text(json.dumps(record, indent=2))


# --- the orchestration ---


def do_cuda_tests(check: Check) -> dict:
    command = python_command("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_devices.py")
    code, output = check.run(command, min(check.limits["cuda-tests"], check.left()))
    counts = pytest_counts(output)
    record = {"command": " ".join(command[1:]), "exit_code": code, **counts}
    status = "ok" if code == 0 else ("timeout" if code is None else "failed")
    headline = ", ".join(f"{n} {w}" for w, n in counts.items()) or "no pytest summary"
    return {"status": status, "file": check.write("cuda-tests.json", record), "headline": headline}


def do_inner(check: Check, name: str, file: str) -> dict:
    """A step that runs in its own process through this script's _NAME entry, writing its record to `file`."""
    target = check.tmp / file
    mode = "dry" if check.dry else "gpu"
    code, _ = check.run(python_command(__file__, f"_{name}", mode, str(target)), min(check.limits[name], check.left()))
    if code != 0 or not target.exists():
        return {"status": "timeout" if code is None else "failed", "exit_code": code}
    record = json.loads(target.read_text())
    if name == "throughput":
        headline = "; ".join(
            f"{r['name']}: {r['samples_per_second']:,.0f} samples/s, {r['gflop_per_second']:,.0f} GFLOP/s"
            if "error" not in r
            else f"{r['name']}: {r['error'][:80]}"
            for r in record["rows"]
        )
        headline += f"; peaks {record['matmul_peak_gflop_per_second']}"
        failed = any("error" in r for r in record["rows"])
    else:
        headline = (
            f"4 workers vs 1 worker: {record['speedup_4_workers_vs_1_worker_same_cores']}x on the same cores, "
            f"{record['speedup_4_workers_vs_1_worker_same_threads_per_worker']}x at the same threads per worker"
        )
        failed = False
    return {"status": "failed" if failed else "ok", "file": check.write(file, record), "headline": headline}


def do_time_to_accuracy(check: Check) -> dict:
    results = check.tmp / "tta"
    args = list(SIZES["dry" if check.dry else "gpu"]["time-to-accuracy"])
    device = "cpu" if check.dry else "cuda"
    command = python_command(
        "benchmarks/time_to_accuracy.py", *args, "--set", f"train.device={device}", "--results", str(results)
    )
    code, output = check.run(command, min(check.limits["time-to-accuracy"], check.left()))
    written = sorted(results.glob("*.json")) if results.exists() else []
    if code != 0 or not written:
        return {"status": "timeout" if code is None else "failed", "exit_code": code}
    record = json.loads(written[0].read_text())
    seconds = record["seconds_to_target"]
    headline = (
        f"{record['target']:.0%} after {seconds:.1f} s of training (epoch {record['epoch_to_target']})"
        if seconds is not None
        else f"{record['target']:.0%} not reached in {record['epochs_run']} epochs "
        f"(best {record['best_scored_accuracy']:.2%})"
    )
    headline += f"; final {record['final_accuracy']:.2%}, {record['samples_per_second']:,.0f} samples/s"
    return {"status": "ok", "file": check.write("time-to-accuracy.json", record), "headline": headline}


def do_pipeline_cli(check: Check) -> dict:
    cores = os.cpu_count() or 1
    sets = [
        *SIZES["dry" if check.dry else "gpu"]["pipeline-cli"],
        f"train.threads={cores}",
        "train.device=cpu",
        "train.epochs=1",
        "train.monitor_size=0",
        "eval.train_accuracy=false",
    ]
    runs = {}
    for workers in (1, 4):
        run_dir = check.tmp / f"cli-{workers}"
        command = python_command(
            "-m", "fflab", "train", "configs/mnist-ff.toml", "--no-progress", "--out", str(run_dir)
        )
        command += ["--parallel", "pipeline", "--workers", str(workers)]
        for s in sets:
            command += ["--set", s]
        code, _ = check.run(command, min(check.limits["pipeline-cli"] / 2, check.left()))
        if code != 0 or not (run_dir / "summary.json").exists():
            return {"status": "timeout" if code is None else "failed", "exit_code": code, "workers": workers}
        summary = json.loads((run_dir / "summary.json").read_text())
        runs[workers] = {
            k: summary.get(k) for k in ("samples_per_second", "train_seconds", "test_accuracy", "threads", "parallel")
        }
    speedup = round(runs[4]["samples_per_second"] / runs[1]["samples_per_second"], 2)
    record = {"config": "configs/mnist-ff.toml", "overrides": sets, "runs": runs, "speedup_4_workers_vs_1": speedup}
    headline = (
        f"fflab train --parallel pipeline: 4 workers {runs[4]['samples_per_second']:,.0f} samples/s, "
        f"1 worker {runs[1]['samples_per_second']:,.0f} ({speedup}x), train.threads={cores}"
    )
    return {"status": "ok", "file": check.write("pipeline-cli.json", record), "headline": headline}


def pack_data(source: Path, dest: Path, per_class: int) -> None:
    """Copy mnist/ and a class-balanced subset of cifar10-jpeg.tar from `source` into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "mnist", dest / "mnist", dirs_exist_ok=True)
    keep = {"train": per_class, "test": max(1, per_class // 5)}
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(source / "cifar10-jpeg.tar") as src, tarfile.open(dest / "cifar10-jpeg.tar", "w") as out:
        for member in src:
            parts = Path(member.name).parts  # cifar10-jpeg/<split>/<class>/<file>
            if member.isfile():
                if len(parts) < 4 or parts[-3] not in keep:
                    continue
                key = (parts[-3], parts[-2])
                if counts.get(key, 0) >= keep[parts[-3]]:
                    continue
                counts[key] = counts.get(key, 0) + 1
                out.addfile(member, src.extractfile(member))
            elif member.isdir():
                out.addfile(member)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"packed {dest}: mnist/ and cifar10-jpeg.tar ({sum(counts.values())} images), {size / 2**20:.1f} MiB")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] in ("_throughput", "_pipeline"):
        {"_throughput": step_throughput, "_pipeline": step_pipeline}[sys.argv[1]](sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on this CPU, tiny sizes, no CUDA")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"))
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps together (default 540)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--python-source", default="", help="how scripts/gpu-check chose this Python (recorded)")
    parser.add_argument("--pack-data", metavar="DIR", type=Path, help="copy the data the steps read into DIR; exit")
    parser.add_argument("--cifar-per-class", type=int, default=1000, help="--pack-data: training images per class")
    args = parser.parse_args()
    if args.pack_data:
        source = Path(os.environ.get("FFLAB_DATA") or ROOT.parent / "shared" / "datasets")
        if source.resolve() == args.pack_data.resolve():
            parser.error(f"--pack-data {args.pack_data}: that is where the data is read from (FFLAB_DATA)")
        pack_data(source, args.pack_data, args.cifar_per_class)
        return
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if set(steps) - set(STEPS):
        parser.error(f"--steps: unknown {sorted(set(steps) - set(STEPS))}")
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.budget, args.dry_run)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    env = environment()
    env["python_source"] = args.python_source
    env["fflab_data"] = os.environ.get("FFLAB_DATA")
    check.log(f"gpu-check ({'dry run, CPU' if args.dry_run else 'GPU'}) -> {args.out}: {json.dumps(env)}")
    if not args.dry_run and not env["cuda_available"]:
        check.log("torch sees no CUDA GPU: run with --dry-run on a machine without one")
        sys.exit(2)
    record = {"mode": "dry-run" if args.dry_run else "gpu", "started": started, "budget_s": args.budget, "env": env}
    record["steps"] = {}
    actions = {
        "cuda-tests": lambda: do_cuda_tests(check),
        "throughput": lambda: do_inner(check, "throughput", "throughput.json"),
        "pipeline": lambda: do_inner(check, "pipeline", "pipeline.json"),
        "time-to-accuracy": lambda: do_time_to_accuracy(check),
        "pipeline-cli": lambda: do_pipeline_cli(check),
    }
    for name in steps:
        if name == "env":
            continue
        if check.left() < 20:
            record["steps"][name] = {"status": "skipped", "why": "the time budget is spent"}
            check.log(f"== {name}: skipped, the time budget is spent")
            continue
        check.log(f"== {name} ({check.left():.0f} s of the budget left)")
        start = time.perf_counter()
        try:
            result = actions[name]()
        except Exception as e:  # record and go on: the other steps' figures still count
            result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.perf_counter() - start, 1)
        record["steps"][name] = result
        check.log(f"== {name}: {result['status']} in {result['seconds']} s; {result.get('headline', '')}")
        check.write("gpu-check.json", record)
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    record["ok"] = all(s["status"] == "ok" for s in record["steps"].values())
    check.write("gpu-check.json", record)
    check.log("\n| step | status | seconds | figures |\n|---|---|---|---|")
    for name, s in record["steps"].items():
        check.log(f"| {name} | {s['status']} | {s.get('seconds', '-')} | {s.get('headline', s.get('why', ''))} |")
    shutil.rmtree(check.tmp, ignore_errors=True)
    sys.exit(0 if record["ok"] else 1)


if __name__ == "__main__":
    main()
