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
from safetensors.torch import save_file

from fflab.analysis.metrics import hoyer_sparsity, knn_accuracy, linear_cka, pca_2d
from fflab.analysis.plots import plot_latent_pca, plot_spike_raster, plot_unit_activity_histograms
from fflab.checkpoint import WEIGHTS, load_checkpoint
from fflab.errors import FFLabError
from fflab.io import atomic_path, write_json_atomic
from fflab.layers.spiking import SpikingFFDense
from fflab.models import FFNetwork, HebbianFFNetwork, RecurrentFFNetwork
from fflab.perf import compute_precision, set_threads
from fflab.training.evaluate import evaluate, primary_method
from fflab.training.run import evaluation_split, load_for_config

LATENTS = "latents.safetensors"


def in_batches(fn, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def latents_of(model, x: torch.Tensor) -> torch.Tensor:
    """The model's latents for x, a chunk at a time (Hebbian encodings from one seeded stream)."""
    if isinstance(model, HebbianFFNetwork):
        gen = model.eval_generator()
        return in_batches(lambda b: model.latents(b, gen), x, 200)
    return in_batches(model.latents, x)


def is_spiking(model) -> bool:
    if isinstance(model, HebbianFFNetwork):
        return model.layers[0].neuron == "lif"
    if isinstance(model, RecurrentFFNetwork):
        return model.layers[0].spiking is not None
    return isinstance(model, FFNetwork) and isinstance(model.layers[0], SpikingFFDense)


@torch.no_grad()
def spike_trains(model, x: torch.Tensor) -> tuple[list, list] | None:
    """(each layer's input train or None where the input is analog, each layer's output spikes), all
    [T, N, .], for a neutral label; None for networks that do not spike."""
    if not is_spiking(model):
        return None
    if isinstance(model, HebbianFFNetwork):
        trains = model.spikes(x)
        return trains[:-1], trains[1:]
    if isinstance(model, RecurrentFFNetwork):  # every layer's spikes at steps 1..window end; inputs: see recurrent_cost
        steps = []
        model.run(x, None, on_step=lambda t, s: steps.append(s), static_up=model.static_up(x))
        return None, [torch.stack([s[i] for s in steps]) for i in range(len(model.layers))]
    outputs = [h.transpose(0, 1) for h in model.activities(model.embedding.neutral(x))]
    return [None, *outputs[:-1]], outputs


def inference_cost(model, trains: tuple[list, list] | None, static_input: bool = True) -> dict:
    """Cost of one forward pass of one input (neutral label): multiply-accumulates for analog networks;
    for spiking ones (given their `spike_trains`) the spikes emitted and the synaptic operations (each
    input spike reaches every unit of the layer it feeds; a layer fed analog values costs its MACs),
    beside the MACs of a dense pass."""
    dense = model.forward_flops() // 2
    if trains is None:
        return {"macs_per_sample": dense}
    inputs, outputs = trains
    n = outputs[0].shape[1]
    if isinstance(model, RecurrentFFNetwork):
        synops, macs = recurrent_cost(model, outputs, static_input)
    else:
        synops = macs = 0.0
        for layer, train in zip(model.layers, inputs, strict=True):
            if train is None:
                macs += layer.forward_flops() / 2
            else:
                synops += (train != 0).sum().item() * layer.out_features / n
    return {
        "spikes_per_sample": sum(o.sum().item() for o in outputs) / n,
        "synops_per_sample": synops,
        "analog_macs_per_sample": macs,
        "dense_macs_per_sample": dense,
    }


def recurrent_cost(model: RecurrentFFNetwork, outputs: list[torch.Tensor], static_input: bool) -> tuple[float, float]:
    """(synaptic ops, MACs) per sample of a spiking recurrent run whose spikes per layer are `outputs`
    [T, N, H]: a unit's spike at step t reaches, at step t + 1, the units of the layers above and below (and
    of its own, with a lateral source) whose fields hold it (`RecurrentLayer.fan_out`); the input (once for a
    static image, else every step) and the neutral label (every step) are analog, costing MACs."""
    steps, n = outputs[0].shape[:2]
    last = len(model.layers) - 1
    frames = 1 if static_input and not model.clock else steps
    synops, macs = 0.0, frames * model.layers[0].up_flops() / 2  # as executed, like the dense pass beside it
    for i, layer in enumerate(model.layers):
        for j, fan_out in zip((i - 1, i + 1, i), layer.fan_out(), strict=True):  # below, above, itself
            if 0 <= j <= last and fan_out.numel():
                synops += (outputs[j][:-1].sum((0, 1)).cpu() * fan_out).sum().item() / n
        if i == last:
            macs += steps * model.num_classes * layer.width
    return synops, macs


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
    ds = load_for_config(cfg, data_dir, progress)
    x, y = ds.test_x[:samples], ds.test_y[:samples]
    model.eval()
    start = time.perf_counter()
    accuracy, accuracy_source = stored_accuracy(run_dir, cfg, ds.name, len(x), len(ds.test_x)), "summary.json"
    if accuracy is None:
        with compute_precision(cfg.train.precision, "cpu"):  # the run's own precision, as `fflab eval` scores it
            accuracy = evaluate(model, x, y, cfg.eval.batch_size, primary_method(cfg))["accuracy"]
        accuracy_source = "evaluated"
    z = latents_of(model, x)
    trains = spike_trains(model, x[:1000])  # for cost, firing rates and a raster
    with atomic_path(run_dir / LATENTS) as tmp:
        save_file({"latents": z.contiguous(), "labels": y.contiguous()}, str(tmp))
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
        **inference_cost(model, trains, static_input=x.dim() != 3),  # [N, T, D] is a sequence
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
