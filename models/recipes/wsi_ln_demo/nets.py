"""The two demo networks: a small patch classifier and a small 2D U-Net.

Both end in a sigmoid inside the graph, so the exported ONNX outputs are probabilities, as
the ``wsi-two-stage`` manifest requires (``prob``: ``(N,)`` and ``(N, 1, H, W)``).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PatchClassifier(nn.Module):
    """Strided stem, three conv stages with pooling, global average pooling, sigmoid."""

    def __init__(self, channels: tuple[int, ...] = (32, 48, 64)) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True))
        layers: list[nn.Module] = [stem]
        cin = 16
        for cout in channels:
            layers += [_conv(cin, cout), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logit per patch, shape (N,)."""
        return self.head(self.features(x).mean((2, 3))).reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tumour probability per patch, shape (N,)."""
        return torch.sigmoid(self.logits(x))


class SmallUNet(nn.Module):
    """Three-level U-Net; output (N, 1, H, W) tumour probability at the input resolution."""

    def __init__(self, features: tuple[int, ...] = (12, 24, 48)) -> None:
        super().__init__()
        self.enc = nn.ModuleList()
        cin = 3
        for f in features:
            self.enc.append(nn.Sequential(_conv(cin, f), _conv(f, f)))
            cin = f
        rev = features[::-1]
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, 2) for a, b in zip(rev, rev[1:], strict=False))
        self.dec = nn.ModuleList(nn.Sequential(_conv(2 * b, b), _conv(b, b)) for b in rev[1:])
        self.out = nn.Conv2d(features[0], 1, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits, shape (N, 1, H, W)."""
        skips = []
        for i, enc in enumerate(self.enc):
            x = enc(x)
            if i < len(self.enc) - 1:
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        return self.out(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tumour probability, shape (N, 1, H, W)."""
        return torch.sigmoid(self.logits(x))
