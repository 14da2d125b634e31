"""HDC configuration (hierarchically decoupled spatial-temporal contrast; Zhang & Crandall, WACV 2022).

Beyond the paper's abstract everything here is a reconstruction (METHODS.md §3, [ours]); every such choice is a
field so that it can be ablated.
"""

from huggingface_hub.dataclasses import strict

from .configuration_vssl import VideoSSLConfig, check_positive, check_probability

INVARIANCE_WEIGHTINGS = ("measured", "fixed")


@strict
class HDCConfig(VideoSSLConfig):
    r"""
    Configuration of an HDC model; see `VideoSSLConfig` for the backbone and clip fields.

    Args:
        tap_stages (`list[int]`, *optional*, defaults to `(2, 3, 4)`):
            Backbone stages (1-4) where the spatial and temporal contrasts are solved.
        momentum (`float`, *optional*, defaults to 0.999):
            EMA momentum of the key encoder.
        queue_size (`int`, *optional*, defaults to 16384):
            Keys per (level, subtask) queue.
        spatial_weight (`float`, *optional*, defaults to 0.5):
            alpha in L = sum_l w_l (alpha L_S + (1 - alpha) L_T).
        invariance_weighting (`str`, *optional*, defaults to `"measured"`):
            `"measured"`: level weights follow an EMA of each level's mean positive-pair similarity; `"fixed"`: use
            `fixed_level_weights`.
        fixed_level_weights (`list[float]`, *optional*, defaults to `(0.3, 0.5, 1.0)`):
            One weight per tap stage for `"fixed"`.
        invariance_momentum (`float`, *optional*, defaults to 0.99):
            EMA momentum of the measured invariance.
        batch_negatives (`bool`, *optional*, defaults to `True`):
            Besides the queue, the current keys of the other videos (of every process) are negatives too, so that
            the first steps, whose queue is still empty, have negatives. `False`: the queue alone (MoCo v2).
        invariance_floor (`float`, *optional*, defaults to 0.01):
            Lower bound of each level's measured invariance before the weights are normalised, so that a level
            whose positive pairs are not yet similar (cosine <= 0) keeps a small weight instead of a negative one.
        shuffle_batch_norm (`bool`, *optional*, defaults to `True`):
            MoCo's shuffling batch norm: the positives of the global batch are shuffled across videos (and
            processes) before the key encoder and its keys unshuffled after, so that a query and its positive key
            are normalised with the statistics of different sets of videos and the contrast cannot be solved
            through batch statistics. With one process it needs `batch_norm_splits > 1` to change anything.
        batch_norm_splits (`int`, *optional*, defaults to 1):
            Every process normalises its batch in this many equal groups of videos (the anchors in consecutive
            groups, the positives after the shuffle): one process emulates `batch_norm_splits` processes (MoCo's
            SplitBatchNorm). The per-process batch must be a multiple of it.
        reversed_anchor_negatives (`bool`, *optional*, defaults to `False`):
            [ours, beyond METHODS.md §3] The temporal subtask also contrasts each anchor with the same clip played
            backwards, encoded by the online encoder and temporal head with gradient: a negative that shares every
            cue of the anchor but the direction of time, so that the temporal features must see it. Costs one more
            online forward and backward per video. Needs the temporal subtask (`spatial_weight` < 1).
    """

    model_type = "hdc"

    tap_stages: list[int] | tuple[int, ...] = (2, 3, 4)
    momentum: float | int = 0.999
    queue_size: int = 16384
    spatial_weight: float | int = 0.5
    invariance_weighting: str = "measured"
    fixed_level_weights: list[float | int] | tuple[float | int, ...] = (0.3, 0.5, 1.0)
    invariance_momentum: float | int = 0.99
    batch_negatives: bool = True
    invariance_floor: float | int = 0.01
    shuffle_batch_norm: bool = True
    batch_norm_splits: int = 1
    reversed_anchor_negatives: bool = False

    def __post_init__(self, **kwargs):
        self.tap_stages = list(self.tap_stages)
        self.fixed_level_weights = list(self.fixed_level_weights)
        super().__post_init__(**kwargs)

    def validate_hdc(self):
        if not self.tap_stages or any(s not in (1, 2, 3, 4) for s in self.tap_stages):
            raise ValueError(f"`tap_stages` must be stages among 1-4, got {self.tap_stages}.")
        if len(self.fixed_level_weights) != len(self.tap_stages):
            raise ValueError(
                f"`fixed_level_weights` needs one weight per tap stage {self.tap_stages}, got {self.fixed_level_weights}."
            )
        if self.invariance_weighting not in INVARIANCE_WEIGHTINGS:
            raise ValueError(
                f"`invariance_weighting` must be one of {INVARIANCE_WEIGHTINGS}, got {self.invariance_weighting!r}."
            )
        check_positive("queue_size", self.queue_size)
        check_positive("invariance_floor", self.invariance_floor)
        check_positive("batch_norm_splits", self.batch_norm_splits)
        if len(set(self.tap_stages)) != len(self.tap_stages):
            raise ValueError(f"`tap_stages` must not repeat a stage, got {self.tap_stages}.")
        for name in ("momentum", "spatial_weight", "invariance_momentum"):
            check_probability(name, getattr(self, name))
        if self.reversed_anchor_negatives and self.spatial_weight == 1:
            raise ValueError(
                "`reversed_anchor_negatives` are negatives of the temporal subtask, which `spatial_weight`=1 turns off."
            )
