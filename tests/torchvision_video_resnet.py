"""A stand-in for torchvision's ``VideoResNet`` (``r3d_18``, ``r2plus1d_18``) with torchvision's module structure.

torchvision cannot be imported on the test machines, so this mirrors its ``torchvision/models/video/resnet.py``
structure (positional ``nn.Sequential`` children, ``stem`` / ``layerN`` / ``downsample`` / ``fc`` names), which is what
fixes the state-dict key names. It is an independent implementation, used only to check that hf_vssl's backbones
load torchvision checkpoints and compute the same function.
"""

from torch import nn


class Conv3DSimple(nn.Conv3d):
    def __init__(self, in_planes, out_planes, midplanes=None, stride=1, padding=1):
        super().__init__(
            in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride, padding=padding, bias=False
        )


class Conv2Plus1D(nn.Sequential):
    def __init__(self, in_planes, out_planes, midplanes, stride=1, padding=1):
        super().__init__(
            nn.Conv3d(
                in_planes,
                midplanes,
                (1, 3, 3),
                stride=(1, stride, stride),
                padding=(0, padding, padding),
                bias=False,
            ),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(
                midplanes, out_planes, (3, 1, 1), stride=(stride, 1, 1), padding=(padding, 0, 0), bias=False
            ),
        )


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, conv_builder, stride=1, downsample=None):
        midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
        super().__init__()
        self.conv1 = nn.Sequential(
            conv_builder(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(conv_builder(planes, planes, midplanes), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


def basic_stem(width=64):
    return nn.Sequential(
        nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


def r2plus1d_stem(width=64, mid=45):
    return nn.Sequential(
        nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, (3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


class VideoResNet(nn.Module):
    def __init__(self, conv_builder, stem, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes=400):
        super().__init__()
        self.inplanes = 64
        self.stem = stem
        for i, (planes, blocks, stride) in enumerate(zip(widths, layers, (1, 2, 2, 2)), start=1):
            setattr(self, f"layer{i}", self._make_layer(conv_builder, planes, blocks, stride))
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(widths[-1], num_classes)

    def _make_layer(self, conv_builder, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, conv_builder, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, conv_builder) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x):
        """The four stage outputs, ``[B, C, T, H, W]`` each."""
        x = self.stem(x)
        outputs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outputs.append(x)
        return outputs


def r3d_18(**kwargs):
    return VideoResNet(Conv3DSimple, basic_stem(), **kwargs)


def r2plus1d_18(**kwargs):
    return VideoResNet(Conv2Plus1D, r2plus1d_stem(), **kwargs)
