"""Classify your own images with a trained run: `fflab.load(RUN_DIR)` and `fflab predict RUN_DIR INPUT...`.

A run's inputs are prepared as its data set was when it trained: 8-bit pixels divided by 255 (scikit-learn's
digits, 0..16, were divided by 16: an 8-bit image of a digit is divided by 255 all the same), channels first
(C, H, W), grey images as one channel. PNG or JPEG files are decoded as fflab's image-folder reader decodes them
(alpha dropped; a grey image given to a colour run becomes RGB, as in training); IDX files and `.npy` arrays are
read as arrays. Nothing is resized: an input of another size, or a colour image for a run trained on grey ones,
is an InputError that names what the run expects.

What the probabilities mean
---------------------------
Each network predicts with the run's own method (`summary.json`'s "predict", the one its test accuracy
measures), and `predict_proba` is the softmax of that method's logits, so its argmax is the prediction:

- goodness (FF, spiking, recurrent): the logit of class c is the loss's logit scale (alpha for SymBa and the
  competitive loss, 1 for the threshold loss) times the positive-signed goodness with label c written in,
  averaged over the layers that vote. Each layer's loss is a logistic model of exactly those logits, so this is
  the model the network was trained as, extended from pairs of labels to all of them (as
  `FFClassifier.predict_proba` does). Averaging, not summing, the layers keeps correlated evidence from being
  counted once per layer; it leaves the argmax unchanged. These are `forward(x)` times a positive constant.
- goodness (neo-Hebbian): each layer's P = sigmoid(s (G - theta)) that label c is right, averaged over the
  layers; the logit is log(P / (1 - P)), which for one layer is s (G - theta): the softmax then equals that of
  s G, the layer's own logistic model.
- readout, backprop: the linear head's logits, trained with cross-entropy.
- goodness+readout (recurrent): the sum of the two log-softmaxes, renormalised (a product of the two experts).

None of these is calibrated on held-out data: read them as the network's confidence, not as a frequency. For
calibrated probabilities wrap the scores in a calibrator fitted on held-out data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fflab.errors import CheckpointError, FFLabError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SEQUENCE_SETS = ("seq-mnist", "moving-mnist")
EPS = 1e-6  # P of a neo-Hebbian layer is kept inside [EPS, 1 - EPS] before its logit is taken


def _describe_shape(shape: Sequence[int]) -> str:
    """'28x28 grey (1x28x28)' or '32x32 RGB (3x32x32)'."""
    c, h, w = shape
    kind = "grey" if c == 1 else "RGB" if c == 3 else f"{c}-channel"
    return f"{w}x{h} {kind} ({c}x{h}x{w})"


def expectation(shape: Sequence[int], dataset: str = "") -> str:
    """What a run's inputs are, in words: "the run expects 28x28 grey (1x28x28) images (mnist: 8-bit pixels
    divided by 255)."."""
    scaled = (
        "scikit-learn's 0..16 pixel values divided by 16, as 8-bit pixels divided by 255"
        if dataset == "digits"
        else "8-bit pixels divided by 255, values in [0, 1]"
    )
    return f"the run expects {_describe_shape(shape)} images ({dataset + ': ' if dataset else ''}{scaled})."


def _ints_to_unit(array: np.ndarray, name: str, expects: str) -> np.ndarray:
    """Integer pixels 0..255 as float32 in [0, 1]."""
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InputError(
            f"{name} holds integers from {array.min()} to {array.max()}; integer inputs must be 8-bit pixels "
            f"(0..255), which fflab divides by 255; {expects}"
        )
    return np.divide(array, 255, dtype=np.float32)


