"""FFClassifier: the supervised FF network as a scikit-learn classifier.

It plugs FF into cross-validation, pipelines, grid search and cloning. Hyperparameters are turned
into fflab settings in `fit` by `config_from_dict`, so the library's own checks apply. A bad value
raises ValueError naming the parameter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fflab.batching import in_batches
from fflab.config import Config, config_from_dict
from fflab.errors import ConfigError, DivergedError
from fflab.models import FFNetwork, build_model
from fflab.training.trainer import FFTrainer

# Estimator parameters that are fflab settings, by config section; each has the name of its config key.
# random_state (-> train.seed) and scale are handled here.
_SETTINGS = {
    "model": ("hidden", "activation", "goodness", "loss", "alpha", "theta", "label"),
    "train": ("negatives", "epochs", "batch_size", "lr", "lr_decay", "optimizer", "threads"),
}
SCALES = ("minmax", "none")


def _plain(value: Any) -> Any:
    """Python scalars for NumPy ones (as a grid search over np.arange passes), lists for tuples."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list | np.ndarray):
        return [_plain(v) for v in value]
    return value


def _check_finite(X: np.ndarray, estimator: str) -> None:
    """scikit-learn's "Input X contains NaN" (or infinity), naming the first such value's row and column."""
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    row, column = (int(i) for i in np.argwhere(bad)[0])
    value = X[row, column]
    what = "NaN" if np.isnan(value) else f"infinity ({value})"
    count = int(bad.sum())
    raise ValueError(
        f"Input X contains {what} at row {row}, column {column} ({count} non-finite value{'s' if count > 1 else ''} "
        f"in all); {estimator} needs finite features: drop those rows or impute them (sklearn.impute.SimpleImputer)"
    )


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run torch with `threads` threads (0: one per core), then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FFClassifier(ClassifierMixin, BaseEstimator):
    """A supervised Forward-Forward network (Hinton 2022) as a scikit-learn classifier.

    Each class label is written into the input (`label="concat"`: one-hot appended). Every layer learns
    from its own local loss: high goodness for the true label, low for a wrong one. Prediction scores
    each candidate label by goodness. Works with 2 or more classes and any hashable labels.

    Parameters
    ----------
    hidden : tuple of int (or one int for a single layer), widths of the FF layers.
    activation, goodness, loss, alpha, theta, label : as `model.*` in fflab configs.
    negatives, epochs, batch_size, lr, lr_decay, optimizer : as `train.*` in fflab configs.
    random_state : int, RandomState or None. It seeds weight initialisation, batch order and negative
        sampling. The same int gives the same fitted model and predictions on the same machine.
    scale : "minmax" (default) maps each feature to [0, 1] with the training minimum and maximum and
        clips new data to that range. The one-hot label is then on the same scale as the features.
        Otherwise a feature of large magnitude would drown the label after each layer's length
        normalisation. "none" passes features through unchanged.
    threads : torch threads during fit and predict (0: one per core); the caller's setting is restored.

    Attributes
    ----------
    classes_ : the sorted class labels; column order of `predict_proba`.
    n_features_in_, feature_names_in_ : as in scikit-learn.
    scaler_ : the fitted MinMaxScaler, or None with scale="none".
    model_ : the trained `fflab.models.FFNetwork` (on CPU, float32).
    config_ : the validated fflab `Config` the model was built and trained with.
    logit_scale_ : factor turning mean goodness into logits for `predict_proba` (see there).
    """

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] | int = (500, 500),
        activation: str = "relu",
        goodness: str = "mean_squares",
        loss: str = "symba",
        alpha: float = 4.0,
        theta: float = 2.0,
        label: str = "concat",
        negatives: str = "hard",
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 3e-3,
        lr_decay: str = "cosine",
        optimizer: str = "adam",
        random_state: int | np.random.RandomState | None = 0,
        scale: str = "minmax",
        threads: int = 1,
    ) -> None:
        self.hidden = hidden
        self.activation = activation
        self.goodness = goodness
        self.loss = loss
        self.alpha = alpha
        self.theta = theta
        self.label = label
        self.negatives = negatives
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.optimizer = optimizer
        self.random_state = random_state
        self.scale = scale
        self.threads = threads

    def _config(self, seed: int) -> Config:
        """The fflab settings for the current parameters, checked by fflab's own config validation.

        A ConfigError becomes a ValueError that names the parameter instead of the config key.
        """
        data: dict[str, Any] = {
            section: {name: _plain(getattr(self, name)) for name in names} for section, names in _SETTINGS.items()
        }
        if isinstance(data["model"]["hidden"], int):
            data["model"]["hidden"] = [data["model"]["hidden"]]
        data["train"]["seed"] = seed
        try:
            return config_from_dict(data)
        except ConfigError as e:
            keys = re.findall(r"\b(?:model|train)\.(\w+)", str(e))
            names = ", ".join(repr(k) for k in dict.fromkeys(keys))
            what = f"parameter{'s' if len(set(keys)) > 1 else ''} {names}" if keys else "parameters"
            detail = re.sub(r"\b(?:model|train)\.(?=\w)", "", str(e))
            raise ValueError(f"Invalid {what} of {type(self).__name__}: {detail}") from None

    def fit(self, X: Any, y: Any) -> FFClassifier:
        """Learn min-max statistics, encode labels as 0..C-1 and train the FF network. Returns self."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_all_finite=False)
        _check_finite(X, type(self).__name__)
        check_classification_targets(y)
        if self.label == "none" or self.negatives == "hybrid":
            raise ValueError(
                f"Invalid parameters of {type(self).__name__}: it trains supervised FF, so label='none' and "
                "negatives='hybrid' (unsupervised FF) are not supported"
            )
        if self.scale not in SCALES:
            raise ValueError(f"Invalid parameter 'scale' of {type(self).__name__}: expected one of {list(SCALES)}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes to make negative data (a wrong label); "
                f"got 1 class: {self.classes_[0]!r}"
            )
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        cfg = self._config(seed)
        if cfg.model.label == "overlay" and X.shape[1] < n_classes:
            raise ValueError(
                f"Invalid parameter 'label' of {type(self).__name__}: 'overlay' writes the label over the first "
                f"{n_classes} features, but X has only {X.shape[1]}; use label='concat'"
            )
        self.scaler_ = MinMaxScaler(clip=True).fit(X) if self.scale == "minmax" else None
        x = self._tensor(X)
        targets = torch.from_numpy(codes.astype(np.int64))
        with _torch_threads(cfg.train.threads), torch.random.fork_rng(devices=[]):
            # Weight initialisation draws from torch's global generator: seed a forked copy so that
            # the caller's random stream is left untouched.
            torch.manual_seed(seed)
            model = build_model(cfg, X.shape[1], n_classes)
            try:
                FFTrainer(model, cfg.train, progress=False).fit(x, targets)
            except DivergedError as e:  # as scikit-learn's SGD estimators report an overflow: a ValueError
                scale = "; so might scale='minmax', if the features are large" if self.scale == "none" else ""
                raise ValueError(
                    f"Floating-point overflow in {type(self).__name__}.fit: {e}. Lowering lr (now {self.lr:g}; "
                    f"try {self.lr / 10:g}) might help{scale}"
                ) from None
        self.model_: FFNetwork = model.eval()
        self.config_ = cfg
        self.logit_scale_ = model.layers[0].logit_scale  # one loss for every layer
        return self

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        """Validated X, min-max scaled if configured, as a float32 tensor."""
        if self.scaler_ is not None:
            X = self.scaler_.transform(X)
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities [n_samples, n_classes], columns in the order of `classes_`.

        The logit of class c is logit_scale_ times the positive-signed goodness for label c, averaged
        over the network's `predict_layers`. Each layer's loss is a logistic model with exactly those
        logits: alpha * (g_true - g_wrong) for the symba loss, g - theta for softplus, where theta cancels
        in the softmax. The softmax extends that model from pairs to all C labels. Summing over layers
        would count correlated evidence once per layer and push probabilities towards 0 and 1, so the
        layers are averaged instead. The argmax is unchanged, because averaging only rescales the sum.
        On digits the symba scale is close to the best one for log loss; with softplus the probabilities are
        under-confident. Wrap the estimator in CalibratedClassifierCV when calibrated probabilities matter.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite=False)
        _check_finite(X, type(self).__name__)
        x = self._tensor(X)
        with _torch_threads(self.config_.train.threads):
            scores = in_batches(self.model_.label_scores, x)
        goodness = scores[:, :, self.model_.predict_layers].double().mean(2)
        return torch.softmax(self.logit_scale_ * goodness, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The class with the highest probability (the best summed goodness), as a label from `classes_`."""
        proba = self.predict_proba(X)  # first: it checks that the estimator is fitted
        return self.classes_[proba.argmax(axis=1)]
