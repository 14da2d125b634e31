"""A model in the MLFO authors' layout, written from the description in methods-notes.md §1.2-1.3 and §1.8.

It reproduces the authors' module names (so its ``state_dict`` has their checkpoint keys) and their forward:
the Hara-layout R3D-18 backbone returns the (2,1,1)-pooled stage-4 map and the motion-excited, time-reversal-augmented
stage-2/3 maps. Tests write checkpoints with it and check that hf_vssl's conversion computes the same functions.
It is an independent implementation, not the authors' code.
"""

import torch
from torch import nn


class MEBlock(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        reduced = channels // reduction
        self.conv1 = nn.Conv2d(channels, reduced, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.conv2 = nn.Conv2d(reduced, reduced, 3, padding=1, groups=reduced, bias=False)
        self.conv3 = nn.Conv2d(reduced, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x):  # [B, C, T, H, W], a loop over frames as the description reads
        b, c, t, h, w = x.shape
        frames = [x[:, :, i] for i in range(t)]
        reduced = [self.bn1(self.conv1(f)) for f in frames]
        shifted = [self.conv2(r) for r in reduced]
        motion = [shifted[i + 1] - reduced[i] for i in range(t - 1)] + [torch.zeros_like(reduced[0])]
        out = []
        for i in range(t):
            gate = torch.sigmoid(self.bn3(self.conv3(motion[i].mean(dim=(2, 3), keepdim=True)))) - 0.5
            out.append(frames[i] + gate * frames[i])
        return torch.stack(out, dim=2)


class Block(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm3d(planes)
            )

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class HaraR3D(nn.Module):
    def __init__(self, widths, depths, reduction, stem=64):
        super().__init__()
        self.conv1 = nn.Conv3d(3, stem, 7, (1, 2, 2), 3, bias=False)
        self.bn1 = nn.BatchNorm3d(stem)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        inplanes = stem
        for i, (planes, depth) in enumerate(zip(widths, depths), start=1):
            stride = 1 if i == 1 else 2
            blocks = [
                Block(inplanes if j == 0 else planes, planes, stride if j == 0 else 1) for j in range(depth)
            ]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            inplanes = planes
        self.fc = nn.Linear(widths[-1], 400)  # unused, as in the authors' checkpoints
        self.melow = nn.Sequential(MEBlock(widths[1], reduction))
        self.memid = nn.Sequential(MEBlock(widths[2], reduction))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        low = self.layer2(x)
        mid = self.layer3(low)
        high = self.layer4(mid)
        feat = high.mean(dim=(3, 4))  # AdaptiveAvgPool3d((T, 1, 1)) keeps time
        melow = self.melow(torch.cat([low, low.flip(2)])).mean(dim=(3, 4))
        memid = self.memid(torch.cat([mid, mid.flip(2)])).mean(dim=(3, 4))
        return feat, melow, memid, (low, mid, high)


def pointwise(channels, dim):
    return nn.Sequential(nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.Conv1d(channels, dim, 1))


class AuthorsModel(nn.Module):
    """Key names of the authors' ``GreatModel``: ``backbone.*``, ``project*``, ``project_global``, ``prototype``."""

    def __init__(
        self, widths=(16, 32, 32, 64), depths=(1, 1, 1, 1), stem=8, reduction=4, dim=16, num_prototypes=10
    ):
        super().__init__()
        self.backbone = HaraR3D(widths, depths, reduction, stem)
        low, mid, high = widths[1], widths[2], widths[3]
        for suffix in ("", "_fine", "_graph"):
            setattr(self, f"project{suffix}", pointwise(high, dim))
            setattr(self, f"project_mid{suffix}", pointwise(mid, dim))
            setattr(self, f"project_low{suffix}", pointwise(low, dim))
        self.project_global = nn.Sequential(
            nn.Linear(high, high), nn.BatchNorm1d(high), nn.ReLU(), nn.Linear(high, dim)
        )
        self.prototype = nn.Linear(dim, num_prototypes, bias=False)
