"""Trained networks out of fflab: ONNX for the analog ones, NIR for the spiking ones (`fflab export`).

ONNX (`pip install 'fflab[export]'`: onnx, onnxscript, onnxruntime to check it). The graph takes images
`images` float32 [N, C, H, W] in [0, 1], prepared as `fflab.inference` prepares them, and returns `logits`
[N, classes] and `probabilities` (their softmax): what `fflab.load(RUN).predict_proba` computes, by the run's own
prediction method. For goodness the logits are `forward(x)` (the summed goodness of every candidate label)
times the loss's logit scale over the number of voting layers; for a readout or the backprop head they are
`forward(x)` itself. Class names, input shape and scaling are in the model's metadata_props. Dense,
convolutional and locally connected FF networks, residual FF ("residual-ff"), spatial-goodness FF and the backprop
baseline export; each family says what it cannot export (`Family.export_refusal`).

NIR (the Neuromorphic Intermediate Representation, read by snnTorch, Norse, Lava and neuromorphic chips;
`pip install 'fflab[export]'`: nir, snntorch and nirtorch to check it). The graph is the network's synapses and
LIF neurons, `input -> linear0 -> lif0 -> linear1 -> lif1 ... -> output`, run one step of the input train at a
time; the NIR LIF is continuous-time, and its constants map to fflab's discrete neuron (mem = beta mem + input,
spike when mem > threshold) for a step of `DT` seconds, the step snnTorch's and Norse's importers use:
tau = DT / (1 - beta), r = tau / DT, v_leak = 0, v_reset = 0. What the graph leaves to its host (the spike
encoding of the image and label, and reading goodness and the prediction off the spikes) is written beside it in
`<file>.json`, and `nir_input` computes the input train. What exports:

- neo-Hebbian networks (kind "hebbian") of LIF neurons: every layer (linear synapses, no bias);
- spiking FF (kind "spiking") of one layer: its input normalisation runs on the host, before the graph.

and what cannot, with why (an ExportError says so):

- a neuron that resets by subtracting the threshold (`spiking.reset = "subtract"`, the default): a NIR neuron
  resets its membrane to v_reset, so the spikes would differ; train with `spiking.reset = "zero"` to export;
- a spiking FF layer above the first: it rescales its input spike train by the train's total spike count over
  all steps (`model.input_norm`), which no NIR primitive computes and no streaming chip knows before the last step;
- analog networks (use ONNX), recurrent networks (their layers feed each other both ways over time, with the
  label entering at the top: not written yet).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fflab import __version__
from fflab.errors import ExportError
from fflab.families import family_of
from fflab.inference import Model, chunk_logits, load
from fflab.perf import settle_precision

FORMATS = ("onnx", "nir")
DT = 1e-4  # seconds per simulation step in the NIR graph's time constants (snnTorch's and Norse's importers' step)
NIR_FORMAT = "fflab-nir/1"


def _require(*modules: str) -> None:
    """ExportError naming the extra to install unless every module imports."""
    missing = []
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"exporting needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            "pip install 'fflab[export]'"
        )


# -- ONNX ---------------------------------------------------------------------------------------------------------


class OnnxScores(nn.Module):
    """The graph ONNX receives: images [N, C, H, W] -> (logits, probabilities) by the run's prediction method."""

    def __init__(self, network: nn.Module, method: str) -> None:
        super().__init__()
        self.network, self.method = network, method

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = chunk_logits(self.network, self.method, images)
        return logits, torch.softmax(logits, dim=1)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's chatter (torchvision ops it skips, its progress lines); errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: Model, path: str | Path) -> Path:
    """Write `model`'s network as an ONNX graph (see the module's docstring) to `path`; returns the path."""
    why = family_of(model.network).export_refusal(model.network, "onnx")
    if why:
        raise ExportError(f"{model.run_dir}: {why}")
    _require("onnx", "onnxscript")
    import onnx

    path = Path(path)
    module = OnnxScores(model.network, model.method).eval()
    example = torch.rand(2, *model.input_shape)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=["images"],
                output_names=["logits", "probabilities"],
                dynamic_shapes={"images": {0: torch.export.Dim.DYNAMIC}},
            )
    except Exception as err:  # the exporter's own errors come in many types
        raise ExportError(f"{model.run_dir}: torch could not export the network to ONNX ({err})") from None
    proto = program.model_proto
    c, h, w = model.input_shape
    meta = {
        "fflab_version": __version__,
        "run": str(model.run_dir),
        "kind": model.kind,
        "dataset": model.dataset,
        "method": model.method,
        "input_shape": json.dumps([c, h, w]),
        "class_names": json.dumps(model.classes_.tolist()),
        "input": f"images float32 [N, {c}, {h}, {w}]: {model.expects}",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def check_onnx(path: str | Path, model: Model, x: torch.Tensor) -> dict:
    """Run the ONNX file with onnxruntime on images `x` and compare with fflab computing in float32, as the graph
    does: how many predictions agree, and the largest difference of a probability. A run that computes in
    bfloat16 (`train.precision`) is also compared as fflab scores it, in bfloat16, where images near a class
    boundary can fall the other way."""
    _require("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = x.numpy().astype(np.float32)
    theirs = np.concatenate(
        [session.run(["probabilities"], {"images": images[i : i + 1000]})[0] for i in range(0, len(images), 1000)]
    )

    def agreement(ours: np.ndarray) -> tuple[int, float]:
        return int((ours.argmax(1) == theirs.argmax(1)).sum()), float(abs(ours - theirs).max())

    same, diff = agreement(model.predict_proba(x, precision="float32"))
    report = {"samples": len(images), "same_class": same, "max_probability_difference": diff}
    precision = model.config.train.precision
    if precision == "auto":  # a run saved before runs recorded what "auto" picked: as fflab scores it here
        precision = settle_precision(precision, "cpu")[0]
    if precision != "float32":
        same, diff = agreement(model.predict_proba(x))
        report |= {
            f"same_class_as_fflab_in_{precision}": same,
            f"max_probability_difference_from_{precision}": diff,
            "note": f"the run computes in {precision} (train.precision) and the graph in float32: same_class "
            f"compares the graph with fflab in float32, the {precision} figures with the run's own scores",
        }
    return report


# -- NIR ----------------------------------------------------------------------------------------------------------


def _spiking_layers(network: nn.Module) -> tuple[str, list[nn.Module]]:
    """("hebbian" or "spiking", the layers to write); ExportError saying why when NIR cannot carry the network."""
    from fflab.layers.hebbian import HebbianFFLayer
    from fflab.layers.spiking import SpikingFFDense

    why = family_of(network).export_refusal(network, "nir")
    if why:
        raise ExportError(why)
    layers = list(network.layers)
    if all(isinstance(layer, HebbianFFLayer) for layer in layers):
        family = "hebbian"
    elif all(isinstance(layer, SpikingFFDense) for layer in layers):
        if len(layers) > 1:
            raise ExportError(
                f"this spiking FF network has {len(layers)} layers, and every layer above the first rescales its "
                f"input spike train by the train's total spike count over all {layers[1].steps} steps "
                f"(model.input_norm = {layers[1].input_norm!r}): no NIR primitive computes that, and a streaming "
                "chip cannot know the count before the last step, so the exported spikes would differ. A one-layer "
                "spiking FF network exports (its input normalisation runs on the host)"
            )
        family = "spiking"
    else:
        raise ExportError(
            "NIR export covers networks of fflab's LIF layers (neo-Hebbian or spiking FF); this "
            f"{network.kind!r} network has layers of other types"
        )
    subtract = [i for i, layer in enumerate(layers) if layer.lif.reset != "zero"]
    if subtract:
        raise ExportError(
            "this network's LIF neurons reset by subtracting the threshold after a spike (spiking.reset = "
            f"{layers[subtract[0]].lif.reset!r}); a NIR neuron resets its membrane to v_reset, so the exported "
            "network would spike differently. Train with spiking.reset = 'zero' to export it"
        )
    return family, layers


def _lif_node(lif: nn.Module, units: int):
    """The NIR neuron of fflab's discrete LIF (mem = beta mem + input; spike when mem > threshold; reset to 0)."""
    import nir

    threshold, zeros = np.full(units, float(lif.threshold)), np.zeros(units)
    if lif.beta >= 1.0:  # no leak: integrate-and-fire
        return nir.IF(r=np.ones(units), v_threshold=threshold, v_reset=zeros)
    tau = np.full(units, DT / (1.0 - float(lif.beta)))
    return nir.LIF(tau=tau, r=tau / DT, v_leak=zeros, v_threshold=threshold, v_reset=zeros)


def nir_graph(network: nn.Module):
    """The NIR graph of a spiking network's synapses and neurons (ExportError when NIR cannot carry it)."""
    _require("nir")
    import nir

    family, layers = _spiking_layers(network)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([layers[0].in_features]))}
    edges, previous = [], "input"
    for i, layer in enumerate(layers):
        if family == "hebbian":
            nodes[f"linear{i}"] = nir.Linear(weight=layer.weight.detach().cpu().numpy().astype(np.float32))
        else:
            weight, bias = layer.linear.weight, layer.linear.bias
            nodes[f"linear{i}"] = nir.Affine(
                weight=weight.detach().cpu().numpy().astype(np.float32),
                bias=bias.detach().cpu().numpy().astype(np.float32),
            )
        nodes[f"lif{i}"] = _lif_node(layer.lif, layer.out_features)
        edges += [(previous, f"linear{i}"), (f"linear{i}", f"lif{i}")]
        previous = f"lif{i}"
    nodes["output"] = nir.Output(output_type=np.array([layers[-1].out_features]))
    edges.append((previous, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def nir_input(network: nn.Module, x: torch.Tensor, labels: torch.Tensor, generator=None) -> torch.Tensor:
    """The input train [T, N, D] the NIR graph takes for images `x` [N, C, H, W] with candidate `labels` [N]: the
    encoding fflab's network does before its first synapses (a rate code draws from `generator`, by default the
    network's evaluation seed for neo-Hebbian networks and torch's global generator for spiking FF)."""
    from fflab.spiking import encode

    family, layers = _spiking_layers(network)
    with torch.no_grad():
        if family == "hebbian":
            return network.input_train(x, labels, generator or network.eval_generator())
        layer = layers[0]
        embedded = network.embedding.embed(x.flatten(1), labels)
        if layer.encoder == "direct":
            return layer._normalize(embedded).unsqueeze(0).expand(layer.steps, -1, -1).contiguous()
        train = encode(embedded.clamp(0.0, 1.0), layer.encoder, layer.steps, gain=layer.gain, generator=generator)
        return layer._normalize(train.transpose(0, 1)).transpose(0, 1).contiguous()


def reference_spikes(network: nn.Module, train: torch.Tensor) -> list[torch.Tensor]:
    """fflab's own spikes [T, N, H] of every layer for an input train from `nir_input`."""
    family, layers = _spiking_layers(network)
    with torch.no_grad():
        if family == "hebbian":
            return [spikes for _, _, spikes, _ in network._run_layers(train, learning=False)]
        layer = layers[0]
        return [layer.lif.run(layer.linear(train))]


def _sidecar(model: Model, family: str, layers: list[nn.Module]) -> dict:
    network = model.network
    if family == "hebbian":
        steps, rest = network.steps, network.rest_steps
        encoder = network.encoder
        feed = (
            f"the image (flattened, values in [0, 1]) and the candidate label's code ({network.codes.shape[1]} bits) "
            f"side by side, each encoded by the {encoder!r} code for {steps} steps"
            + (f" then {rest} silent steps" if rest else "")
            + " (`fflab.export.nir_input`); the label codes are in 'label_codes'"
        )
        predict = (
            "run every candidate label; each layer's goodness is the mean over steps of the mean (or sum) of squares "
            f"of its {layers[0].trace_kind} spike trace (decay {layers[0].trace_decay}), P = sigmoid(scale (G - "
            "theta)); the prediction is the label of highest P summed over layers (the graph outputs the last "
            "layer's spikes: read the others at the nodes lif0, lif1, ...)"
        )
        extra = {"label_codes": network.codes.cpu().tolist()}
    else:
        layer = layers[0]
        steps, rest = layer.steps, 0
        feed = (
            f"the image flattened with the candidate label written in (model.label = "
            f"{model.config.model.label!r}), encoded by the {layer.encoder!r} code for {steps} steps and scaled to "
            f"unit {layer.input_norm} over all its values (`fflab.export.nir_input`)"
        )
        predict = (
            f"run every candidate label; goodness is the {layer.goodness_name} of the time-averaged "
            f"{layer.trace_kind} spike trace (decay {layer.trace_decay}); the prediction is the label of highest "
            "goodness"
        )
        extra = {}
    return {
        "format": NIR_FORMAT,
        "fflab_version": __version__,
        "run": str(model.run_dir),
        "kind": model.kind,
        "dataset": model.dataset,
        "input_shape": list(model.input_shape),
        "class_names": model.classes_.tolist(),
        "dt": DT,
        "steps": steps + rest,
        "neuron": "discrete LIF: mem = beta mem + input; spike when mem > threshold; then mem = 0 (nir.LIF with "
        "tau = dt / (1 - beta), r = tau / dt, v_leak = 0, v_reset = 0)",
        "layers": [
            {"units": layer.out_features, "beta": float(layer.lif.beta), "threshold": float(layer.lif.threshold)}
            for layer in layers
        ],
        "input": feed,
        "prediction": predict,
        **extra,
    }


def export_nir(model: Model, path: str | Path) -> Path:
    """Write `model`'s spiking network as a NIR graph to `path`, and what the host does around it to
    `<path>.json`; returns the path."""
    try:
        family, layers = _spiking_layers(model.network)
    except ExportError as err:
        raise ExportError(f"{model.run_dir}: {err}") from None
    _require("nir")
    import nir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), nir_graph(model.network))
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_text(json.dumps(_sidecar(model, family, layers), indent=2) + "\n")
    return path


