"""3D CNN video encoders that expose their stages.

Three layouts of the same 18-layer residual family:

- ``"r3d"``: R3D-18 as in torchvision (3x7x7 stem, no max-pool, 3x3x3 convolutions).
- ``"r3d_hara"``: R3D-18 as in the "3D-ResNets-PyTorch" code that the MLFO authors trained (7x7x7 stem followed by
  a (1,3,3) max-pool).
- ``"r2plus1d"``: R(2+1)D-18 as in torchvision (every 3x3x3 convolution factorised into a spatial 1x3x3 and a
  temporal 3x1x1 convolution, with torchvision's mid-plane rule so that parameter counts match).

Like timm's ``features_only`` models, a backbone returns the output of each of its four stages and describes them in
``feature_info`` (channels and (t, h, w) stride per stage). Widths and depths are configurable so tests can build
tiny networks. Inputs are ``[B, C, T, H, W]``.

This module is shipped with pushed checkpoints as remote code: it imports nothing but torch and transformers.
"""

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


@dataclass(frozen=True)
class StageInfo:
    """What one stage of a backbone produces.

    Attributes:
        name: module path of the stage inside the backbone (``"stages.1"``).
        num_channels: channels of the stage output.
        stride: (t, h, w) total stride of the stage output with respect to the input clip.
    """

    name: str
    num_channels: int
    stride: tuple[int, int, int]


@dataclass(frozen=True)
class BackboneLayout:
    """The architectural choices that tell the three layouts apart."""

    stem_kernel: tuple[int, int, int]
    stem_max_pool: bool
    factorized: bool  # (2+1)D convolutions instead of full 3D ones


BACKBONE_LAYOUTS: dict[str, BackboneLayout] = {
    "r3d": BackboneLayout(stem_kernel=(3, 7, 7), stem_max_pool=False, factorized=False),
    "r3d_hara": BackboneLayout(stem_kernel=(7, 7, 7), stem_max_pool=True, factorized=False),
    "r2plus1d": BackboneLayout(stem_kernel=(3, 7, 7), stem_max_pool=False, factorized=True),
}

# Stage 1 keeps the stem's resolution; stages 2-4 halve time, height and width.
STAGE_STRIDES = (1, 2, 2, 2)


def backbone_strides(layout: str) -> list[tuple[int, int, int]]:
    """Total (t, h, w) stride of each stage output of ``layout``."""
    spatial = 4 if BACKBONE_LAYOUTS[layout].stem_max_pool else 2
    strides, t, s = [], 1, spatial
    for stage_stride in STAGE_STRIDES:
        t, s = t * stage_stride, s * stage_stride
        strides.append((t, s, s))
    return strides


def factorized_mid_channels(in_channels: int, out_channels: int, kernel_t: int = 3, kernel_s: int = 3) -> int:
    """Mid-plane width of a (2+1)D convolution that keeps the parameter count of the full 3D one.

    This is torchvision's rule (Tran et al., 2018): t*s*s*Cin*Cout = M*(s*s*Cin + t*Cout).
    """
    full = in_channels * out_channels * kernel_t * kernel_s * kernel_s
    return full // (in_channels * kernel_s * kernel_s + kernel_t * out_channels)