def _to_unit(array: np.ndarray, name: str, expects: str) -> np.ndarray:
    """The values of `array` as float32 in [0, 1]: 8-bit integers divided by 255, floats as they are."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        return _ints_to_unit(array, name, expects)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{name} holds {array.dtype} values; expected numbers (8-bit pixels or floats in [0, 1])")
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(f"{name} holds NaN or infinite values; inputs must be finite numbers")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < -1e-6 or high > 1 + 1e-6:
        raise InputError(
            f"{name} holds floats from {low:g} to {high:g}; float inputs must be scaled as the run's training data "
            f"was, to [0, 1]; {expects}"
        )
    return np.clip(array, 0.0, 1.0)


def _array_images(array: np.ndarray, shape: tuple[int, int, int], name: str, expects: str) -> np.ndarray:
    """`array` as images [N, C, H, W] of the run's `shape`; InputError naming the accepted layouts otherwise."""
    c, h, w = shape
    dims = tuple(array.shape)
    if dims == (c, h, w):
        out = array[None]
    elif c > 1 and dims == (h, w, c):
        out = array.transpose(2, 0, 1)[None]
    elif c == 1 and dims == (h, w):
        out = array[None, None]
    elif len(dims) == 4 and dims[1:] == (c, h, w):
        out = array
    elif len(dims) == 4 and c > 1 and dims[1:] == (h, w, c):
        out = array.transpose(0, 3, 1, 2)
    elif len(dims) == 3 and c == 1 and dims[1:] == (h, w):
        out = array[:, None]
    elif len(dims) == 2 and dims[1] == c * h * w:
        out = array.reshape(-1, c, h, w)
    elif dims == (c * h * w,):
        out = array.reshape(1, c, h, w)
    else:
        layouts = "[N, C, H, W], [N, H, W, C], [C, H, W], [H, W, C]" if c > 1 else "[N, 1, H, W], [N, H, W], [H, W]"
        raise InputError(
            f"{name} has shape {list(dims)}, which holds no images of the run's size: {expects} Arrays may be "
            f"{layouts} or flat [N, {c * h * w}]."
        )
    return np.ascontiguousarray(out)


def _pixels(image: Any, name: str, shape: tuple[int, int, int], expects: str) -> np.ndarray:
    """A PIL image as uint8 [C, H, W] of the run's `shape`, decoded as fflab's image-folder reader decodes training
    images; InputError when its size or colour does not fit."""
    from fflab.data.imagefolder import COLOUR_MODES, GREY_MODES

    if image.mode in GREY_MODES:
        pixels = np.asarray(image.convert("L"))
    elif image.mode in COLOUR_MODES:
        pixels = np.asarray(image.convert("RGB"))
    else:
        raise InputError(f"{name}: pixel mode {image.mode!r} is not supported (use 8-bit grey or colour images)")
    c, h, w = shape
    if pixels.shape[:2] != (h, w):
        raise InputError(
            f"{name} is {pixels.shape[1]}x{pixels.shape[0]}, but {expects} fflab does not resize: resize it to "
            f"{w}x{h} first."
        )
    if pixels.ndim == 2:
        return np.repeat(pixels[None], c, axis=0)  # grey into a colour run: L -> RGB, as in training
    if c == 1:
        if (pixels == pixels[..., :1]).all():  # a grey picture saved as RGB
            return pixels[None, :, :, 0]
        raise InputError(f"{name} is a colour image, but {expects} Convert it to greyscale first.")
    if c != 3:
        raise InputError(f"{name} is an RGB image, but {expects}")
    return pixels.transpose(2, 0, 1)


def _decode_image(path: Path, shape: tuple[int, int, int], expects: str) -> np.ndarray:
    """One image file as uint8 [C, H, W] (see `_pixels`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return _pixels(image, str(path), shape, expects)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{path} is not a readable image ({type(err).__name__}: {err})") from None


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named, a folder's images (sorted) in place of the folder."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return files


def read_inputs(
    paths: Iterable[str | os.PathLike], shape: Sequence[int], dataset: str = ""
) -> tuple[list[str], np.ndarray]:
    """(a name per input, images float32 [N, C, H, W] in [0, 1]) from image files, folders of images, `.npy`
    arrays and IDX files (gzip or raw), prepared for a run whose inputs are `shape` (C, H, W)."""
    from fflab.data.idx import read_idx

    shape = tuple(int(v) for v in shape)
    expects = expectation(shape, dataset)
    names: list[str] = []
    images: list[np.ndarray] = []
    for path in _expand(paths):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            names.append(str(path))
            images.append(np.divide(_decode_image(path, shape, expects), 255, dtype=np.float32)[None])
            continue
        if suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise InputError(f"{path} is not a readable .npy array ({err})") from None
        else:
            try:
                array = read_idx(path)
            except FFLabError as err:
                raise InputError(
                    f"{path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a .npy array, and not an IDX "
                    f"file: {err}"
                ) from None
        batch = _array_images(_to_unit(array, str(path), expects), shape, str(path), expects)
        names.extend(f"{path}[{i}]" for i in range(len(batch)))
        images.append(batch)
    if not images:
        raise InputError("no inputs given")
    return names, np.concatenate(images)


def _goodness_logits(network: torch.nn.Module, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Logits [N, C] of the goodness method for one chunk of images (see the module's docstring)."""
    from fflab.models import HebbianFFNetwork

    if isinstance(network, HebbianFFNetwork):
        p = network.label_scores(x, generator).mean(2).clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)
    scores = network.label_scores(x)
    chosen = getattr(network, "predict_layers", None) or list(range(scores.shape[2]))
    return network.layers[0].logit_scale * scores[:, :, chosen].mean(2)


