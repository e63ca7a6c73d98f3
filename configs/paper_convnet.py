"""The paper's ConvNet study at full size (Ćiprijanović et al. 2022, Tables 4 and 5).

    jaxrobust reproduce --config configs/paper_convnet.py --workdir runs/paper_convnet

25,005 unique galaxies (35,173 images after merger augmentation), the paper's training (Adam lr
1e-5, betas 0.7 / 0.8, weight decay 1e-3, 1e-4 with DA, MMD weight 0.05, batch 128, up to 100
epochs with the code's graded early stopping) and attack (150-image test subsample, population
400, 80 generations), all base_config's. Plan on an accelerator: simulation is about an hour on 16 cores, training
minutes per epoch on a GPU.

The data are in the noise regime of the published arrays, the one configs/quick.py uses (its
docstring and docs/data.md give the measurements): sky of 1 arcsec^2 per pixel, the archive's
per-pixel sigma in e-, and galaxies of r = 18-21.5, whose Y1 / Y10 arrays then clip at p_lo / p_hi
near the archive's -0.21 / -0.06. base_config's physical sky (0.2" pixels) and r = 14-17.5 would
give -0.007: the noise invisible after the arcsinh stretch and no Y1 / Y10 domain shift to study.
The labelling catalogue still sees the galaxies at r = 14-17.5 (data.catalogue_mag_shift), the
brightness of the paper's TNG sample. The preprocessing is the published one (each array
stretched with its own percentiles): quick.py shares the training split's because its 140-image
validation array is stretched 18 % harder, a gap that shrinks with the split's size (4 % at
medium.py's 3x, its docstring; this validation split is 25x quick's).
tests/test_paper_configs.py checks the regime from the simulator's own formulas.
"""
from jaxrobust.config import base_config


def get_config():
    config = base_config()
    config.model.name = "convnet"
    config.data.mag_r_range = (18.0, 21.5)  # the archive's noise regime (docstring)
    config.data.catalogue_mag_shift = -4.0  # the catalogue sees r = 14-17.5, as TNG's at z = 0.05
    config.data.sky_area_per_pixel_arcsec2 = 1.0
    return config