def snntorch_network(path: str | Path) -> nn.Module:
    """The NIR file at `path` imported into snnTorch (its importer's own messages hidden)."""
    _require("nir", "snntorch", "nirtorch")
    import nir
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):
        return import_from_nir(nir.read(str(path)))


def run_snntorch(net: nn.Module, train: torch.Tensor, layers: int) -> list[torch.Tensor]:
    """Every layer's spikes [T, N, H] when snnTorch's network runs the input train [T, N, D] from rest."""
    outputs: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    handles = [
        getattr(net, f"lif{i}").register_forward_hook(
            lambda _m, _i, out, i=i: outputs[i].append((out[0] if isinstance(out, tuple) else out).detach())
        )
        for i in range(layers)
    ]
    for module in net.modules():
        if hasattr(module, "reset_mem"):
            module.reset_mem()
    try:
        with torch.no_grad():
            for step in train:
                net(step)
    finally:
        for handle in handles:
            handle.remove()
    return [torch.stack(o) for o in outputs]


def check_nir(path: str | Path, network: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict:
    """Load the NIR file into snnTorch, run it on the input trains of images `x` with `labels`, and compare its
    spikes with fflab's: per layer, the spikes fflab fired and how many of the T x N x H values differ."""
    net = snntorch_network(path)
    gen = torch.Generator().manual_seed(0)
    train = nir_input(network, x, labels, gen)
    ours = reference_spikes(network, train)
    theirs = run_snntorch(net, train, len(ours))
    return {
        "samples": len(x),
        "steps": train.shape[0],
        "layers": [
            {"spikes": int(a.sum()), "differing": int((a != b).sum()), "values": a.numel()}
            for a, b in zip(ours, theirs, strict=True)
        ],
    }


# -- the command --------------------------------------------------------------------------------------------------


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """`fflab export RUN_DIR --format FMT`: write the run's network to `out` (default RUN_DIR/model.<fmt>)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")
    model = load(run_dir)
    path = Path(out) if out else Path(run_dir) / f"model.{fmt}"
    return export_onnx(model, path) if fmt == "onnx" else export_nir(model, path)


def verify_export(run_dir: str | Path, fmt: str, path: str | Path, data_dir: str | None = None) -> dict:
    """`fflab export --check`: an ONNX file's predictions on the run's whole held-out set against fflab's, or a
    NIR file's spikes in snnTorch against fflab's on 20 held-out images, each with every candidate label."""
    from fflab.training.data import load_for_config
    from fflab.training.inputs import reuse_inputs

    model = load(run_dir)
    ds = load_for_config(*reuse_inputs(Path(run_dir), model.config, data_dir), progress=False)
    if fmt == "onnx":
        return check_onnx(path, model, ds.test_x)
    n, c = min(20, len(ds.test_x)), len(model.classes_)
    x = ds.test_x[:n].repeat_interleave(c, 0)
    return check_nir(path, model.network, x, torch.arange(c).repeat(n))
