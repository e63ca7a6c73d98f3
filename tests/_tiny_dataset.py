"""One tiny simulated dataset shared by the data tests (simulated once per test session).

Test code, not package code. A cached function instead of a conftest fixture so that the files
using it stay independent of any conftest.py. Tests that modify files must copy the folder first.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from jaxrobust.config import load_config
from jaxrobust.data import simulate

# 8 / 5 / 3 unique galaxies: every split gets at least one image (valid = round(0.1 n) per class)
# and the test split one merger (5 augmented copies); about 4 s on one core. Brightness and sky
# are pinned so that tuning configs/quick.py does not change what these tests see.
TINY_OVERRIDES = ("data.n_spiral=8", "data.n_elliptical=5", "data.n_merger=3", "data.workers=1",
                  "data.preview=False", "seed=3", "data.mag_r_range=(15.0, 18.0)",
                  "data.sky_area_per_pixel_arcsec2=1.0", "data.n_attack_subsample=150",
                  "certify.enabled=False")  # test_pipeline and test_certify certify


def tiny_config():
    return load_config("quick", TINY_OVERRIDES)


@functools.cache
def tiny_dataset() -> tuple[Path, dict]:
    """(folder, dataset.json contents) of the tiny dataset; do not modify the folder."""
    out = Path(tempfile.mkdtemp(prefix="jaxrobust_tiny_"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    info = simulate.simulate_dataset(tiny_config(), out, workers=1, progress=False)
    return out, info
