"""Heads, tap adapters and training-state modules shared by the hf_vssl pretraining models.

This module is imported by model code that is shipped with checkpoints (`trust_remote_code`), so it may only
import torch, transformers and sibling modules with single-dot relative imports.

Initialisation under transformers
---------------------------------
`from_pretrained` builds models on the meta device, loads the checkpoint, and then calls the model's
`_init_weights(module)` on every module (children first). Only the guarded functions of
`transformers.initialization` may touch tensors there: they skip tensors that were loaded from the checkpoint
(flagged `_is_hf_initialized`). The installed `transformers.initialization` provides `uniform_`, `normal_`,
`constant_`, `ones_`, `zeros_`, `eye_`, `dirac_`, `xavier_uniform_`, `xavier_normal_`, `kaiming_uniform_`,
`kaiming_normal_`, `trunc_normal_`, `orthogonal_`, `sparse_` and `copy_` (import it as
`from transformers import initialization as init`).

For the modules here, a model's `_init_weights` can simply call `init_module_(module)`, which restores the
values PyTorch gives a freshly constructed module, tensor by tensor, through those guarded functions:

| module | tensors | initial values |
|---|---|---|
| `nn.Linear`, `nn.Conv1d/2d/3d` (inside `PointwiseMLP`, `ProjectionMLP`, `MotionExcitation`), `Prototypes` | weight, bias | `init.kaiming_uniform_(w, a=sqrt(5))`, `init.uniform_(b, -1/sqrt(fan_in), 1/sqrt(fan_in))` |
| `nn.BatchNorm1d/2d/3d` | weight, bias, running_mean, running_var, num_batches_tracked | `ones_`, `zeros_`, `zeros_`, `ones_`, `zeros_` |
| `FeatureQueue` | queue, ptr, filled (persistent buffers) | `FeatureQueue.reset()` (guarded `init.zeros_`) |
| `GradientReversal` | none | - |

These are PyTorch's constructor defaults, which is what the MLFO authors' heads use. A model that prefers
the transformers default (`normal_(std=initializer_range)` for linear and conv layers) may leave the linear
layers to `super()._init_weights(module)`; `FeatureQueue` must still be reset because it is not a module
transformers knows.
"""

import copy
import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import initialization as init

__all__ = [
    "FeatureQueue",
    "GradientReversal",
    "MomentumCopy",
    "MotionExcitation",
    "PointwiseMLP",
    "ProjectionMLP",
    "Prototypes",
    "gradient_reversal",
    "init_module_",
    "momentum_update_",
    "tube_cell_weights",
    "tube_iou",
    "tube_pool",
]


