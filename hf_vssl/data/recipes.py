"""View recipes of the three methods and of evaluation, on top of the view engine (:mod:`.plans`).

Each recipe is a small dataclass: its fields are the method's view hyper-parameters with the defaults of
``docs/METHODS.md``, and :meth:`plan` draws one video's views. MLFO's recipe follows the authors' code; ctrlaug's
and HDC's are reconstructions ([ours] in METHODS.md) and every choice is a field so it can be ablated.

========================  =============================================  ==============================
recipe                    views along V                                  extras in the batch
========================  =============================================  ==============================
:class:`MLFOViews`        ``clip_a``, ``clip_b``, ``global``             ``temporal_stride`` ``[B]``
:class:`CtrlAugViews`     ``global``, ``local_1`` .. ``local_K``         ``tubes`` ``[B, K, 6]``,
                                                                         ``global_span`` ``[B, 2]``
:class:`HDCViews`         ``anchor``, ``spatial_positive``,              --
                          ``temporal_positive``
:class:`ClipViews`        ``clip`` (supervised training)                 --
:class:`EvalViews`        clip-major: clip 0 crops 0..n-1, clip 1 ...    --
========================  =============================================  ==============================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ..video_decoding import VideoInfo
from .plans import ViewPlan, ViewRecipe
from .sampling import ColorSpec, CropSpec, FrameGeometry, box_coverage, sample_color_params, sample_crop_box

__all__ = ["RECIPES", "ClipViews", "CtrlAugViews", "EvalViews", "HDCViews", "MLFOViews", "build_recipe"]


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _draw_boxes(rng: np.random.Generator, geometry: FrameGeometry, spec: CropSpec | None, count: int):
    """``count`` independent crop boxes, snapped: ``(canvas int64 [count, 4], source float32 [count, 4])``."""
    height, width = geometry.sampling_size
    boxes = np.stack([sample_crop_box(rng, height, width, spec) for _ in range(count)])
    return geometry.snap(boxes)


# --------------------------------------------------------------------------------------------------------------
# MLFO
# --------------------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class MLFOViews(ViewRecipe):
    """MLFO's views (METHODS.md §1, from the authors' code).

    ``2 * clip_length`` frame indices at a real stride ``r ~ U(min_rate, min(max_rate, F / (2 * clip_length)))``
    from a random integer start ``s`` (``index_k = min(round(s + k r), F - 1)``): clip A = the first half, clip B
    = the second half (adjacent), global clip G = the even indices (A and B at half the frame rate). The
    ``2 * clip_length`` frames are decoded once; G reuses them. Each clip has its own random resized crop (one
    box for all its frames), flip and colour draws.

    Args:
        clip_length: frames per clip (16).
        min_rate, max_rate: range of the real-valued stride (1, 3).
        squash_size: ``(H, W)`` frame in which crop boxes are drawn (the code squashes every frame to 200x150
            before cropping, so crop areas and aspect ratios refer to that frame). ``None``: the source frame.
            Pixels are resampled once, from the decoded frame straight to the output size; add
            ``canvas_size=(150, 200)`` to also materialise the squashed frame at decode, as the code does.
        crop: the code's ``RandomSizedCrop``: area U(0.5, 1), aspect U(3/4, 4/3) (linear), w/h swap p=0.5,
            10 tries, then the centred square.
        flip_prob: horizontal flip per clip.
        color: jitter b=c=s=0.5, h=0.25 (always applied, random order), random gray p=0.5 by channel splitting.
        per_frame_color: one colour/gray draw per frame, as the code (``False``: one per clip).
        gray_before_jitter: the code applies random gray before colour jitter.

    Videos with ``F <= 2 * clip_length`` frames are too short (the code drops them).
    """

    clip_length: int = 16
    min_rate: float = 1.0
    max_rate: float = 3.0
    squash_size: tuple[int, int] | None = (150, 200)
    crop: CropSpec | None = CropSpec(scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), log_ratio=False, swap_prob=0.5)
    flip_prob: float = 0.5
    color: ColorSpec = ColorSpec(
        brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, gray_prob=0.5, gray_mode="channel"
    )
    per_frame_color: bool = True
    gray_before_jitter: bool = True

    view_names: ClassVar[tuple[str, ...]] = ("clip_a", "clip_b", "global")

    def __post_init__(self):
        super().__post_init__()
        if self.clip_length < 1 or not 1 <= self.min_rate <= self.max_rate:
            raise ValueError(f"MLFOViews needs clip_length >= 1 and 1 <= min_rate <= max_rate, got {self}")

    @property
    def min_num_frames(self) -> int:
        return 2 * self.clip_length + 1

    def sampling_size(self, info: VideoInfo) -> tuple[int, int]:
        return tuple(self.squash_size) if self.squash_size is not None else (info.height, info.width)

    def plan(self, info: VideoInfo, geometry: FrameGeometry, rng: np.random.Generator) -> ViewPlan:
        T, num_frames = self.clip_length, info.num_frames
        length = 2 * T
        rate = rng.uniform(self.min_rate, max(self.min_rate, min(self.max_rate, num_frames / length)))
        start = rng.integers(0, max(0, math.floor(num_frames - length * rate)) + 1)
        decode_indices = np.minimum(_round_half_up(start + np.arange(length) * rate), num_frames - 1)
        slots = np.stack([np.arange(T), np.arange(T, length), np.arange(0, length, 2)])
        canvas_boxes, crop_boxes = _draw_boxes(rng, geometry, self.crop, 3)
        flips = rng.random(3) < self.flip_prob
        color = sample_color_params(rng, 3, T, replace(self.color, per_frame=self.per_frame_color))
        extras = {"temporal_stride": np.float32(rate)}
        return ViewPlan(decode_indices, slots, canvas_boxes, crop_boxes, flips, color, extras)


# --------------------------------------------------------------------------------------------------------------
# ctrlaug
# --------------------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class CtrlAugViews(ViewRecipe):
    """ctrlaug's views (METHODS.md §2, [ours]): local clips placed inside a global view, with exact geometry.

    Global view G: ``clip_length`` frames spread uniformly over a span of ``L_G = round(global_span * F)`` frames
    starting at ``s_G``; frame ``i`` of G is source frame ``floor(s_G + (i + 0.5) L_G / T)``, so it stands for
    the time slot ``[s_G + i L_G / T, s_G + (i + 1) L_G / T)``. One crop box ``B_G``, optional flip.

    Local clip k: ``clip_length`` dense frames ``s_k + j r_k`` (stride ``r_k`` from ``local_strides``); its
    window ``[s_k, s_k + T r_k)`` lies inside G's span and ``L_G >= min_span_ratio * T * r_k``. Its box is
    redrawn until at least ``min_local_coverage`` of its area lies inside ``B_G`` (after ``coverage_attempts``
    the box is moved inside ``B_G``).

    Tubes (``tubes`` ``[B, K, 6]`` = ``t0, t1, x0, y0, x1, y1``): local clip k in G's normalised coordinates.

    * time: ``t0 = (s_k - s_G) / L_G``, ``t1 = (s_k + T r_k - s_G) / L_G``. G's frame ``i`` covers
      ``[i / T, (i + 1) / T)`` of the same axis, so a stage map with ``T'`` time steps has cell ``t`` covering
      ``[t / T', (t + 1) / T')``.
    * space: ``x = (X - X0_G) / (X1_G - X0_G)`` (same for y) from the source-pixel boxes, mirrored
      (``x -> 1 - x``, ends swapped) when G is flipped, so the box is where the clip's region appears in G's
      *rendered* frames; clipped to ``[0, 1]`` (only the part inside ``B_G`` is visible in G). The local clip's
      own flip does not move it (its content appears mirrored relative to G's iff exactly one of the two views
      is flipped). A stage map with ``H' x W'`` cells has cell ``(h, w)`` covering
      ``[w / W', (w + 1) / W') x [h / H', (h + 1) / H')``.

    ``global_span`` ``[B, 2]`` records ``(s_G, L_G)`` in source frames.
    """

    clip_length: int = 16
    num_local_clips: int = 2
    local_strides: tuple[int, ...] = (1, 2)
    global_span: float = 1.0
    min_span_ratio: float = 4.0
    global_crop: CropSpec | None = CropSpec(scale=(0.5, 1.0))
    local_crop: CropSpec | None = CropSpec(scale=(0.2, 0.6))
    min_local_coverage: float = 0.5
    coverage_attempts: int = 20
    global_flip_prob: float = 0.5
    local_flip_prob: float = 0.5
    color: ColorSpec = ColorSpec(
        brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_prob=0.8, gray_prob=0.2
    )

    model_input_names: ClassVar[tuple[str, ...]] = ("pixel_values", "tubes")

    @property
    def view_names(self) -> tuple[str, ...]:
        return ("global", *(f"local_{k + 1}" for k in range(self.num_local_clips)))

    def __post_init__(self):
        super().__post_init__()
        if (
            self.clip_length < 1
            or self.num_local_clips < 1
            or not self.local_strides
            or min(self.local_strides) < 1
        ):
            raise ValueError(
                f"CtrlAugViews needs clip_length, num_local_clips, local_strides >= 1, got {self}"
            )
        if not 0 < self.global_span <= 1 or self.min_span_ratio < 1:
            raise ValueError(f"CtrlAugViews needs 0 < global_span <= 1 and min_span_ratio >= 1, got {self}")
        if not 0 <= self.min_local_coverage <= 1:
            raise ValueError(f"min_local_coverage must be in [0, 1], got {self.min_local_coverage}")

    @property
    def min_num_frames(self) -> int:
        span = max(self.min_span_ratio * self.clip_length * min(self.local_strides), self.clip_length)
        return math.ceil(span / self.global_span - 1e-9)

    def plan(self, info: VideoInfo, geometry: FrameGeometry, rng: np.random.Generator) -> ViewPlan:
        T, K, num_frames = self.clip_length, self.num_local_clips, info.num_frames
        span = min(num_frames, round(self.global_span * num_frames))
        strides = [r for r in self.local_strides if self.min_span_ratio * T * r <= span and T * r <= span]
        if span < T or not strides:
            raise self.too_short(info)
        global_start = int(rng.integers(0, num_frames - span + 1))
        global_indices = np.floor(global_start + (np.arange(T) + 0.5) * span / T).astype(np.int64)
        local_strides = rng.choice(strides, size=K)
        local_starts = global_start + np.array([rng.integers(0, span - T * r + 1) for r in local_strides])
        local_indices = local_starts[:, None] + np.arange(T)[None, :] * local_strides[:, None]
        decode_indices = np.concatenate([global_indices, local_indices.reshape(-1)])
        slots = np.arange((K + 1) * T).reshape(K + 1, T)

        global_canvas, global_box = _draw_boxes(rng, geometry, self.global_crop, 1)
        local_canvas, local_boxes = zip(*(self._local_box(rng, geometry, global_box[0]) for _ in range(K)))
        canvas_boxes = np.concatenate([global_canvas, np.stack(local_canvas)])
        crop_boxes = np.concatenate([global_box, np.stack(local_boxes)])
        flips = np.concatenate([rng.random(1) < self.global_flip_prob, rng.random(K) < self.local_flip_prob])
        color = sample_color_params(rng, K + 1, T, self.color)

        tubes = np.zeros((K, 6), dtype=np.float32)
        tubes[:, 0] = (local_starts - global_start) / span
        tubes[:, 1] = (local_starts + T * local_strides - global_start) / span
        gx0, gy0, gx1, gy1 = crop_boxes[0].astype(np.float64)
        u = (crop_boxes[1:, [0, 2]] - gx0) / (gx1 - gx0)
        v = (crop_boxes[1:, [1, 3]] - gy0) / (gy1 - gy0)
        if flips[0]:
            u = 1.0 - u[:, ::-1]
        tubes[:, 2], tubes[:, 4] = u[:, 0], u[:, 1]
        tubes[:, 3], tubes[:, 5] = v[:, 0], v[:, 1]
        tubes[:, 2:] = np.clip(tubes[:, 2:], 0.0, 1.0)
        extras = {"tubes": tubes, "global_span": np.array([global_start, span], dtype=np.float32)}
        return ViewPlan(decode_indices, slots, canvas_boxes, crop_boxes, flips, color, extras)

    def _local_box(self, rng: np.random.Generator, geometry: FrameGeometry, global_box: np.ndarray):
        """One local box (canvas, source) whose coverage by the global box is >= ``min_local_coverage``."""
        height, width = geometry.sampling_size
        box = None
        for _ in range(self.coverage_attempts):
            box = sample_crop_box(rng, height, width, self.local_crop)
            canvas, source = geometry.snap(box)
            if box_coverage(source, global_box) >= self.min_local_coverage:
                return canvas, source
        # Fallback: keep the drawn size (shrunk to fit) and place the box uniformly inside the global box.
        sampling_global = global_box * np.array(
            [width / geometry.source_size[1], height / geometry.source_size[0]] * 2
        )
        gx0, gy0, gx1, gy1 = sampling_global
        w = min(box[2] - box[0], gx1 - gx0)
        h = min(box[3] - box[1], gy1 - gy0)
        x0 = rng.uniform(gx0, gx1 - w)
        y0 = rng.uniform(gy0, gy1 - h)
        return geometry.snap(np.array([x0, y0, x0 + w, y0 + h]))


# --------------------------------------------------------------------------------------------------------------
# HDC
# --------------------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class HDCViews(ViewRecipe):
    """HDC's views (METHODS.md §3, [ours]): positives that share exactly one cue with the anchor.

    * anchor q: ``clip_length`` frames at a stride from ``anchor_strides``, a random crop, flip, colour jitter,
      gray and blur.
    * spatial positive k_S: a different time window (stride from ``spatial_positive_strides``, so optionally a
      different playback rate; windows disjoint when ``disjoint_windows``) with the **same** crop box, flip,
      colour, gray and blur parameters as q: only appearance can match.
    * temporal positive k_T: the **same** frame indices as q (decoded once) with an independent crop, flip,
      colour jitter, gray and blur drawn from the same strong distribution: only motion can match.
    """

    clip_length: int = 16
    anchor_strides: tuple[int, ...] = (1, 2)
    spatial_positive_strides: tuple[int, ...] = (1, 2)
    disjoint_windows: bool = True
    crop: CropSpec | None = CropSpec(scale=(0.2, 1.0))
    flip_prob: float = 0.5
    color: ColorSpec = ColorSpec(
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        jitter_prob=0.8,
        gray_prob=0.2,
        blur_prob=0.5,
        blur_sigma=(0.1, 1.0),
    )

    view_names: ClassVar[tuple[str, ...]] = ("anchor", "spatial_positive", "temporal_positive")

    def __post_init__(self):
        super().__post_init__()
        if self.clip_length < 1 or min((*self.anchor_strides, *self.spatial_positive_strides), default=0) < 1:
            raise ValueError(f"HDCViews needs clip_length >= 1 and strides >= 1, got {self}")

    @property
    def min_num_frames(self) -> int:
        anchor, positive = (
            self.clip_length * min(self.anchor_strides),
            self.clip_length * min(self.spatial_positive_strides),
        )
        return anchor + positive if self.disjoint_windows else max(anchor, positive) + 1

    def plan(self, info: VideoInfo, geometry: FrameGeometry, rng: np.random.Generator) -> ViewPlan:
        T, num_frames = self.clip_length, info.num_frames
        fits = [
            (ra, rs)
            for ra in self.anchor_strides
            for rs in self.spatial_positive_strides
            if (
                T * (ra + rs) <= num_frames
                if self.disjoint_windows
                else max(ra, rs) * T + (ra == rs) <= num_frames
            )
        ]
        if not fits:
            raise self.too_short(info)
        wanted = (rng.choice(self.anchor_strides), rng.choice(self.spatial_positive_strides))
        anchor_stride, positive_stride = wanted if wanted in fits else fits[rng.integers(len(fits))]
        anchor_len, positive_len = T * anchor_stride, T * positive_stride
        if self.disjoint_windows:
            free = num_frames - anchor_len - positive_len
            first_start = int(rng.integers(0, free + 1))
            second_start = first_start + int(rng.integers(0, free - first_start + 1))
            if rng.random() < 0.5:
                anchor_start, positive_start = first_start, second_start + anchor_len
            else:
                positive_start, anchor_start = first_start, second_start + positive_len
        else:
            anchor_start = int(rng.integers(0, num_frames - anchor_len + 1))
            choices = [
                s
                for s in range(num_frames - positive_len + 1)
                if s != anchor_start or positive_stride != anchor_stride
            ]
            positive_start = int(choices[rng.integers(len(choices))])
        anchor = anchor_start + np.arange(T) * anchor_stride
        positive = positive_start + np.arange(T) * positive_stride
        decode_indices = np.concatenate([anchor, positive])
        slots = np.stack([np.arange(T), np.arange(T, 2 * T), np.arange(T)])

        canvas, source = _draw_boxes(rng, geometry, self.crop, 2)  # anchor (shared with k_S), k_T
        pick = [0, 0, 1]
        flips = (rng.random(2) < self.flip_prob)[pick]
        color = {name: value[pick] for name, value in sample_color_params(rng, 2, T, self.color).items()}
        return ViewPlan(decode_indices, slots, canvas[pick], source[pick], flips, color)


# --------------------------------------------------------------------------------------------------------------
# Supervised training clips
# --------------------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class ClipViews(ViewRecipe):
    """One random clip per video, for supervised training (fine-tuning, linear probes on augmented clips).

    ``clip_length`` frames at a stride drawn from ``frame_strides`` (among those the video is long enough for)
    from a random start; a random resized crop and a flip; colour jitter only if ``color`` asks for it. Videos
    shorter than one clip at stride 1 repeat their last frame (nothing is dropped).
    """

    clip_length: int = 16
    frame_strides: tuple[int, ...] = (1, 2)
    crop: CropSpec | None = CropSpec(scale=(0.3, 1.0))
    flip_prob: float = 0.5
    color: ColorSpec = ColorSpec()

    view_names: ClassVar[tuple[str, ...]] = ("clip",)
    model_input_names: ClassVar[tuple[str, ...]] = ("pixel_values", "labels")

    def __post_init__(self):
        super().__post_init__()
        if self.clip_length < 1 or not self.frame_strides or min(self.frame_strides) < 1:
            raise ValueError(f"ClipViews needs clip_length >= 1 and strides >= 1, got {self}")

    def plan(self, info: VideoInfo, geometry: FrameGeometry, rng: np.random.Generator) -> ViewPlan:
        T, num_frames = self.clip_length, info.num_frames
        fits = [r for r in self.frame_strides if T * r <= num_frames] or [min(self.frame_strides)]
        stride = int(fits[rng.integers(len(fits))])
        start = int(rng.integers(0, max(0, num_frames - T * stride) + 1))
        indices = np.minimum(start + np.arange(T) * stride, num_frames - 1)
        canvas, source = _draw_boxes(rng, geometry, self.crop, 1)
        flips = rng.random(1) < self.flip_prob
        color = sample_color_params(rng, 1, T, self.color)
        return ViewPlan(indices, np.arange(T)[None], canvas, source, flips, color)


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------
SPATIAL_CROPS = {"center": 1, "three": 3, "ten": 10}


@dataclass(kw_only=True)
class EvalViews(ViewRecipe):
    """Deterministic evaluation views: ``num_clips`` uniformly spaced clips x spatial crops, no colour aug.

    Each clip has ``num_frames`` frames at ``frame_stride``; clip starts are spread evenly from the first to
    the last possible start (one clip: centred). Videos shorter than a clip repeat their last frame. Frames are
    conceptually resized so the short side is ``resize_short_side``, then ``output_size`` crops are cut:
    ``"center"``; ``"three"`` (start, centre, end of the long side); ``"ten"`` (4 corners + centre, each also
    flipped). Views are clip-major: view ``c * n_crops + j`` is crop ``j`` of clip ``c``.
    """

    num_clips: int = 10
    num_frames: int = 16
    frame_stride: int = 2
    spatial_crops: str = "center"
    resize_short_side: int = 128

    def __post_init__(self):
        super().__post_init__()
        if self.spatial_crops not in SPATIAL_CROPS:
            raise ValueError(
                f"spatial_crops must be one of {tuple(SPATIAL_CROPS)}, got {self.spatial_crops!r}"
            )
        if self.resize_short_side < max(self.output_size):
            raise ValueError(
                f"resize_short_side ({self.resize_short_side}) must be >= the crop size {self.output_size}"
            )
        if self.num_clips < 1 or self.num_frames < 1 or self.frame_stride < 1:
            raise ValueError(f"EvalViews needs num_clips, num_frames, frame_stride >= 1, got {self}")

    @property
    def view_names(self) -> tuple[str, ...]:
        n = SPATIAL_CROPS[self.spatial_crops]
        return tuple(f"clip{c}_crop{j}" for c in range(self.num_clips) for j in range(n))

    def clip_starts(self, num_frames: int) -> np.ndarray:
        """``int64 [num_clips]`` first frame of every clip."""
        last = max(0, num_frames - ((self.num_frames - 1) * self.frame_stride + 1))
        if self.num_clips == 1:
            return np.array([last // 2], dtype=np.int64)
        return _round_half_up(np.linspace(0, last, self.num_clips))

    def crop_boxes(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes float64 [n, 4] in source pixels, flips bool [n])`` of the spatial crops."""
        scale = self.resize_short_side / min(height, width)
        h, w = self.output_size[0] / scale, self.output_size[1] / scale
        cx, cy = (width - w) / 2, (height - h) / 2
        if self.spatial_crops == "center":
            corners = [(cx, cy)]
        elif self.spatial_crops == "three":
            corners = (
                [(0, cy), (cx, cy), (width - w, cy)]
                if width >= height
                else [(cx, 0), (cx, cy), (cx, height - h)]
            )
        else:
            five = [(0, 0), (width - w, 0), (0, height - h), (width - w, height - h), (cx, cy)]
            corners = five + five
        boxes = np.array([[x, y, x + w, y + h] for x, y in corners], dtype=np.float64)
        flips = np.zeros(len(corners), dtype=bool)
        if self.spatial_crops == "ten":
            flips[5:] = True
        return boxes, flips

    def plan(self, info: VideoInfo, geometry: FrameGeometry, rng: np.random.Generator) -> ViewPlan:
        T = self.num_frames
        starts = self.clip_starts(info.num_frames)
        indices = np.minimum(starts[:, None] + np.arange(T)[None, :] * self.frame_stride, info.num_frames - 1)
        boxes, crop_flips = self.crop_boxes(info.height, info.width)
        n_crops = len(boxes)
        canvas, source = geometry.snap(boxes)
        slots = (np.arange(self.num_clips)[:, None, None] * T + np.arange(T)[None, None, :]).repeat(
            n_crops, axis=1
        )
        views = self.num_clips * n_crops
        return ViewPlan(
            decode_indices=indices.reshape(-1),
            frame_slots=slots.reshape(views, T),
            canvas_boxes=np.tile(canvas, (self.num_clips, 1)),
            crop_boxes=np.tile(source, (self.num_clips, 1)),
            flips=np.tile(crop_flips, self.num_clips),
            color=sample_color_params(rng, views, T, None),
        )


# Recipes that belong to no method; a method's recipe is named in its `MethodSpec` (hf_vssl.methods).
RECIPES = {"clip": ClipViews, "eval": EvalViews}


def build_recipe(name: str, **overrides) -> ViewRecipe:
    """Build a recipe that belongs to no method (``"clip"``, ``"eval"``) by name, with field overrides.

    ``CropSpec`` / ``ColorSpec`` fields may be given as dicts (as they come from YAML configs). A method's training
    recipe, sized like its model, comes from the method table: ``METHODS[name].build_recipe(config)``.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown view recipe {name!r}; choose from {tuple(RECIPES)}")
    return RECIPES[name].from_dict(overrides)
