"""Test-set predictions and the paper's metric tables (Tables 2 and 4).

`evaluate_run` restores the best checkpoint of a run, predicts the Y10 and Y1 test sets and
writes predictions.npz, latents.npz and evaluation.json (report.write_run_figures draws the
confusion matrices).
Weighted precision, recall and F1 are scikit-learn's `average="weighted"` (per-class scores
averaged with weights = true instances per class), as in the paper.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from jaxrobust import checkpoint, parallel, provenance
from jaxrobust.predict import make_predict, probabilities
from jaxrobust.data import store

METRIC_NAMES = ("accuracy", "precision", "recall", "f1")


def classification_metrics(labels: np.ndarray, predicted: np.ndarray, num_classes: int = 3) -> dict:
    """Accuracy, weighted precision / recall / F1 and the confusion matrix (rows: true)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    kwargs = dict(average="weighted", zero_division=0, labels=list(range(num_classes)))
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, **kwargs)),
        "recall": float(skm.recall_score(labels, predicted, **kwargs)),
        "f1": float(skm.f1_score(labels, predicted, **kwargs)),
        "confusion": skm.confusion_matrix(labels, predicted, labels=list(range(num_classes))).tolist(),
        "n": int(len(labels)),
    }


def evaluate_run(run_dir, data, series: str = "best", log=print) -> dict:
    """Evaluates a trained run on the test split at both depths; returns {"Y10": m, "Y1": m}."""
    run_dir = Path(run_dir)
    model, variables, config = checkpoint.load_variables(run_dir, series)
    # several processes: each predicts on its own devices (the same numbers); process 0 writes
    predict = make_predict(model, int(config.train.eval_batch_size), parallel.local_mesh())
    variables = parallel.localize(variables)
    labels = data.labels["test"]
    results, arrays = {}, {"labels": labels}
    for depth in store.DEPTHS:
        latent, logits = predict(variables, data.images[depth, "test"])
        probs = probabilities(logits)
        predicted = np.argmax(probs, axis=1)
        results[depth] = classification_metrics(labels, predicted, config.model.num_classes)
        arrays[f"probabilities_{depth.lower()}"] = probs.astype(np.float32)
        arrays[f"predicted_{depth.lower()}"] = predicted
        arrays[f"latent_{depth.lower()}"] = latent
    if not parallel.is_main_process():
        return results
    # one unit: the three files carry one id and the checkpoint they came from (provenance.py)
    source = provenance.checkpoint_source(run_dir, checkpoint.read_meta(run_dir, series))
    provenance.write_unit(run_dir, "evaluate", source, npz={
        "predictions.npz": {k: v for k, v in arrays.items() if not k.startswith("latent")},
        "latents.npz": dict(labels=labels, **{k: v for k, v in arrays.items() if k.startswith("latent")})},
        json_files={"evaluation.json": results}, inputs={"data": provenance.data_digest(getattr(data, "source", None))})
    log(f"{run_dir}: test accuracy Y10 {results['Y10']['accuracy']:.3f}, Y1 {results['Y1']['accuracy']:.3f}")
    return results


def metrics_table(rows: dict[str, dict], paper: dict[str, dict] | None = None) -> str:
    """Markdown table in the layout of the paper's Tables 2 and 4.

    rows: {"Reg": {"Y10": metrics, "Y1": metrics}, "DA": {...}}; paper: same keys with the
    paper's numbers ({"Y10": {"accuracy": 0.70, ...}}), shown in brackets beside ours.
    """
    header = "| Training | Metric | Y10 | Y1 |\n| --- | --- | --- | --- |\n"
    lines = []
    for training, by_depth in rows.items():
        for i, name in enumerate(METRIC_NAMES):
            cells = []
            for depth in ("Y10", "Y1"):
                cell = f"{by_depth[depth][name]:.2f}"
                if paper and training in paper:
                    cell += f" ({paper[training][depth][name]:.2f})"
                cells.append(cell)
            label = training if i == 0 else ""
            lines.append(f"| {label} | {name.capitalize() if name != 'f1' else 'F1 score'} | {cells[0]} | {cells[1]} |")
    return header + "\n".join(lines) + "\n"


def load_evaluation(run_dir) -> dict:
    path = Path(run_dir) / "evaluation.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `jaxrobust evaluate --workdir {run_dir}` first")
    return json.loads(path.read_text())
