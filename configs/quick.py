"""The embedded default: the whole study in minutes on 2 CPU cores.

    jaxrobust reproduce --config configs/quick.py --workdir runs/quick

What differs from the paper (jaxrobust.config.base_config) and why:
- 1,000 unique simulated galaxies in the paper's class proportions instead of 25,005, so the
  simulation takes a minute or two and an epoch a few seconds on a laptop CPU.
- Learning rate 1e-3 (paper 1e-5) and at most 30 epochs: the paper's rate learns little in a
  few CPU minutes.
- Sky of 1 arcsec^2 per pixel (archive emulation, lsst_simulation.md §6.1): the noise level of
  the published arrays, where the Y1/Y10 domain shift shows after the arcsinh stretch.
- The attack runs on a 24-image test subsample (paper: 150) with the paper's population 400
  and 80 generations.
"""
from jaxrobust.config import base_config


def get_config():
    config = base_config()
    config.data.n_spiral = 573  # paper proportions 0.572 : 0.326 : 0.102
    config.data.n_elliptical = 326
    config.data.n_merger = 101
    config.data.sky_area_per_pixel_arcsec2 = 1.0
    config.data.n_attack_subsample = 150
    config.train.learning_rate = 1e-3
    config.train.epochs = 30
    config.attack.n_images = 24
    config.analysis.isomap_points = 150
    return config
