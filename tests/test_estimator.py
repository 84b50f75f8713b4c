"""FFClassifier: a scikit-learn classifier that learns real data and follows scikit-learn's rules."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fflab.estimator import FFClassifier

# Small and fast: about 0.35 s per fit on 1,257 digits with one thread.
FAST = {"hidden": (128, 128), "epochs": 10, "batch_size": 32}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, _, y_train, _ = digits
    return FFClassifier(**FAST).fit(X_train, y_train)


@pytest.mark.slow
def test_cross_validation_on_digits_clears_a_real_bar():
    X, y = load_digits(return_X_y=True)
    clf = FFClassifier(hidden=(128, 128), epochs=20, batch_size=32)
    scores = cross_val_score(clf, X, y, cv=3)
    # Measured: 0.926 mean (folds 0.940, 0.930, 0.908) in about 2 s; 0.916 to 0.929 over random_state 0-4.
    # Unshuffled 3-fold CV scores lower than the shuffled 70/30 split the other tests use (0.95 there).
    assert scores.mean() >= 0.89, scores


def test_pipeline_with_standard_scaler(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = make_pipeline(StandardScaler(), FFClassifier(**FAST)).fit(X_train, y_train)
    # Measured: 0.952 (0.935 to 0.952 over random_state 0-3), the same as without the scaler: min-max scaling
    # absorbs any per-feature affine map.
    assert pipe.score(X_test, y_test) >= 0.9


def test_clone_and_params_round_trip():
    clf = FFClassifier(hidden=(32,), epochs=3, label="overlay")
    params = clf.get_params()
    assert params["hidden"] == (32,) and params["epochs"] == 3 and params["label"] == "overlay"
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == params
    assert twin.set_params(epochs=7, lr=0.01) is twin
    assert twin.get_params() == {**params, "epochs": 7, "lr": 0.01}
    assert clf.epochs == 3  # the clone is independent
    fitted_clone = clone(FFClassifier(hidden=(8,), epochs=1).fit(np.eye(4), [0, 1, 0, 1]))
    assert not hasattr(fitted_clone, "model_")  # clone copies parameters, not the fitted state


def test_string_labels_with_two_classes(digits):
    X_train, X_test, y_train, y_test = digits
    names = np.array(["even", "odd"])
    clf = FFClassifier(**FAST).fit(X_train, names[y_train % 2])
    assert list(clf.classes_) == ["even", "odd"]
    assert clf.predict_proba(X_test).shape == (len(X_test), 2)
    pred = clf.predict(X_test)
    assert pred.dtype == names.dtype and set(pred) <= {"even", "odd"}
    # Measured: 0.974.
    assert (pred == names[y_test % 2]).mean() >= 0.92


def test_labels_that_do_not_start_at_zero(digits):
    X_train, X_test, y_train, y_test = digits
    clf = FFClassifier(**FAST).fit(X_train, y_train + 10)
    assert list(clf.classes_) == list(range(10, 20))
    assert clf.score(X_test, y_test + 10) >= 0.9  # measured: 0.952


def test_predict_proba_is_a_distribution_consistent_with_predict(fitted, digits):
    _, X_test, _, y_test = digits
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(X_test))
    # Measured: accuracy 0.952, mean top probability 0.84, under 0.9 for 48% of the images.
    assert fitted.score(X_test, y_test) >= 0.9
    # Scaled, not saturated: confident on most images, not on all.
    top = proba.max(1)
    assert 0.6 < top.mean() < 0.99 and (top < 0.9).mean() > 0.05


def test_predictions_do_not_depend_on_the_batch(fitted, digits):
    """The same image gets the same label alone or in a batch. float32 matrix products round differently for
    different batch sizes, so probabilities agree to float32 precision, not to the last bit."""
    X = digits[1][:40]
    one_by_one = np.concatenate([fitted.predict_proba(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(one_by_one, fitted.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(fitted.classes_[one_by_one.argmax(1)], fitted.predict(X))


def test_same_random_state_same_model_and_caller_state_untouched(digits):
    X_train, X_test, y_train, _ = digits
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's setting; fit and predict run with threads=1 and put it back
    try:
        a = FFClassifier(**FAST, random_state=3).fit(X_train, y_train).predict_proba(X_test)
        b = FFClassifier(**FAST, random_state=3).fit(X_train, y_train).predict_proba(X_test)
        c = FFClassifier(**FAST, random_state=4).fit(X_train, y_train).predict_proba(X_test)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads_before)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeding used a forked generator


def test_minmax_scaling_handles_constant_features_and_new_ranges(digits):
    X_train, X_test, y_train, _ = digits
    # Digits has pixels that are 0 in every training image; add a constant 5 column as well.
    X_train = np.hstack([X_train, np.full((len(X_train), 1), 5.0)])
    X_test = np.hstack([X_test, np.full((len(X_test), 1), 5.0)])
    clf = FFClassifier(**FAST).fit(X_train, y_train)
    assert (clf.scaler_.data_range_ == 0).sum() >= 2
    proba = clf.predict_proba(X_test * 100)  # far outside the training range: clipped to [0, 1]
    assert np.isfinite(proba).all()
    assert clf.scaler_.transform(X_test * 100).max() == 1.0


def test_errors_before_fit_and_on_bad_input(fitted):
    X = np.zeros((3, 64))
    with pytest.raises(NotFittedError, match="This FFClassifier instance is not fitted yet"):
        FFClassifier().predict(X)
    with pytest.raises(ValueError, match="X has 5 features, but FFClassifier is expecting 64 features as input"):
        fitted.predict(np.zeros((3, 5)))
    X_nan = X.copy()
    X_nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.predict_proba(X_nan)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        FFClassifier(**FAST).fit(X_nan, [0, 1, 0])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        FFClassifier(**FAST).fit(np.arange(4.0), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="needs at least 2 classes.*got 1 class"):
        FFClassifier(**FAST).fit(X, ["a", "a", "a"])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        FFClassifier(**FAST).fit(X, [0.5, 1.5, 2.25])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 0}, r"Invalid parameter 'epochs' of FFClassifier: epochs: expected a value >= 1, got 0"),
        ({"activation": "swish"}, r"Invalid parameter 'activation' .*expected one of \[.*'relu'.*\], got 'swish'"),
        ({"hidden": (64, "wide")}, r"Invalid parameter 'hidden' .*hidden\[1\]: expected an integer"),
        ({"hidden": ()}, r"Invalid parameter 'hidden' .*non-empty list of positive layer widths"),
        ({"lr": "fast"}, r"Invalid parameter 'lr' .*expected a number"),
        ({"scale": "zscore"}, r"Invalid parameter 'scale' .*expected one of \['minmax', 'none'\]"),
        ({"label": "overlay"}, r"Invalid parameter 'label' .*'overlay'.*first 3 features, but X has only 2"),
        (
            {"hidden": (8, 8, 8), "theta": [1.0, 2.0]},
            r"Invalid parameter 'theta' .*one threshold per layer \(3\), got 2",
        ),
        ({"negatives": "hybrid"}, r"it trains supervised FF, so label='none' and negatives='hybrid' .* not supported"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_parameter(params, message):
    X, y = np.random.default_rng(0).random((6, 2)), [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match=message):
        FFClassifier(**{**FAST, **params}).fit(X, y)


def test_numpy_scalars_from_a_parameter_grid_are_accepted():
    X, y = np.random.default_rng(0).random((8, 3)), [0, 1] * 4
    clf = FFClassifier(hidden=np.int64(8), epochs=np.int64(1), batch_size=np.arange(4, 5)[0]).fit(X, y)
    assert clf.config_.model.hidden == [8] and clf.config_.train.epochs == 1


def test_import_fflab_stays_light():
    code = (
        "import sys, fflab; assert 'torch' not in sys.modules and 'sklearn' not in sys.modules; "
        "from fflab import FFClassifier; assert FFClassifier.__module__ == 'fflab.estimator'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Every scikit-learn estimator check, with a tiny network. One expected failure:
EXPECTED_FAILED = {
    "check_methods_subset_invariance": (
        "predict_proba differs by about 1e-6 between a batch and its subsets, above the check's 1e-7 tolerance: "
        "the network computes in float32 and BLAS rounds a matrix product differently for different batch sizes. "
        "Predicted labels agree and probabilities to float32 precision (test_predictions_do_not_depend_on_the_batch)."
    ),
}


@parametrize_with_checks(
    [FFClassifier(hidden=(32, 32), epochs=5, batch_size=32)], expected_failed_checks=lambda est: EXPECTED_FAILED
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
