"""The paper's ConvNet study at full size (Ćiprijanović et al. 2022, Tables 4 and 5).

    jaxrobust reproduce --config configs/paper_convnet.py --workdir runs/paper_convnet

25,005 unique galaxies (35,173 images after merger augmentation), Adam lr 1e-5 for up to 100
epochs, attack on a 150-image test subsample with population 400 and 80 generations. Plan on an
accelerator: simulation is about an hour on 16 cores, training minutes per epoch on a GPU.
"""
from jaxrobust.config import base_config


def get_config():
    config = base_config()
    config.model.name = "convnet"
    return config
