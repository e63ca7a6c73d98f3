"""The paper's ResNet18 study at full size (Ćiprijanović et al. 2022, Tables 2 and 3).

    jaxrobust reproduce --config configs/paper_resnet18.py --workdir runs/paper_resnet18

Same data (in the published arrays' noise regime), training and attack as paper_convnet.py, whose
docstring says why, with the ResNet18 trunk (11.3M parameters): an accelerator is needed for
training and for the attack (883 MFLOP per candidate).
"""
from jaxrobust.config import base_config


def get_config():
    config = base_config()
    config.model.name = "resnet18"
    config.data.mag_r_range = (18.0, 21.5)  # the archive's noise regime (paper_convnet.py)
    config.data.catalogue_mag_shift = -4.0  # the catalogue sees r = 14-17.5, as TNG's at z = 0.05
    config.data.sky_area_per_pixel_arcsec2 = 1.0
    return config
