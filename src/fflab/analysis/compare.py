"""`fflab analyze`: held-out latents of trained runs, their statistics, similarity and cost, and plots.

Works on any run directory: latents are each model's own (`model.latents`: activities for a neutral
label, averaged over time for recurrent and spiking networks) on the run's held-out split: the test set,
or the validation rows of a run trained with data.validation. For two or more runs on the same samples,
linear CKA compares their representations sample by sample.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save

from fflab.analysis.metrics import hoyer_sparsity, knn_accuracy, linear_cka, pca_2d
from fflab.analysis.plots import plot_latent_pca, plot_spike_raster, plot_unit_activity_histograms
from fflab.checkpoint import WEIGHTS, load_checkpoint
from fflab.errors import FFLabError
from fflab.families import family_of
from fflab.io import write_bytes_atomic, write_json_atomic
from fflab.perf import compute_precision, set_threads
from fflab.training.data import evaluation_split, load_for_config
from fflab.training.evaluate import evaluate, primary_method
from fflab.training.inputs import reuse_inputs

LATENTS = "latents.safetensors"


def stored_accuracy(run_dir: Path, cfg, dataset: str, samples: int, held_out_size: int) -> float | None:
    """The run's own held-out accuracy from summary.json when it measured exactly what analysis would (the
    whole held-out split, same data and prediction method, no model saved after it), else None. Spares
    recurrent runs a second pass over 10 labels x all steps x the held-out set."""
    summary_path, model_path = run_dir / "summary.json", run_dir / WEIGHTS
    split = evaluation_split(cfg)
    if samples != held_out_size or not summary_path.exists():
        return None
    if model_path.exists() and model_path.stat().st_mtime > summary_path.stat().st_mtime:
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError:
        return None
    same = (
        summary.get("dataset") == dataset
        and summary.get(f"{split}_samples") == held_out_size
        and summary.get("predict") == primary_method(cfg)
    )
    accuracy = summary.get(f"{split}_accuracy")
    return float(accuracy) if same and accuracy is not None else None


def analyze_run(run_dir: Path, data_dir: str | None, samples: int, progress: bool) -> dict:
    """Latents (saved into the run directory) and their statistics for one run's held-out split."""
    model, cfg, _ = load_checkpoint(run_dir)
    ds = load_for_config(*reuse_inputs(run_dir, cfg, data_dir), progress)  # the run's own data, unless told
    x, y = ds.test_x[:samples], ds.test_y[:samples]
    model.eval()
    start = time.perf_counter()
    accuracy, accuracy_source = stored_accuracy(run_dir, cfg, ds.name, len(x), len(ds.test_x)), "summary.json"
    if accuracy is None:
        with compute_precision(cfg.train.precision, "cpu"):  # the run's own precision, as `fflab eval` scores it
            accuracy = evaluate(model, x, y, cfg.eval.batch_size, primary_method(cfg))["accuracy"]
        accuracy_source = "evaluated"
    family = family_of(model)
    z = family.latents(model, x)
    with torch.no_grad():
        trains = family.spike_trains(model, x[:1000])  # for cost, firing rates and a raster
    write_bytes_atomic(run_dir / LATENTS, save({"latents": z.contiguous(), "labels": y.contiguous()}))
    stats = {
        "run": str(run_dir),
        "name": run_dir.name,
        "model": cfg.model.kind,
        "spiking": trains is not None,
        "dataset": ds.name,
        "split": evaluation_split(cfg),  # the loader put validation rows in the test split's place
        "samples": len(x),
        "accuracy": accuracy,
        "accuracy_source": accuracy_source,
        "latent_units": z.shape[1],
        "hoyer_sparsity": hoyer_sparsity(z),
        "knn5_accuracy": knn_accuracy(z, y, 5),
        "silent_fraction": (z == 0).float().mean().item(),
        **family.inference_cost(model, trains, static_input=x.dim() != 3),  # [N, T, D] is a sequence
        "seconds": 0.0,
    }
    stats["seconds"] = round(time.perf_counter() - start, 2)
    first_layer_spikes = trains[1][0] if trains is not None else None  # [T, N, H]
    return {"stats": stats, "latents": z, "labels": y, "first_layer_spikes": first_layer_spikes}


def analyze_runs(
    run_dirs: list[str | Path],
    out: str | Path,
    *,
    data_dir: str | None = None,
    samples: int = 10000,
    threads: int = 0,
    progress=True,
) -> dict:
    """Analyse each run, compare every pair by CKA, write out/analysis.json and out/plots/*.png."""
    if not run_dirs:
        raise FFLabError("fflab analyze needs at least one run directory")
    set_threads(threads)
    out = Path(out)
    runs = [analyze_run(Path(d), data_dir, samples, progress) for d in run_dirs]
    similarity = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            a, b = runs[i], runs[j]
            n = min(len(a["labels"]), len(b["labels"]))  # runs on subsets of one split share their first rows
            same_split = all(a["stats"][k] == b["stats"][k] for k in ("dataset", "split"))
            if not same_split or not torch.equal(a["labels"][:n], b["labels"][:n]):
                raise FFLabError(
                    f"{a['stats']['run']} ({a['stats']['split']}) and {b['stats']['run']} ({b['stats']['split']}) "
                    "were not evaluated on the same samples; CKA compares representations of the same inputs"
                )
            cka = linear_cka(a["latents"][:n], b["latents"][:n])
            similarity.append({"a": a["stats"]["name"], "b": b["stats"]["name"], "samples": n, "linear_cka": cka})
    result = {"runs": [r["stats"] for r in runs], "similarity": similarity}
    plots = out / "plots"
    n_plot = min(2000, samples)
    plot_latent_pca(
        [(r["stats"]["name"], pca_2d(r["latents"][:n_plot]), r["labels"][:n_plot]) for r in runs],
        plots / "latent_pca.png",
    )
    histograms = []
    for r in runs:
        name, first_layer = r["stats"]["name"], r["first_layer_spikes"]
        if first_layer is not None:
            histograms.append((name, first_layer.mean((0, 1)), "firing rate (spikes per step)"))
            plot_spike_raster(
                first_layer[:, 0],
                plots / f"spike_raster_{name}.png",
                f"{name}: first layer, one {r['stats']['split']} sample",
            )
        else:
            histograms.append((name, r["latents"].mean(0), "mean activity"))
    plot_unit_activity_histograms(histograms, plots / "unit_activity.png")
    write_json_atomic(out / "analysis.json", result)
    return result
