"""Does each split's own stretch change what a trained model sees? One run's weights, every split
stretched two ways, as JSON.

    python scripts/study_normalisation.py RUN [RUN ...] [--series latest] [--out FILE]

The published preprocessing stretches each array with its own 0.1 / 99.9 percentiles
(preprocess.stats_from="self"). On a small split the 99.9th percentile is set by its few brightest
galaxies, so the validation array of the quick dataset (140 images) is stretched 18 % harder than
the training array. This script evaluates the same weights (a run's `latest` or `best`
checkpoint) on the Y10 train, validation and test arrays stretched with their own percentiles and
with the training split's (stats_from="train"), and reports each split's p_hi relative to the
training split's: a model whose validation accuracy moves with the stretch is being selected on a
differently normalised set.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_json import emit  # noqa: E402

from jaxrobust import checkpoint  # noqa: E402
from jaxrobust import config as config_lib  # noqa: E402
from jaxrobust.data import load_prepared  # noqa: E402
from jaxrobust.predict import make_predict  # noqa: E402

SPLITS = ("train", "valid", "test")


def accuracies(run, series: str) -> dict:
    """{stats_from: {split: Y10 accuracy, "p_hi_over_train": {split: ratio}}} for one run."""
    model, variables, config = checkpoint.load_variables(run, series)
    predict = make_predict(model, int(config.train.eval_batch_size))
    result = {}
    for mode in ("self", "train"):
        data = load_prepared(config.data.source, config_lib.copy_with(config, {"preprocess.stats_from": mode}))
        row = {}
        for split in SPLITS:
            _, logits = predict(variables, data.images["Y10", split])
            row[split] = float(np.mean(np.argmax(logits, -1) == data.labels[split]))
        row["p_hi_over_train"] = {s: float(data.bounds["Y10", s][1] / data.bounds["Y10", "train"][1]) for s in SPLITS}
        result[mode] = row
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="training run folders (config.json, checkpoints/)")
    parser.add_argument("--series", default="latest", choices=("latest", "best"), help="which checkpoint")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    return emit({"series": args.series, "runs": {str(run): accuracies(run, args.series) for run in args.runs}},
                args.out)


if __name__ == "__main__":
    main()
