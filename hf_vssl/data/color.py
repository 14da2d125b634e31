"""Stage-2 colour: jitter, random gray, Gaussian blur and normalisation of rendered frames, as tensor operations.

Colour jitter has two implementations (``color_mode`` of a recipe), both reading the same sampled parameters
(:func:`~hf_vssl.data.sampling.sample_color_params`):

* ``"sequential"``: torchvision's tensor semantics: brightness ``x*b``, contrast ``c*x + (1-c)*mean(gray(x))``,
  saturation ``s*x + (1-s)*gray(x)``, hue shift in HSV, each followed by a clamp to ``[0, 1]``, in the drawn
  order; gray = ITU-R 601 luma ``(0.2989, 0.587, 0.114)`` or one RGB channel repeated.
* ``"fused"`` (default): the same chain without the intermediate clamps and with the hue shift done as a
  rotation in YIQ space (as NVIDIA DALI's ``ColorTwist``), so the whole chain (gray included) is one affine
  colour map per frame, composed in the drawn order; one clamp to ``[0, 1]`` at the end. It costs a few tensor
  passes instead of a few dozen, which is what lets CPU pipelines keep up with decoding (see
  ``benchmarks/data_throughput.py``). Without clamping and with zero hue both modes agree exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .sampling import BRIGHTNESS, CONTRAST, HUE, SATURATION

__all__ = [
    "COLOR_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "adjust_hue",
    "apply_fused_color",
    "color_matrices",
    "fused_color_maps",
    "fused_color_workspace",
    "gaussian_blur",
    "render_color",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
# RGB -> YIQ (NTSC); the Y row is luma, rotations in the I-Q plane shift hue and keep luma
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)

COLOR_MODES = ("fused", "sequential")


def render_color(
    clips: torch.Tensor,
    params: dict[str, torch.Tensor],
    mode: str = "fused",
    gray_before_jitter: bool = False,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Colour jitter, gray and normalisation of ``N`` frames (blur is separate: :func:`gaussian_blur`).

    Args:
        clips: ``[N, 3, H, W]`` values in ``[0, 255]`` (``uint8`` or float).
        params: ``brightness``, ``contrast``, ``saturation``, ``hue``, ``gray``, ``gray_channel`` ``[N]`` and
            ``jitter_order`` ``[N, 4]``.
        mode: ``"fused"`` or ``"sequential"`` (see the module docstring).

    Returns:
        ``float32 [N, 3, H, W]``: ``(clamp(color(x / 255), 0, 1) - mean) / std``.
    """
    if mode not in COLOR_MODES:
        raise ValueError(f"mode must be one of {COLOR_MODES}, got {mode!r}")
    if mode == "fused":
        maps = fused_color_maps(params, gray_before_jitter, mean, std)
        return apply_fused_color(clips, *maps, mean, std)
    N, C, H, W = clips.shape
    x = clips.reshape(N, C, H * W).float() / 255.0
    out = _color_sequential(x, params, gray_before_jitter)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device)[None, :, None]
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device)[None, :, None]
    return out.sub_(mean_t).div_(std_t).view(N, C, H, W)