class Conv2Plus1d(nn.Module):
    """A (2+1)D convolution: spatial ``1 x k x k`` conv, BN and ReLU, then temporal ``k_t x 1 x 1`` conv.

    Args:
        in_channels, out_channels, mid_channels: channel widths.
        kernel: (k_t, k_h, k_w) of the full convolution it replaces.
        stride: int or (t, h, w) stride; the spatial conv takes the spatial stride, the temporal conv the temporal one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int,
        kernel: tuple[int, int, int] = (3, 3, 3),
        stride: int | tuple[int, int, int] = 1,
    ):
        super().__init__()
        st, sh, sw = (stride,) * 3 if isinstance(stride, int) else stride
        kt, kh, kw = kernel
        self.spatial = nn.Conv3d(
            in_channels,
            mid_channels,
            (1, kh, kw),
            stride=(1, sh, sw),
            padding=(0, kh // 2, kw // 2),
            bias=False,
        )
        self.spatial_norm = nn.BatchNorm3d(mid_channels)
        self.activation = nn.ReLU(inplace=True)
        self.temporal = nn.Conv3d(
            mid_channels, out_channels, (kt, 1, 1), stride=(st, 1, 1), padding=(kt // 2, 0, 0), bias=False
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.activation(self.spatial_norm(self.spatial(hidden_states))))


def _conv(
    in_channels: int, out_channels: int, factorized: bool, mid_channels: int, stride: int = 1
) -> nn.Module:
    if factorized:
        return Conv2Plus1d(in_channels, out_channels, mid_channels, stride=stride)
    return nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class VideoResNetStem(nn.Module):
    """Stem: a strided convolution (full or factorised), BN, ReLU, and the Hara layout's max-pool."""

    def __init__(self, layout: BackboneLayout, in_channels: int, out_channels: int):
        super().__init__()
        kt, kh, kw = layout.stem_kernel
        if layout.factorized:
            # torchvision fixes the stem's mid width at 45 for 64 output channels; scale it for other widths.
            self.conv = Conv2Plus1d(
                in_channels, out_channels, max(1, out_channels * 45 // 64), layout.stem_kernel, (1, 2, 2)
            )
        else:
            self.conv = nn.Conv3d(
                in_channels,
                out_channels,
                layout.stem_kernel,
                stride=(1, 2, 2),
                padding=(kt // 2, kh // 2, kw // 2),
                bias=False,
            )
        self.norm = nn.BatchNorm3d(out_channels)
        self.activation = nn.ReLU(inplace=True)
        self.pool = (
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
            if layout.stem_max_pool
            else nn.Identity()
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.norm(self.conv(pixel_values))))


class Shortcut(nn.Module):
    """Projection shortcut (1x1x1 conv + BN) used where a block changes width or resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(hidden_states))


class BasicBlock3d(GradientCheckpointingLayer):
    """Residual block of two 3x3x3 (or (2+1)D) convolutions, each followed by BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, factorized: bool):
        super().__init__()
        # torchvision computes one mid width per block from its input width and reuses it for both convolutions.
        mid_channels = factorized_mid_channels(in_channels, out_channels)
        self.conv1 = _conv(in_channels, out_channels, factorized, mid_channels, stride)
        self.norm1 = nn.BatchNorm3d(out_channels)
        self.conv2 = _conv(out_channels, out_channels, factorized, mid_channels)
        self.norm2 = nn.BatchNorm3d(out_channels)
        self.activation = nn.ReLU(inplace=True)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = Shortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(hidden_states)
        hidden_states = self.activation(self.norm1(self.conv1(hidden_states)))
        hidden_states = self.norm2(self.conv2(hidden_states))
        return self.activation(hidden_states + residual)


