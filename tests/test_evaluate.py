"""Tests of jaxrobust.evaluate: weighted metrics on a hand-worked confusion matrix, the
markdown table, and evaluate_run on a tiny trained run (files, probabilities, and agreement
with a direct forward pass of the best checkpoint)."""
import json

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from jaxrobust import checkpoint, evaluate, predict, train

import _synthetic as syn


def _from_confusion(matrix):
    """(labels, predictions) realising a confusion matrix (rows: true class)."""
    labels, predicted = [], []
    for true, row in enumerate(matrix):
        for pred, count in enumerate(row):
            labels += [true] * count
            predicted += [pred] * count
    return np.array(labels), np.array(predicted)


# true \\ predicted: spiral, elliptical, merger
CONFUSION = [[3, 0, 1],
             [2, 2, 0],
             [0, 1, 1]]


def test_weighted_metrics_hand_worked():
    labels, predicted = _from_confusion(CONFUSION)
    m = evaluate.classification_metrics(labels, predicted)
    # support (4, 4, 2) of 10; predicted column sums (5, 3, 2)
    precision = [3 / 5, 2 / 3, 1 / 2]
    recall = [3 / 4, 2 / 4, 1 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]  # 2/3, 4/7, 1/2
    weights = [0.4, 0.4, 0.2]
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["precision"] == pytest.approx(0.24 + 0.4 * 2 / 3 + 0.1)  # 0.60667
    assert m["precision"] == pytest.approx(np.dot(weights, precision))
    assert m["recall"] == pytest.approx(np.dot(weights, recall)) and m["recall"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(0.4 * 2 / 3 + 0.4 * 4 / 7 + 0.1)  # 0.59524
    assert m["f1"] == pytest.approx(np.dot(weights, f1))
    assert m["confusion"] == CONFUSION and m["n"] == 10


def test_weighted_metrics_equal_scikit_learn():
    labels, predicted = _from_confusion(CONFUSION)
    m = evaluate.classification_metrics(labels, predicted)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        assert m[name] == pytest.approx(fn(labels, predicted, average="weighted"), abs=1e-15)


def test_never_predicted_class_scores_zero_precision():
    # merger never predicted: its precision is 0 (not NaN), its weight 2/6
    labels, predicted = _from_confusion([[2, 0, 0], [0, 2, 0], [1, 1, 0]])
    m = evaluate.classification_metrics(labels, predicted)
    assert m["precision"] == pytest.approx((2 / 6) * (2 / 3) * 2 + 0)
    assert m["recall"] == pytest.approx(4 / 6)
    f1_01 = 2 * (2 / 3) * 1 / (2 / 3 + 1)  # 0.8
    assert m["f1"] == pytest.approx((2 / 6) * f1_01 * 2)


def test_all_classes_listed_even_if_absent():
    m = evaluate.classification_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]))
    assert np.array(m["confusion"]).shape == (3, 3) and m["confusion"][2] == [0, 0, 0]


def test_metrics_table_format():
    ours = {"Y10": {"accuracy": 0.7049, "precision": 0.71, "recall": 0.7, "f1": 0.695},
            "Y1": {"accuracy": 0.4812, "precision": 0.5, "recall": 0.48, "f1": 0.4}}
    paper = {"Reg": {"Y10": {"accuracy": 0.70, "precision": 0.71, "recall": 0.70, "f1": 0.70},
                     "Y1": {"accuracy": 0.48, "precision": 0.61, "recall": 0.48, "f1": 0.41}}}
    table = evaluate.metrics_table({"Reg": ours}, paper)
    assert table.splitlines() == [
        "| Training | Metric | Y10 | Y1 |",
        "| --- | --- | --- | --- |",
        "| Reg | Accuracy | 0.70 (0.70) | 0.48 (0.48) |",
        "|  | Precision | 0.71 (0.71) | 0.50 (0.61) |",
        "|  | Recall | 0.70 (0.70) | 0.48 (0.48) |",
        "|  | F1 score | 0.69 (0.70) | 0.40 (0.41) |",
    ]
    plain = evaluate.metrics_table({"Reg": ours, "DA": ours})
    assert len(plain.splitlines()) == 2 + 8 and "(" not in plain
    assert plain.splitlines()[6] == "| DA | Accuracy | 0.70 | 0.48 |"


