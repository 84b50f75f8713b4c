"""Does a Hebbian run's update still descend the FF loss? A probe of a trained kind = "hebbian" run.

    python benchmarks/hebbian_direction.py RUN_DIR [RUN_DIR ...] [--data-dir DIR]

For each run's first layer it takes the Hebbian update of 1,000 training pairs (true and random wrong
label), gated if the run uses hebbian.post_gate, and reports (1) its cosine with the surrogate gradient
of the same FF loss through the LIF neurons (fast sigmoid, slopes 1 and 5; skipped for analog units,
where the two are equal), and (2) how the FF loss of 2,000 other pairs, with fresh spike draws,
changes after a step along it of 0.3%, 1%, 3% and 10% of |W|.
"""

from __future__ import annotations

import argparse

import torch

from fflab.checkpoint import load_checkpoint
from fflab.data import load_dataset

STEPS = (0.003, 0.01, 0.03, 0.1)


def pairs(model, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoded input train of (x, true label) and (x, random wrong label) pairs, and their targets."""
    gen = torch.Generator().manual_seed(seed)
    wrong = (y + torch.randint(1, model.num_classes, y.shape, generator=gen)) % model.num_classes
    train = model.input_train(torch.cat([x, x]), torch.cat([y, wrong]), gen)
    return train, torch.cat([torch.ones(len(x)), torch.zeros(len(x))])


def probe(run_dir: str, data_dir: str | None) -> str:
    model, cfg, _ = load_checkpoint(run_dir)
    layer = model.layers[0]
    ds = load_dataset(cfg.data.name, data_dir=data_dir, progress=False)
    batch = pairs(model, ds.train_x[:1000], ds.train_y[:1000], seed=0)
    held_out = pairs(model, ds.train_x[1000:3000], ds.train_y[1000:3000], seed=1)
    w0 = layer.weight.detach().clone()

    def loss(w: torch.Tensor, data: tuple[torch.Tensor, torch.Tensor], grad: bool = False) -> torch.Tensor:
        layer.weight = torch.nn.Parameter(w, requires_grad=grad)
        with torch.set_grad_enabled(grad):
            return layer.loss(layer.simulate(data[0], learning=False)[0], data[1])

    with torch.no_grad():
        post, _, pre, gate = layer.simulate(batch[0], learning=True)
        hebb = layer.update_direction(pre, post, batch[1], gate)
    out = [f"{run_dir}: FF loss {loss(w0, held_out).item():.4f}"]
    if layer.lif is not None:
        for slope in (1.0, 5.0):
            layer.lif.slope = slope
            w = w0.clone()
            loss(w, batch, grad=True).backward()
            cos = torch.nn.functional.cosine_similarity(hebb.flatten(), -layer.weight.grad.flatten(), 0)
            out.append(f"cosine with the surrogate gradient (slope {slope:g}): {cos.item():.3f}")
    base = loss(w0, held_out).item()
    for size in STEPS:
        changed = loss(w0 + size * w0.norm() / hebb.norm() * hebb, held_out).item() - base
        out.append(f"step {size:.1%} of |W|: held-out loss {changed:+.4f}")
    layer.weight = torch.nn.Parameter(w0, requires_grad=False)
    return "\n  ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    torch.manual_seed(0)
    for run in args.runs:
        print(probe(run, args.data_dir))


if __name__ == "__main__":
    main()
