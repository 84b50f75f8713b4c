"""fflab: Forward-Forward learning toolkit."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """fflab.FFClassifier and fflab.load, imported on first use so that `import fflab` loads neither torch nor
    scikit-learn."""
    if name == "FFClassifier":
        from fflab.estimator import FFClassifier

        return FFClassifier
    if name == "load":
        from fflab.inference import load

        return load
    raise AttributeError(f"module 'fflab' has no attribute {name!r}")
