"""The paper's ResNet18 study at full size (Ćiprijanović et al. 2022, Tables 2 and 3).

    jaxrobust reproduce --config configs/paper_resnet18.py --workdir runs/paper_resnet18

Same data and protocol as paper_convnet.py with the ResNet18 trunk (11.3M parameters): an
accelerator is needed for training and for the attack (883 MFLOP per candidate).
"""
from jaxrobust.config import base_config


def get_config():
    config = base_config()
    config.model.name = "resnet18"
    return config
