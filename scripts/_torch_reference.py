"""Plain PyTorch versions of the paper's networks, optimiser and losses: benchmark baselines.

Written from the paper's description (networks.py, training.py of AleksCipri/DeepAdversaries),
NCHW as PyTorch prefers. Imported only by the benchmark scripts, and only when torch exists.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MMD_WIDTHS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0,
              100.0, 1e3, 1e4, 1e5, 1e6)


class ConvNet(nn.Module):
    def __init__(self, latent_dim=256, classes=3):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 8, 5, padding=2), nn.Conv2d(8, 16, 3, padding=1),
                                    nn.Conv2d(16, 32, 3, padding=1)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(c) for c in (8, 16, 32)])
        self.bottleneck = nn.Linear(32 * 12 * 12, latent_dim)
        self.fc = nn.Linear(latent_dim, classes)

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        latent = self.bottleneck(x.flatten(1))
        return latent, self.fc(latent)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, latent_dim=256, classes=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.5)
        self.bottleneck = nn.Linear(512, latent_dim)
        self.fc = nn.Linear(latent_dim, classes)

    def forward(self, x):
        x = self.dropout(self.blocks(self.stem(x)))
        latent = self.bottleneck(x.mean(dim=(2, 3)))
        return latent, self.fc(latent)


def build(name: str) -> nn.Module:
    return {"convnet": ConvNet, "resnet18": ResNet18}[name]()


def mmd(x, y):
    """training.py's biased multi-kernel MMD with its clamps, from explicit differences."""
    beta = 1.0 / (2.0 * torch.tensor(MMD_WIDTHS, dtype=x.dtype))

    def kernel(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return torch.exp(-d2[..., None] * beta).sum(-1)

    cost = kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()
    return torch.clamp(torch.clamp(cost, min=0.0), min=1e-4)


def train_step_fn(model, weights, domain_adaptation: bool, lr=1e-5, weight_decay=1e-3, mmd_weight=0.05):
    """One Adam step (coupled L2, betas 0.7/0.8) on a batch; returns a callable(batch) -> loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.7, 0.8), eps=1e-8, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))

    def step(images, labels, target_images=None):
        opt.zero_grad(set_to_none=True)
        x = torch.cat([images, target_images]) if domain_adaptation else images
        latent, logits = model(x)
        n = images.shape[0]
        loss = criterion(logits[:n], labels)
        if domain_adaptation:
            loss = loss + mmd_weight * mmd(latent[:n], latent[n:])
        loss.backward()
        opt.step()
        return loss

    return step
