"""scripts/study_y1_collapse.py's parts: AdaBN statistics and the Wilson interval, against
independent computations (NumPy moments of the captured layer input; scipy's binomtest)."""
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats

from jaxrobust.checkpoint import init_variables
from jaxrobust.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import study_y1_collapse  # noqa: E402


def test_adabn_statistics_are_the_population_moments():
    model = build_model("convnet")
    variables = init_variables(model, jax.random.key(0), (16, 16, 3))
    images = np.random.default_rng(0).uniform(0.45, 0.886, size=(12, 16, 16, 3)).astype(np.float32)
    adapted = study_y1_collapse.adapted_variables(model, variables, images)
    # the first BatchNorm's input is conv1's output, the same with any statistics
    _, state = model.apply(variables, images, train=False, capture_intermediates=True, mutable=["intermediates"])
    conv1 = np.asarray(state["intermediates"]["conv1"]["__call__"][0], np.float64)
    moments = conv1.reshape(-1, conv1.shape[-1])
    bn1 = adapted["batch_stats"]["bn1"]
    assert np.allclose(bn1["mean"], moments.mean(0), rtol=1e-4, atol=1e-6)
    assert np.allclose(bn1["var"], moments.var(0), rtol=1e-4, atol=1e-7)
    # every layer: eval mode with the adapted statistics = train mode (batch moments) on the set
    _, logits_eval = model.apply(adapted, images, train=False)
    (_, logits_train), _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert np.allclose(logits_eval, logits_train, atol=1e-5)
    _, logits_stored = model.apply(variables, images, train=False)
    assert not np.allclose(logits_stored, logits_train, atol=1e-5)  # the adaptation changed something


@pytest.mark.parametrize("k, n", [(0, 20), (3, 20), (10, 20), (20, 20), (100, 280)])
def test_wilson_interval_is_scipys(k, n):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert np.allclose(study_y1_collapse.wilson(k, n), [expected.low, expected.high], atol=1e-12)