def chunk_logits(
    network: torch.nn.Module, method: str, x: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Logits [N, C] of prediction `method` for one chunk of images `x` [N, C, H, W], in one pass (what the ONNX
    graph computes); `generator` draws a neo-Hebbian network's input spikes."""
    if method == "backprop":
        return network(x)
    if method not in ("goodness", "readout", "goodness+readout"):
        raise FFLabError(f"unknown prediction method {method!r}")
    if method == "goodness":
        return _goodness_logits(network, x, generator)
    if getattr(network, "readout", None) is None:
        raise FFLabError(f"this network has no readout to predict by {method!r}")
    readout = network.readout(network.readout_features(x))
    if method == "readout":
        return readout
    goodness = _goodness_logits(network, x, generator).float()
    return goodness.log_softmax(1) + readout.float().log_softmax(1)


def class_logits(network: torch.nn.Module, method: str, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits [N, C] (float64) of prediction `method` ("goodness", "readout", "goodness+readout" or
    "backprop") for images `x` [N, C, H, W]: their softmax is `Model.predict_proba`, their argmax the method's
    prediction. Computed a chunk at a time, as `fflab eval` does: a neo-Hebbian network draws its input spikes
    from its evaluation seed, one stream for the whole set, in chunks of at most 200 images."""
    from fflab.batching import in_batches
    from fflab.models import HebbianFFNetwork

    generator = None
    if isinstance(network, HebbianFFNetwork):
        generator, batch_size = network.eval_generator(), min(batch_size, 200)
    elif method != "backprop" and method != "readout":
        batch_size = max(1, batch_size // network.num_classes)  # every candidate label runs as a row
    with torch.no_grad():
        return in_batches(lambda b: chunk_logits(network, method, b, generator).double(), x, batch_size)


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.")


def _is_image_object(obj: Any) -> bool:
    return isinstance(obj, np.ndarray | torch.Tensor) or _is_pil(obj)


class Model:
    """A trained fflab run, ready to classify images (`fflab.load(RUN_DIR)`).

    `predict_proba` and `predict` take images as the run's data set had them: file paths (PNG, JPEG, a folder of
    them, `.npy`, IDX), PIL images, NumPy arrays or torch tensors (`[N, C, H, W]`, `[N, H, W, C]`, one image
    `[C, H, W]` / `[H, W, C]` / `[H, W]` for grey runs, or flat `[N, C*H*W]`; 8-bit integers are divided by 255,
    floats must already be in [0, 1]). See the module `fflab.inference` for what the probabilities mean.

    Attributes: `network` (the torch module, in eval mode), `config`, `classes_` (class names, the column order
    of `predict_proba`), `input_shape` (C, H, W), `dataset`, `kind` (model family), `method` (how it predicts),
    `run_dir`.
    """

    def __init__(self, network: torch.nn.Module, config: Any, meta: dict, run_dir: str | Path = "") -> None:
        from fflab.training.evaluate import primary_method

        self.network = network.eval()
        self.config = config
        self.run_dir = Path(run_dir)
        self.dataset = str(meta.get("dataset", ""))
        self.kind = config.model.kind
        if self.dataset in SEQUENCE_SETS:
            raise FFLabError(
                f"{run_dir or 'this run'} was trained on sequences ({self.dataset}): fflab predicts single images "
                "only; score sequence data with `fflab eval` or the network's own `predictions`"
            )
        if "input_shape" not in meta:
            raise CheckpointError(f"{run_dir}/model.json has no input_shape: the run predates fflab predict")
        self.input_shape: tuple[int, int, int] = tuple(int(v) for v in meta["input_shape"])  # type: ignore[assignment]
        names = meta.get("class_names") or [str(i) for i in range(int(meta["num_classes"]))]
        self.classes_ = np.array(names)
        self.method = primary_method(config)
        self.batch_size = config.eval.batch_size

    def __repr__(self) -> str:
        return (
            f"fflab.Model({str(self.run_dir)!r}: {self.kind} on {self.dataset}, {_describe_shape(self.input_shape)}"
            f" inputs, {len(self.classes_)} classes, predicts by {self.method})"
        )

    @property
    def expects(self) -> str:
        """What the run's inputs are, in words."""
        return expectation(self.input_shape, self.dataset)

    def prepare(self, images: Any, invert: bool = False) -> torch.Tensor:
        """Images in any accepted form as the float32 tensor [N, C, H, W] the network takes; `invert` maps each
        value v to 1 - v (dark strokes on a light background, for a run trained on light strokes on dark)."""
        x = self._prepare(images)
        return 1.0 - x if invert else x

    def _prepare(self, images: Any) -> torch.Tensor:
        if isinstance(images, str | os.PathLike):
            return torch.from_numpy(read_inputs([images], self.input_shape, self.dataset)[1])
        if isinstance(images, list | tuple) and images and all(isinstance(i, str | os.PathLike) for i in images):
            return torch.from_numpy(read_inputs(images, self.input_shape, self.dataset)[1])
        if isinstance(images, list | tuple) and images and all(_is_image_object(i) for i in images):
            return torch.cat([self._prepare(i) for i in images])
        if _is_pil(images):
            pixels = _pixels(images, "the image", self.input_shape, self.expects)
            return torch.from_numpy(np.divide(pixels, 255, dtype=np.float32)[None])
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        return torch.from_numpy(self._array(np.asarray(images), "input array"))

    def _array(self, array: np.ndarray, name: str) -> np.ndarray:
        return _array_images(_to_unit(array, name, self.expects), self.input_shape, name, self.expects)

    def logits(self, images: Any, invert: bool = False, precision: str | None = None) -> np.ndarray:
        """The prediction method's logits [N, C] (float64); softmax of them is `predict_proba`. They are computed
        in `precision` ("float32" or "bfloat16"), by default the run's own `train.precision`, as `fflab eval`
        scores the run."""
        from fflab.perf import compute_precision

        x = self.prepare(images, invert)
        with compute_precision(precision or self.config.train.precision, "cpu"):
            return class_logits(self.network, self.method, x, self.batch_size).numpy()

    def predict_proba(self, images: Any, invert: bool = False, precision: str | None = None) -> np.ndarray:
        """Class probabilities [N, C], columns in the order of `classes_` (see fflab.inference for their meaning),
        computed in `precision` as `logits` says."""
        logits = torch.from_numpy(self.logits(images, invert, precision))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, images: Any, invert: bool = False) -> np.ndarray:
        """The predicted class name of each input."""
        return self.classes_[self.logits(images, invert).argmax(1)]