def test_probabilities_rows_sum_to_one():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    p = predict.probabilities(logits)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p[1], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-15)


@pytest.fixture(scope="module")
def evaluated():
    workdir, _, _ = syn.reference_run()
    data = syn.tiny_data()
    results = evaluate.evaluate_run(workdir, data, log=lambda message: None)
    return workdir, data, results


def test_evaluate_run_writes_its_files(evaluated):
    workdir, data, results = evaluated
    n = len(data.labels["test"])
    with np.load(workdir / "predictions.npz") as pred:
        assert np.array_equal(pred["labels"], data.labels["test"])
        for depth in ("y10", "y1"):
            p = pred[f"probabilities_{depth}"]
            assert p.shape == (n, 3) and np.all(p >= 0)
            np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
            assert np.array_equal(pred[f"predicted_{depth}"], p.argmax(1))
    with np.load(workdir / "latents.npz") as lat:
        assert lat["latent_y10"].shape == lat["latent_y1"].shape == (n, 256)
    saved = json.loads((workdir / "evaluation.json").read_text())
    assert saved["Y10"]["accuracy"] == pytest.approx(results["Y10"]["accuracy"])
    assert sum(map(sum, saved["Y1"]["confusion"])) == n


def test_evaluate_run_matches_a_direct_forward_pass(evaluated):
    workdir, data, results = evaluated
    model, variables, _ = checkpoint.load_variables(workdir, "best")
    with np.load(workdir / "predictions.npz") as pred, np.load(workdir / "latents.npz") as lat:
        for depth in ("Y10", "Y1"):
            latent, logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
                variables, data.images[depth, "test"])
            logits = np.asarray(logits, np.float64)
            expected = np.exp(logits - logits.max(1, keepdims=True))
            expected /= expected.sum(1, keepdims=True)
            np.testing.assert_allclose(pred[f"probabilities_{depth.lower()}"], expected, atol=1e-5)
            np.testing.assert_allclose(lat[f"latent_{depth.lower()}"], latent, rtol=1e-4, atol=1e-5)
            accuracy = np.mean(np.argmax(logits, 1) == data.labels["test"])
            assert results[depth]["accuracy"] == pytest.approx(accuracy)


def test_evaluate_run_uses_the_best_checkpoint(evaluated):
    workdir, _, _ = evaluated
    best_meta = checkpoint.read_meta(workdir, "best")
    _, best, _ = checkpoint.load_variables(workdir, "best")
    _, latest, _ = checkpoint.load_variables(workdir, "latest")
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(best),
                                                    jax.tree_util.tree_leaves(latest)))
    assert same == (best_meta["epoch"] == train.read_metrics(workdir)[-1]["epoch"])


def test_predict_pads_the_last_batch(evaluated):
    workdir, data, _ = evaluated
    model, variables, _ = checkpoint.load_variables(workdir, "best")
    images = data.images["Y10", "test"][:7]
    latents, logits = predict.make_predict(model, 4)(variables, images)  # batches of 4: 4 + 3
    direct_latent, direct_logits = model.apply(variables, images, train=False)
    assert latents.shape == (7, 256) and logits.shape == (7, 3)
    np.testing.assert_allclose(logits, direct_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(latents, direct_latent, rtol=1e-4, atol=1e-5)


def test_run_figures_are_drawn_from_the_files_the_run_wrote(evaluated, tmp_path):
    """report.write_run_figures: the curves from metrics.jsonl, the matrices from evaluation.json."""
    import shutil

    from jaxrobust import report

    workdir, _, _ = evaluated
    written = report.write_run_figures(workdir)
    assert [p.name for p in written] == ["training_curves.png", "confusion_matrices.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trained_only = tmp_path / "run"
    shutil.copytree(workdir, trained_only, ignore=shutil.ignore_patterns("evaluation.json", "figures"))
    assert [p.name for p in report.write_run_figures(trained_only)] == ["training_curves.png"]