def fused_color_maps(
    params: dict[str, torch.Tensor],
    gray_before_jitter: bool,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`color_matrices` rescaled to act on ``[0, 255]`` input and produce normalised output.

    Returns:
        ``(M [N, 3, 3], Q [N, 3, 3], offset [3])`` with
        ``normalised = M @ x + Q @ mean_rgb(x) + offset`` for ``x`` in ``[0, 255]``.
    """
    matrix, mean_map = color_matrices(params, gray_before_jitter)
    device = matrix.device
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    scale = (1.0 / (255.0 * std_t))[None, :, None]
    return matrix * scale, mean_map * scale, -mean_t / std_t


def apply_fused_color(
    clips: torch.Tensor,
    matrix: torch.Tensor,
    mean_map: torch.Tensor,
    offset: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the maps of :func:`fused_color_maps` to ``clips`` ``[n, 3, H, W]`` (``[0, 255]``, any dtype).

    The result is clamped to the normalised image of ``[0, 1]`` and written to ``out`` (``float32 [n, 3, H, W]``)
    when given. ``workspace`` (from :func:`fused_color_workspace`) can be reused across calls of equal shape.
    """
    n, C, H, W = clips.shape
    if workspace is None:
        workspace = fused_color_workspace(n, (H, W), clips.device)
    # [x; 1]: the bias becomes a fourth column of the colour matrix, so one bmm applies the whole affine map
    x = workspace[:n]
    x[:, :C].copy_(clips.reshape(n, C, H * W))  # dtype conversion (and channels-last -> planar) in one pass
    bias = torch.bmm(mean_map, x[:, :C].mean(dim=2, keepdim=True)).add_(offset[None, :, None])  # [n, 3, 1]
    if out is None:
        out = torch.empty((n, C, H, W), dtype=torch.float32, device=clips.device)
    flat_out = out.view(n, C, H * W)
    torch.bmm(torch.cat([matrix, bias], dim=2), x, out=flat_out)
    for c in range(C):
        flat_out[:, c].clamp_(-mean[c] / std[c], (1.0 - mean[c]) / std[c])
    return out


def fused_color_workspace(n: int, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Scratch buffer ``float32 [n, 4, H*W]`` for :func:`apply_fused_color` (its last row is ones)."""
    workspace = torch.empty((n, 4, size[0] * size[1]), dtype=torch.float32, device=device)
    workspace[:, 3] = 1.0
    return workspace


def _luma(device: torch.device) -> torch.Tensor:
    return torch.tensor(LUMA_WEIGHTS, dtype=torch.float32, device=device)


def _gray_matrices(gray: torch.Tensor, gray_channel: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` maps that turn a frame gray (identity where ``gray`` is False)."""
    n, device = gray.shape[0], gray.device
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    channel_rows = F.one_hot(gray_channel.clamp(min=0), 3).float()  # [N, 3]
    rows = torch.where((gray_channel >= 0)[:, None], channel_rows, _luma(device).expand(n, 3))
    return torch.where(gray[:, None, None], rows[:, None, :].expand(n, 3, 3), eye)


def _hue_matrices(hue: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` YIQ rotations; a positive shift turns red towards yellow, as in HSV."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float32, device=hue.device)
    theta = -2.0 * math.pi * hue.float()
    cos, sin = torch.cos(theta), torch.sin(theta)
    rotation = torch.zeros(hue.shape[0], 3, 3, device=hue.device)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    return torch.linalg.inv(to_yiq) @ rotation @ to_yiq


def color_matrices(
    params: dict[str, torch.Tensor], gray_before_jitter: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused colour map of each frame on ``[0, 1]`` RGB, before the final clamp.

    Contrast blends with the mean luma of the frame as it is at that point of the chain, which is linear in the
    input frame's mean colour ``m`` (every step is linear), so the whole chain is ``y = M @ x + Q @ m``.

    Args:
        params: as :func:`render_color`.

    Returns:
        ``(M [N, 3, 3], Q [N, 3, 3])``.
    """
    gray = _gray_matrices(params["gray"], params["gray_channel"])
    n, device = gray.shape[0], gray.device
    eye = torch.eye(3, device=device)
    luma_rows = torch.ones(3, 1, device=device) * _luma(device)[None, :]  # every channel <- luma
    matrix, mean_map = eye.expand(n, 3, 3).clone(), torch.zeros(n, 3, 3, device=device)
    if gray_before_jitter:
        matrix, mean_map = gray @ matrix, gray @ mean_map
    b, c, s = (params[k].float()[:, None, None] for k in ("brightness", "contrast", "saturation"))
    op_matrices = {
        BRIGHTNESS: b * eye,
        CONTRAST: c * eye,
        SATURATION: s * eye + (1.0 - s) * luma_rows,
        HUE: _hue_matrices(params["hue"]),
    }
    order = params["jitter_order"]
    for step in range(4):
        op = order[:, step][:, None, None]
        step_matrix = eye.expand(n, 3, 3)
        for op_id, op_matrix in op_matrices.items():
            step_matrix = torch.where(op == op_id, op_matrix, step_matrix)
        # contrast: y = c x + (1 - c) luma(mean(x)), and mean(x) = (M + Q) m
        contrast_term = torch.where(op == CONTRAST, (1.0 - c) * (luma_rows @ (matrix + mean_map)), 0.0)
        matrix, mean_map = step_matrix @ matrix, step_matrix @ mean_map + contrast_term
    if not gray_before_jitter:
        matrix, mean_map = gray @ matrix, gray @ mean_map
    return matrix, mean_map


def _color_sequential(
    x: torch.Tensor, params: dict[str, torch.Tensor], gray_before_jitter: bool
) -> torch.Tensor:
    """torchvision-style jitter with a clamp after each operation; ``x`` ``[N, 3, P]`` in ``[0, 1]``."""
    gray = _gray_matrices(params["gray"], params["gray_channel"])
    luma = _luma(x.device)
    if gray_before_jitter:
        x = torch.bmm(gray, x)
    b, c, s, h = (params[k].float()[:, None, None] for k in ("brightness", "contrast", "saturation", "hue"))
    order = params["jitter_order"]
    for step in range(4):
        op = order[:, step][:, None, None]
        # brightness, contrast and saturation all read y = alpha*x + beta*gray(x) + gamma*mean(gray(x))
        alpha = torch.where(
            op == BRIGHTNESS, b, torch.where(op == CONTRAST, c, torch.where(op == SATURATION, s, 1.0))
        )
        beta = torch.where(op == SATURATION, 1.0 - s, 0.0)
        gamma = torch.where(op == CONTRAST, 1.0 - c, 0.0)
        luma_x = torch.einsum("c,ncp->np", luma, x).unsqueeze(1)  # [N, 1, P]
        x = (alpha * x + beta * luma_x + gamma * luma_x.mean(dim=2, keepdim=True)).clamp_(0.0, 1.0)
        hue_frames = torch.nonzero((op[:, 0, 0] == HUE) & (h[:, 0, 0] != 0)).squeeze(1)
        if hue_frames.numel():
            x[hue_frames] = adjust_hue(x[hue_frames], h[hue_frames, 0, 0])
    if not gray_before_jitter:
        x = torch.bmm(gray, x)
    return x


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift the HSV hue of ``x`` ``[N, 3, P]`` in ``[0, 1]`` by ``shift`` ``[N]`` (fractions of the circle)."""
    r, g, b = x.unbind(1)
    value, _ = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = (value - r) / safe, (value - g) / safe, (value - b) / safe
    is_r = value == r
    is_g = (value == g) & ~is_r
    hue = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.remainder(hue / 6.0 + shift[:, None], 1.0)
    # HSV -> RGB: channel n in (R, G, B) = V - C * clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device)[None, :, None]
    k = torch.remainder(n + 6.0 * hue[:, None, :], 6.0)
    return value[:, None, :] - chroma[:, None, :] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def gaussian_blur(
    images: torch.Tensor, sigma: torch.Tensor | float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per image; reflect padding.

    The kernel radius is ``ceil(3 sigma)`` (at most the image side minus one), so an image's result does not
    depend on the other images of the batch. Each run of images with equal ``sigma`` (the frames of a view)
    is blurred with two matrix products by banded blur matrices that fold the reflection in: on CPUs that
    is two to three times as fast as a depthwise convolution, and it needs no padded copy.

    Args:
        images: ``float [N, C, H, W]``.
        sigma: ``[N]`` standard deviations in pixels, or one for all; ``0`` leaves an image as it is.
        out: optional output (may be ``images`` itself: the blur then runs in place).
    """
    N, C, H, W = images.shape
    if out is None:
        out = torch.empty_like(images)
    sigmas = [float(sigma)] * N if not torch.is_tensor(sigma) or sigma.dim() == 0 else sigma.tolist()
    start = 0
    while start < N:
        end = start + 1
        while end < N and sigmas[end] == sigmas[start]:
            end += 1
        if sigmas[start] > 0:
            rows = _blur_matrix(sigmas[start], H, images.device)
            cols = _blur_matrix(sigmas[start], W, images.device)
            torch.matmul(rows, torch.matmul(images[start:end], cols.T), out=out[start:end])
        elif out.data_ptr() != images.data_ptr():
            out[start:end] = images[start:end]
        start = end
    return out


def _blur_matrix(sigma: float, size: int, device: torch.device) -> torch.Tensor:
    """``[size, size]`` matrix ``K`` with ``K @ x`` = ``x`` blurred along its first axis (reflect padding)."""
    radius = min(math.ceil(3.0 * sigma), size - 1)
    taps = torch.arange(-radius, radius + 1, device=device)
    kernel = torch.exp(-0.5 * (taps.float() / sigma) ** 2)
    kernel /= kernel.sum()
    source = (torch.arange(size, device=device)[:, None] + taps[None, :]).abs()  # reflect at 0 ...
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # ... and at size - 1
    matrix = torch.zeros(size, size, device=device)
    return matrix.scatter_add_(1, source, kernel.expand(size, -1).contiguous())
