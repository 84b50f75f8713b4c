"""Writes the fixtures of this folder: runs saved by fflab b6cdc70, the last commit with the dense layout of
locally connected weights. Run it against that commit's code (a checkout on PYTHONPATH), from the repo root:

    PYTHONPATH=/path/to/fflab-b6cdc70/src python tests/data/dense-local/make.py

Each model folder (ff, sum, metalayer) holds a 1-epoch digits run's model.json and model.safetensors, and
scores.json: its label scores on the first 5 test images, as that code computed them. stopped/ is a run of
the sum wiring stopped after its first of 2 epochs (config.toml, resume.pt), to be resumed.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from fflab.checkpoint import load_checkpoint
from fflab.config import load_config
from fflab.data import load_dataset
from fflab.training.run import train_run

HERE = Path(__file__).parent
LOCAL = ["model.architecture=local", "model.hidden=[1,1]", "model.kernel=3", "train.threads=1", "train.monitor_size=0"]
RECURRENT = ["model.kind=recurrent", 'model.source_init=["kaiming","kaiming","kaiming"]']
RUNS = {
    "ff": [*LOCAL, "model.label=pattern"],
    "sum": [*LOCAL, *RECURRENT],
    "metalayer": [*LOCAL, *RECURRENT, "model.wiring=metalayer"],
}


class Stop(Exception):
    pass


def stop_after_first_epoch(line: str) -> None:
    if line.startswith("epoch   2/"):
        raise Stop


def main() -> None:
    x = load_dataset("digits", progress=False).test_x[:5]
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in RUNS.items():
            run = Path(tmp) / name
            train_run(load_config("configs/digits-ff.toml", [*overrides, "train.epochs=1"]), run, progress=False)
            model, _, _ = load_checkpoint(run)
            with torch.no_grad():
                scores = model.label_scores(x)
            (HERE / name).mkdir(exist_ok=True)
            for file in ("model.json", "model.safetensors"):
                shutil.copy(run / file, HERE / name / file)
            (HERE / name / "scores.json").write_text(json.dumps(scores.tolist()))
        run = Path(tmp) / "stopped"
        try:
            cfg = load_config("configs/digits-ff.toml", [*RUNS["sum"], "train.epochs=2"])
            train_run(cfg, run, progress=False, log=stop_after_first_epoch)
        except Stop:
            pass
        (HERE / "stopped").mkdir(exist_ok=True)
        for file in ("config.toml", "resume.pt"):
            shutil.copy(run / file, HERE / "stopped" / file)
    print("fixtures written by", sys.modules["fflab"].__file__)


if __name__ == "__main__":
    main()