def load(run_dir: str | os.PathLike) -> Model:
    """The trained network of a run directory (model.safetensors + model.json), ready to classify images."""
    from fflab.checkpoint import load_checkpoint

    network, cfg, meta = load_checkpoint(run_dir)
    return Model(network, cfg, meta, run_dir)


def format_predictions(names: list[str], proba: np.ndarray, classes: np.ndarray, top: int = 1) -> list[dict]:
    """One record per input: its name and its `top` classes with their probabilities, best first."""
    order = np.argsort(-proba, axis=1, kind="stable")[:, :top]
    return [
        {
            "input": name,
            "class": str(classes[row[0]]),
            "probability": float(p[row[0]]),
            "top": [{"class": str(classes[j]), "probability": float(p[j])} for j in row],
        }
        for name, p, row in zip(names, proba, order, strict=True)
    ]


def predict_files(run_dir: str | os.PathLike, inputs: list[str], top: int = 1, invert: bool = False) -> list[dict]:
    """`fflab predict`: the run's prediction for each input file (or each image of a folder, array, IDX file)."""
    model = load(run_dir)
    names, x = read_inputs(inputs, model.input_shape, model.dataset)
    proba = model.predict_proba(x, invert=invert)
    return format_predictions(names, proba, model.classes_, top)