class VideoResNet(nn.Module):
    """A four-stage residual 3D CNN that returns every stage output.

    Args:
        layout: one of ``BACKBONE_LAYOUTS`` (``"r3d"``, ``"r3d_hara"``, ``"r2plus1d"``).
        in_channels: input channels (3 for RGB).
        embedding_size: stem output channels.
        hidden_sizes: output channels of the four stages.
        depths: residual blocks per stage.

    Shapes: ``forward(pixel_values [B, C, T, H, W])`` returns a tuple of four maps
    ``[B, hidden_sizes[i], T / st_i, H / s_i, W / s_i]`` whose strides are listed in ``feature_info``.
    """

    def __init__(
        self,
        layout: str = "r3d",
        in_channels: int = 3,
        embedding_size: int = 64,
        hidden_sizes: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 2, 2),
    ):
        super().__init__()
        if layout not in BACKBONE_LAYOUTS:
            raise ValueError(f"Unknown backbone {layout!r}; choose one of {sorted(BACKBONE_LAYOUTS)}.")
        # zip() below would silently drop stages (and feature_info would describe stages that do not exist).
        if not len(hidden_sizes) == len(depths) == len(STAGE_STRIDES):
            raise ValueError(
                f"`hidden_sizes` and `depths` need one entry per stage ({len(STAGE_STRIDES)}), got "
                f"{list(hidden_sizes)} and {list(depths)}."
            )
        if any(depth < 1 for depth in depths):
            raise ValueError(f"Every stage needs at least one block, got `depths`={list(depths)}.")
        spec = BACKBONE_LAYOUTS[layout]
        self.layout = layout
        self.stem = VideoResNetStem(spec, in_channels, embedding_size)
        stages, width = [], embedding_size
        for out_width, depth, stride in zip(hidden_sizes, depths, STAGE_STRIDES):
            blocks = [
                BasicBlock3d(
                    width if i == 0 else out_width, out_width, stride if i == 0 else 1, spec.factorized
                )
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            width = out_width
        self.stages = nn.ModuleList(stages)
        self.feature_info = [
            StageInfo(f"stages.{i}", width, stride)
            for i, (width, stride) in enumerate(zip(hidden_sizes, backbone_strides(layout)))
        ]

    @property
    def num_features(self) -> int:
        """Channels of the last stage, i.e. of the pooled clip embedding."""
        return self.feature_info[-1].num_channels

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden_states = self.stem(pixel_values)
        outputs = []
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            outputs.append(hidden_states)
        return tuple(outputs)


# --- torchvision checkpoints --------------------------------------------------------------------------------------

# torchvision's VideoResNet wraps every conv in nn.Sequential(conv, bn[, relu]) and names by position; a (2+1)D conv is
# itself nn.Sequential(spatial conv, bn, relu, temporal conv). These rules rename its keys to ours, one to one.
_TORCHVISION_RULES: list[tuple[str, str]] = [
    # R(2+1)D stem: Sequential(spatial conv, bn, relu, temporal conv, bn, relu)
    (r"^stem\.0\.(.*)$", r"stem.conv{spatial}.\1"),
    (r"^stem\.1\.(.*)$", r"stem.{stem_norm_1}.\1"),
    (r"^stem\.3\.(.*)$", r"stem.conv.temporal.\1"),
    (r"^stem\.4\.(.*)$", r"stem.norm.\1"),
    # residual blocks
    (r"^layer(\d)\.(\d+)\.conv([12])\.0\.0\.(.*)$", r"stages.{stage}.\2.conv\3.spatial.\4"),
    (r"^layer(\d)\.(\d+)\.conv([12])\.0\.1\.(.*)$", r"stages.{stage}.\2.conv\3.spatial_norm.\4"),
    (r"^layer(\d)\.(\d+)\.conv([12])\.0\.3\.(.*)$", r"stages.{stage}.\2.conv\3.temporal.\4"),
    (r"^layer(\d)\.(\d+)\.conv([12])\.0\.(weight|bias)$", r"stages.{stage}.\2.conv\3.\4"),
    (r"^layer(\d)\.(\d+)\.conv([12])\.1\.(.*)$", r"stages.{stage}.\2.norm\3.\4"),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.(.*)$", r"stages.{stage}.\2.shortcut.conv.\3"),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.(.*)$", r"stages.{stage}.\2.shortcut.norm.\3"),
]


def convert_torchvision_state_dict(
    state_dict: dict[str, torch.Tensor], layout: str
) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``VideoResNet`` state dict (``r3d_18``, ``r2plus1d_18``) to ``VideoResNet`` keys.

    The classification layer (``fc.*``) is dropped: it is not part of the encoder. Every other key must map, and
    the mapping is one to one, so a checkpoint from another architecture fails loudly here instead of loading
    partially.
    """
    factorized = BACKBONE_LAYOUTS[layout].factorized
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        for pattern, template in _TORCHVISION_RULES:
            match = re.match(pattern, key)
            if match is None:
                continue
            if pattern.startswith("^stem"):
                # In R3D the stem is Sequential(conv, bn, relu): stem.0 is the whole conv and stem.1 the stem norm.
                template = template.format(
                    spatial=".spatial" if factorized else "",
                    stem_norm_1="conv.spatial_norm" if factorized else "norm",
                )
            else:
                template = template.format(stage=int(match.group(1)) - 1)
            new_key = match.expand(template)
            break
        else:
            raise KeyError(f"Key {key!r} is not part of a torchvision VideoResNet {layout!r} state dict.")
        if new_key in converted:
            raise KeyError(
                f"Keys collide on {new_key!r}: is {layout!r} the right layout for this checkpoint?"
            )
        converted[new_key] = value
    return converted