class PointwiseMLP(nn.Sequential):
    """Two-layer MLP applied independently at every time step: `Conv1d(k=1) -> ReLU -> Conv1d(k=1)`.

    Both convolutions have a bias, there is no normalisation. The children are numbered `0` (first conv),
    `1` (ReLU) and `2` (second conv), the layout of the MLFO authors' `project*` heads, so their state-dict keys
    map one to one.

    Args:
        in_dim (`int`): input channels C.
        out_dim (`int`, defaults to 128): output channels.
        hidden_dim (`int`, *optional*): hidden channels; defaults to `in_dim`.

    Shapes:
        input `[B, in_dim, T]` -> output `[B, out_dim, T]`.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None):
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        _check_positive(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim)
        super().__init__(
            nn.Conv1d(in_dim, hidden_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden_dim, out_dim, kernel_size=1),
        )
        self.in_dim, self.out_dim, self.hidden_dim = in_dim, out_dim, hidden_dim

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.ndim != 3 or hidden_states.shape[1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} expects input of shape [B, {self.in_dim}, T], "
                f"got {tuple(hidden_states.shape)}."
            )
        return super().forward(hidden_states)


class ProjectionMLP(nn.Sequential):
    """Two-layer MLP on vectors: `Linear -> BatchNorm1d -> ReLU -> Linear` (the BN is optional).

    MLFO's global head is `ProjectionMLP(512, 512, 128)`; HDC's heads are `ProjectionMLP(C, C, 128)`. Children
    are numbered `0..3` (`0..2` without batch norm), the layout of the MLFO authors' `project_global`.

    Args:
        in_dim (`int`): input features.
        hidden_dim (`int`): hidden features.
        out_dim (`int`): output features.
        batch_norm (`bool`, defaults to `True`): insert `BatchNorm1d(hidden_dim)` after the first layer.

    Shapes:
        input `[B, in_dim]` -> output `[B, out_dim]`.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True):
        _check_positive(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim)
        layers = [nn.Linear(in_dim, hidden_dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        super().__init__(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.ndim != 2 or hidden_states.shape[1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} expects input of shape [B, {self.in_dim}], got {tuple(hidden_states.shape)}."
            )
        return super().forward(hidden_states)


class Prototypes(nn.Linear):
    """A bank of K learnable prototype vectors; the forward gives the scores `x @ weight.T`.

    This is a bias-free `nn.Linear(dim, num_prototypes)` (state-dict key `weight`, shape `[K, dim]`). Call
    `normalize_()` before each training step so that the rows have unit length and, for unit-length inputs, the
    scores are cosine similarities.

    Shapes:
        input `[B, dim]` -> scores `[B, num_prototypes]`.
    """

    def __init__(self, dim: int, num_prototypes: int):
        _check_positive(dim=dim, num_prototypes=num_prototypes)
        super().__init__(dim, num_prototypes, bias=False)

    @property
    def num_prototypes(self) -> int:
        return self.out_features

    @torch.no_grad()
    def normalize_(self) -> "Prototypes":
        """Re-normalise every prototype (row of `weight`) to unit L2 norm, in place."""
        self.weight.copy_(F.normalize(self.weight, dim=1))
        return self


class MotionExcitation(nn.Module):
    """Motion excitation: a channel gate driven by feature differences between neighbouring time steps.

    For every frame t of `x` `[B, C, T, H, W]` (C' = C // reduction):

        r_t  = BN(conv1x1(x_t))                       C -> C', no bias         (conv1, bn1)
        r'_t = depthwise conv3x3(r_t)                 C' groups, no bias       (conv2)
        m_t  = r'_{t+1} - r_t for t < T-1,  m_{T-1} = 0
        a_t  = sigmoid(BN(conv1x1(spatial_mean(m_t)))) - 1/2    C' -> C, no bias   (conv3, bn3)
        out_t = x_t + a_t * x_t

    The per-frame convolutions are `Conv2d` and the norms `BatchNorm2d` over `[B*T, ...]`, named `conv1`,
    `bn1`, `conv2`, `conv3`, `bn3`, so the MLFO authors' `MEBlock` weights load one to one.

    Args:
        channels (`int`): C.
        reduction (`int`, defaults to 16): channel reduction of the motion branch.

    Shapes:
        input `[B, C, T, H, W]` -> output `[B, C, T, H, W]`.
    """

    def __init__(self, channels: int, reduction: int = 16):
        _check_positive(channels=channels, reduction=reduction)
        if channels // reduction < 1:
            raise ValueError(f"`channels` ({channels}) must be at least `reduction` ({reduction}).")
        super().__init__()
        self.channels = channels
        self.reduction = reduction
        reduced = channels // reduction
        self.conv1 = nn.Conv2d(channels, reduced, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.conv2 = nn.Conv2d(reduced, reduced, kernel_size=3, padding=1, groups=reduced, bias=False)
        self.conv3 = nn.Conv2d(reduced, channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.ndim != 5 or hidden_states.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__} expects input of shape [B, {self.channels}, T, H, W], "
                f"got {tuple(hidden_states.shape)}."
            )
        batch, channels, steps, height, width = hidden_states.shape
        # Frames become batch items so that every 2D op runs on all frames at once.
        frames = hidden_states.transpose(1, 2).reshape(batch * steps, channels, height, width)
        reduced = self.bn1(self.conv1(frames))
        shifted = self.conv2(reduced)
        reduced = reduced.view(batch, steps, -1, height, width)
        shifted = shifted.view(batch, steps, -1, height, width)
        # The spatial mean is linear, so taking it before the difference gives the same m and is cheaper.
        motion = shifted[:, 1:].mean(dim=(3, 4)) - reduced[:, :-1].mean(dim=(3, 4))  # [B, T-1, C']
        motion = F.pad(motion, (0, 0, 0, 1))  # zero motion at the last step: [B, T, C']
        motion = motion.reshape(batch * steps, -1, 1, 1)
        gate = torch.sigmoid(self.bn3(self.conv3(motion))) - 0.5  # [B*T, C, 1, 1]
        out = frames + gate * frames
        return out.view(batch, steps, channels, height, width).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class _GradientReversalFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_states: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return hidden_states.view_as(hidden_states)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * (-ctx.strength), None


def gradient_reversal(hidden_states: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by `-strength` in the backward pass."""
    return _GradientReversalFunction.apply(hidden_states, float(strength))


class GradientReversal(nn.Module):
    """Gradient reversal layer (Ganin & Lempitsky): identity forward, gradient times `-strength` backward.

    `strength` is a plain attribute so that a schedule can set it every step (e.g. a ramp from 0 to lambda). It is
    not part of the state dict.
    """

    def __init__(self, strength: float = 1.0):
        super().__init__()
        self.strength = float(strength)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return gradient_reversal(hidden_states, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength}"


class FeatureQueue(nn.Module):
    """First-in-first-out queue of `size` keys of dimension `dim` (MoCo-style negatives, score queues).

    The state is three persistent buffers, so it travels with `save_state` / `save_pretrained`:
    `queue` `[size, dim]` (float32, zeros for empty slots), `ptr` (long scalar: the slot written next) and
    `filled` (long scalar: how many slots hold keys). Slots fill from 0 upwards and wrap around only once the
    queue is full, so the valid keys are always `queue[:filled]` (in storage order, not age order).

    `enqueue(keys)` writes the keys as if they were pushed one by one: a batch larger than the queue leaves only
    its last `size` keys. Nothing in `enqueue` or `valid_mask` needs a host-device synchronisation. In
    distributed training enqueue the keys gathered from all ranks so every rank holds the same queue.

    Args:
        dim (`int`): key dimension.
        size (`int`): number of slots.
    """

    def __init__(self, dim: int, size: int):
        _check_positive(dim=dim, size=size)
        super().__init__()
        self.dim = dim
        self.size = size
        # Zeros, not random keys: from_pretrained re-initialises buffers, which must be deterministic.
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_load_state_dict_post_hook(FeatureQueue._check_loaded_state)

    @staticmethod
    def _check_loaded_state(module: "FeatureQueue", incompatible_keys) -> None:
        # A queue restored from a checkpoint must be one this class could have written: a pointer inside the
        # queue and, until it is full, at the first empty slot. (Shapes are checked by load_state_dict itself.)
        if module.queue.is_meta:
            return
        ptr, filled = int(module.ptr), int(module.filled)
        if not (
            0 <= ptr < module.size and 0 <= filled <= module.size and (filled == module.size or ptr == filled)
        ):
            raise ValueError(
                f"{type(module).__name__} loaded an inconsistent state: ptr={ptr}, filled={filled} for size "
                f"{module.size} (the pointer must lie in [0, size) and equal `filled` until the queue is full)."
            )

    def reset(self) -> None:
        """Empty the queue through `transformers.initialization`, for a model's `_init_weights`.

        Buffers that `from_pretrained` loaded from a checkpoint are left untouched; use `clear()` to empty the
        queue unconditionally.
        """
        init.zeros_(self.queue)
        init.zeros_(self.ptr)
        init.zeros_(self.filled)

    @torch.no_grad()
    def clear(self) -> None:
        """Empty the queue unconditionally."""
        self.queue.zero_()
        self.ptr.zero_()
        self.filled.zero_()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Push `keys` `[B, dim]` (detached, cast to the queue's dtype), overwriting the oldest keys when full."""
        if not isinstance(keys, torch.Tensor) or keys.ndim != 2 or keys.shape[1] != self.dim:
            got = tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__
            raise ValueError(
                f"{type(self).__name__}.enqueue expects keys of shape [B, {self.dim}], got {got}."
            )
        num_keys = keys.shape[0]
        if num_keys == 0:
            return
        # Keys older than the last `size` of the batch would be overwritten within the same push.
        skipped = max(num_keys - self.size, 0)
        kept = keys[skipped:]
        slots = (self.ptr + skipped + torch.arange(kept.shape[0], device=self.queue.device)) % self.size
        self.queue.index_copy_(0, slots, kept.detach().to(device=self.queue.device, dtype=self.queue.dtype))
        self.ptr.copy_((self.ptr + num_keys) % self.size)
        self.filled.copy_(torch.clamp(self.filled + num_keys, max=self.size))

    def valid_mask(self) -> torch.Tensor:
        """`[size]` bool, `True` for slots that hold a key (e.g. `~mask` as an `info_nce` ignore mask)."""
        return torch.arange(self.size, device=self.queue.device) < self.filled

    def valid_keys(self) -> torch.Tensor:
        """The keys held, `[filled, dim]` (reads `filled` on the host: one synchronisation on accelerators)."""
        return self.queue[: int(self.filled)]

    def newest(self, count: int) -> torch.Tensor:
        """The `count` keys pushed last, oldest first: `[min(count, filled), dim]` (none for `count <= 0`).

        Age order, unlike `valid_keys`, for a FIFO read as a window that slides over the pushed keys.
        """
        count = max(min(int(count), int(self.filled)), 0)
        slots = (self.ptr - count + torch.arange(count, device=self.queue.device)) % self.size
        return self.queue[slots]

    def newest_window(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The slots of the `count` keys pushed last, oldest first, without reading `filled` on the host.

        Returns `keys` `[c, dim]` and `valid` `[c]` bool with `c = min(max(count, 0), size)`: always `c` rows, so
        shapes do not depend on how full the queue is (no synchronisation, no recompilation under
        `torch.compile`); while the queue fills, the first `c - filled` rows are not keys and `valid` is `False`
        there. `keys[valid]` equals `newest(count)`.
        """
        count = max(min(int(count), self.size), 0)
        ages = torch.arange(count, device=self.queue.device)
        slots = (self.ptr - count + ages) % self.size
        return self.queue[slots], ages >= count - self.filled

    def __len__(self) -> int:
        return int(self.filled)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}"


@torch.no_grad()
def momentum_update_(
    target_params: Iterable[torch.Tensor], online_params: Iterable[torch.Tensor], momentum: float
) -> None:
    """Exponential moving average in place: `target <- momentum * target + (1 - momentum) * online`.

    Pairs the two iterables in order (e.g. `momentum_encoder.parameters()` and `encoder.parameters()`), with one
    fused `_foreach` kernel per op. Buffers (BN running statistics) are not parameters and are not averaged.
    """
    target_params, online_params = list(target_params), list(online_params)
    if len(target_params) != len(online_params):
        raise ValueError(
            f"momentum_update_ needs as many target as online tensors, got {len(target_params)} and "
            f"{len(online_params)}."
        )
    for index, (target, online) in enumerate(zip(target_params, online_params)):
        if target.shape != online.shape:
            raise ValueError(
                f"momentum_update_: tensor {index} has shape {tuple(target.shape)} in the target and "
                f"{tuple(online.shape)} in the online model."
            )
    if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"`momentum` must be a number in [0, 1], got {momentum!r}.")
    if not target_params:
        return
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)


class MomentumCopy(nn.Module):
    """A momentum (EMA) copy of some online modules, e.g. a MoCo key encoder: backbone and heads.

    `MomentumCopy(backbone=model.backbone, heads=model.heads)` deep-copies each module under the same name and
    freezes the copies (`requires_grad=False`: no optimizer, no DDP gradient, no autograd graph). Being a plain
    container, the copy is never mistaken for a model's `base_model_prefix` child, and its state dict (keys
    `<name>.<...>`) travels with the pretraining model's training checkpoint, never with the released encoder.

    * `update_(momentum, **online)`: `copy <- momentum * copy + (1 - momentum) * online` for every parameter, in
      module order (`momentum_update_`); buffers (BN running statistics) are the copy's own.
    * `copy_from_(**online)`: every parameter and buffer of the copy set to the online values through the guarded
      `transformers.initialization.copy_`, for a model's `_init_weights`: tensors that `from_pretrained` loaded from
      a checkpoint are left alone, so a pretraining checkpoint restores its momentum copy while an encoder-only
      checkpoint gives a copy equal to the loaded online weights.
    """

    def __init__(self, **online: nn.Module):
        if not online:
            raise ValueError("MomentumCopy needs at least one module to copy.")
        super().__init__()
        for name, module in online.items():
            self.add_module(name, copy.deepcopy(module).requires_grad_(False))

    def _pairs(self, online: dict[str, nn.Module]):
        if set(online) != set(self._modules):
            raise ValueError(
                f"{type(self).__name__} copies {sorted(self._modules)}, got online modules {sorted(online)}."
            )
        return [(self._modules[name], online[name]) for name in self._modules]

    @torch.no_grad()
    def update_(self, momentum: float, **online: nn.Module) -> None:
        """EMA step of every parameter of the copy towards the online modules (after an optimizer step)."""
        pairs = self._pairs(online)
        momentum_update_(
            [p for target, _ in pairs for p in target.parameters()],
            [p for _, source in pairs for p in source.parameters()],
            momentum,
        )

    @torch.no_grad()
    def copy_from_(self, **online: nn.Module) -> None:
        """Set every parameter and buffer of the copy to the online module's (guarded: loaded tensors stay)."""
        for target, source in self._pairs(online):
            targets = [*target.parameters(), *target.buffers()]
            sources = [*source.parameters(), *source.buffers()]
            if [t.shape for t in targets] != [s.shape for s in sources]:
                raise ValueError(f"{type(self).__name__}: the online module no longer matches its copy.")
            for t, s in zip(targets, sources):
                init.copy_(t, s)


def init_module_(module: nn.Module) -> bool:
    """Give one module's own tensors their PyTorch-constructor values through `transformers.initialization`.

    Meant for a model's `_init_weights(module)`: it touches only the module's direct tensors (children are
    visited separately) and skips tensors loaded from a checkpoint. Returns `True` when the module type is
    handled (linear, conv, batch norm, `Prototypes`, `FeatureQueue`), `False` otherwise.
    """
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(module.bias, -bound, bound)
        return True
    if isinstance(module, nn.modules.batchnorm._NormBase):
        if module.weight is not None:
            init.ones_(module.weight)
        if module.bias is not None:
            init.zeros_(module.bias)
        if module.running_mean is not None:
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        return True
    if isinstance(module, FeatureQueue):
        module.reset()
        return True
    return False


def _check_positive(**sizes) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


# --- Tube geometry: regions of a feature map given by normalised spatio-temporal boxes ------------------------------
# A tube is `(t0, t1, x0, y0, x1, y1)` in the normalised coordinates of a view: time and both image axes run over
# [0, 1], and a stage map with T x H x W cells has cell (t, h, w) covering [t/T, (t+1)/T) x [h/H, (h+1)/H) x
# [w/W, (w+1)/W) (the convention of `CtrlAugViews`' tubes). Nothing here has parameters.


def _interval_overlap(start: torch.Tensor, end: torch.Tensor, cells: int) -> torch.Tensor:
    """Fraction of each of `cells` equal cells of [0, 1] covered by [start, end]: `[..., cells]` from `[...]`."""
    edges = torch.arange(cells + 1, device=start.device, dtype=start.dtype) / cells
    covered = torch.minimum(end[..., None], edges[1:]) - torch.maximum(start[..., None], edges[:-1])
    return covered.clamp_min(0) * cells


def tube_cell_weights(tubes: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    r"""Fraction of every cell's volume that each tube covers, a product of three 1-D overlaps.

        w[t, h, w] = o_t(t0, t1) * o_y(y0, y1)[h] * o_x(x0, x1)[w],   o(a, b)[c] = |[a, b] & cell c| / |cell c|

    Args:
        tubes (`torch.Tensor` of shape `[..., 6]`): `(t0, t1, x0, y0, x1, y1)`, normalised.
        grid (`tuple[int, int, int]`): cells `(T, H, W)` of the feature map.

    Returns:
        `torch.Tensor` of shape `[..., T, H, W]`, in [0, 1], float32 at least (float64 for float64 tubes).
    """
    if not isinstance(tubes, torch.Tensor) or tubes.ndim < 1 or tubes.shape[-1] != 6:
        got = tuple(tubes.shape) if isinstance(tubes, torch.Tensor) else type(tubes).__name__
        raise ValueError(f"`tubes` must have shape [..., 6] (t0, t1, x0, y0, x1, y1), got {got}.")
    tubes = tubes.detach()
    if tubes.dtype != torch.float64:
        tubes = tubes.float()
    t0, t1, x0, y0, x1, y1 = tubes.unbind(-1)
    frames, height, width = grid
    over_t = _interval_overlap(t0, t1, frames)
    over_y = _interval_overlap(y0, y1, height)
    over_x = _interval_overlap(x0, x1, width)
    return over_t[..., :, None, None] * over_y[..., None, :, None] * over_x[..., None, None, :]


def tube_pool(feature_map: torch.Tensor, tubes: torch.Tensor) -> torch.Tensor:
    r"""Region features: the overlap-weighted average of a map's cells inside each tube (a soft RoI pooling).

        r_k = sum_{thw} w_k[t, h, w] F[:, t, h, w] / sum_{thw} w_k[t, h, w]   (weights from `tube_cell_weights`)

    The weights are constants (no gradient to the tubes); a tube that covers no cell gives a zero vector.
    Computed in at least float32 with autocast off.

    Args:
        feature_map (`torch.Tensor` of shape `[B, C, T, H, W]`): one view's stage map per video.
        tubes (`torch.Tensor` of shape `[B, K, 6]`): K tubes per video in that view's normalised coordinates.

    Returns:
        `torch.Tensor` of shape `[B, K, C]`.
    """
    if feature_map.ndim != 5 or tubes.ndim != 3 or tubes.shape[0] != feature_map.shape[0]:
        raise ValueError(
            f"tube_pool takes `feature_map` [B, C, T, H, W] and `tubes` [B, K, 6], got "
            f"{tuple(feature_map.shape)} and {tuple(tubes.shape)}."
        )
    with torch.autocast(device_type=feature_map.device.type, enabled=False):
        if feature_map.dtype in (torch.float16, torch.bfloat16):
            feature_map = feature_map.float()
        weights = tube_cell_weights(tubes, feature_map.shape[2:]).to(feature_map.dtype)  # [B, K, T, H, W]
        weights = weights / weights.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1e-12)
        return torch.einsum("bkthw,bcthw->bkc", weights, feature_map)


def tube_iou(tubes_a: torch.Tensor, tubes_b: torch.Tensor) -> torch.Tensor:
    r"""3-D intersection over union of every pair of tubes of the same video: `[B, K, 6] x [B, L, 6] -> [B, K, L]`.

    Tubes are axis-aligned boxes in (t, x, y): the intersection volume is the product of the three 1-D overlaps.
    Empty tubes give 0 (never nan).
    """
    a, b = tubes_a.detach()[:, :, None], tubes_b.detach()[:, None, :]

    def overlap(start, end):
        return (
            torch.minimum(a[..., end], b[..., end]) - torch.maximum(a[..., start], b[..., start])
        ).clamp_min(0)

    def volume(tube):
        return (
            (tube[..., 1] - tube[..., 0]).clamp_min(0)
            * (tube[..., 4] - tube[..., 2]).clamp_min(0)
            * (tube[..., 5] - tube[..., 3]).clamp_min(0)
        )

    intersection = overlap(0, 1) * overlap(2, 4) * overlap(3, 5)
    union = volume(a) + volume(b) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1e-12), torch.zeros_like(union))
