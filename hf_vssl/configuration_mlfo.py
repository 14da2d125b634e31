"""MLFO configuration (multi-level feature optimisation; Qian et al., ICCV 2021)."""

from huggingface_hub.dataclasses import strict

from .configuration_vssl import VideoSSLConfig, check_positive, check_probability

GATHER_GRADIENTS = ("local", "all")


@strict
class MLFOConfig(VideoSSLConfig):
    r"""
    Configuration of an MLFO model. Defaults reproduce the authors' public code (Kinetics-400 recipe); see
    `VideoSSLConfig` for the backbone and clip fields.

    Args:
        num_prototypes (`int`, *optional*, defaults to 1000):
            Prototypes K of the swapped-prediction (SwAV) term: 1000 for Kinetics-400, 200 for UCF101.
        prototype_temperature (`float`, *optional*, defaults to 0.1):
            Temperature of the prototype softmax.
        sinkhorn_epsilon (`float`, *optional*, defaults to 0.05):
            Entropic regularisation of the Sinkhorn-Knopp codes.
        sinkhorn_iterations (`int`, *optional*, defaults to 3):
            Sinkhorn-Knopp iterations.
        logit_queue_size (`int`, *optional*, defaults to 1024):
            Rows Sinkhorn runs over from `logit_queue_start_epoch` on: the batch's prototype logits and the newest
            past ones (a FIFO that the batch joins before it is read, as in the authors' code).
        logit_queue_start_epoch (`int`, *optional*, defaults to 10):
            First epoch whose codes are computed over the logit queue.
        prototype_freeze_epochs (`int`, *optional*, defaults to 1):
            Epochs during which the prototypes get no gradient (the code freezes them in epoch 0).
        graph_start_epoch (`int`, *optional*, defaults to 20):
            First epoch of the graph constraint (20 for Kinetics-400, 50 for UCF101).
        graph_threshold (`float`, *optional*, defaults to 0.05):
            Off-diagonal instance affinities below this are dropped from the instance graph.
        graph_loss_mean_over_columns (`bool`, *optional*, defaults to `True`):
            Divide the graph loss by the batch size as the authors' `.mean()` does.
        level_weights (`list[float]`, *optional*, defaults to `(1.0, 0.5, 0.3)`):
            Weights of the high, mid and low levels.
        level_time_steps (`list[int]`, *optional*, defaults to `(2, 4, 8)`):
            Time steps the high, mid and low taps are pooled to (adaptive average pooling, as the code's
            `AdaptiveAvgPool3d`); a 16-frame clip has exactly these in the Hara layout. Even when the timestamp
            alignment is on (it splits them in halves).
        gather_gradient (`str`, *optional*, defaults to `"local"`):
            How negatives from other processes enter the gradient. `"local"` (the code's all-gather): the other
            processes' rows are constants and each process's rows get gradient from its own loss only. `"all"`:
            gradients of every process's loss return to the rows' owner, so several processes train exactly as
            one process on their joint batch.
        prototype_loss_weight (`float`, *optional*, defaults to 0.5):
            Weight of the swapped-prediction term.
        motion_excitation_reduction (`int`, *optional*, defaults to 16):
            Channel reduction of the motion-excitation blocks on the low and mid taps.
        use_motion_contrast, use_timestamp_alignment, use_prototypes, use_graph (`bool`, *optional*, default `True`):
            Switch each term off; all four off leaves the plain instance-contrast baseline.
    """

    model_type = "mlfo"

    backbone: str = "r3d_hara"
    num_prototypes: int = 1000
    prototype_temperature: float | int = 0.1
    sinkhorn_epsilon: float | int = 0.05
    sinkhorn_iterations: int = 3
    logit_queue_size: int = 1024
    logit_queue_start_epoch: int = 10
    prototype_freeze_epochs: int = 1
    graph_start_epoch: int = 20
    graph_threshold: float | int = 0.05
    graph_loss_mean_over_columns: bool = True
    level_weights: list[float | int] | tuple[float | int, ...] = (1.0, 0.5, 0.3)
    level_time_steps: list[int] | tuple[int, ...] = (2, 4, 8)
    gather_gradient: str = "local"
    prototype_loss_weight: float | int = 0.5
    motion_excitation_reduction: int = 16
    use_motion_contrast: bool = True
    use_timestamp_alignment: bool = True
    use_prototypes: bool = True
    use_graph: bool = True

    def __post_init__(self, **kwargs):
        self.level_weights = list(self.level_weights)
        self.level_time_steps = list(self.level_time_steps)
        super().__post_init__(**kwargs)

    def validate_mlfo(self):
        for name in (
            "num_prototypes",
            "prototype_temperature",
            "sinkhorn_epsilon",
            "sinkhorn_iterations",
            "logit_queue_size",
            "motion_excitation_reduction",
        ):
            check_positive(name, getattr(self, name))
        for name in ("logit_queue_start_epoch", "prototype_freeze_epochs", "graph_start_epoch"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        check_probability("graph_threshold", self.graph_threshold)
        if len(self.level_weights) != 3 or any(w < 0 for w in self.level_weights):
            raise ValueError(
                f"`level_weights` needs 3 non-negative weights (high, mid, low), got {self.level_weights}."
            )
        steps = self.level_time_steps
        if len(steps) != 3 or any(t < 1 for t in steps):
            raise ValueError(f"`level_time_steps` needs 3 positive numbers (high, mid, low), got {steps}.")
        if self.use_timestamp_alignment and any(t % 2 for t in steps):
            raise ValueError(
                f"Timestamp alignment splits every level's time steps in two halves: `level_time_steps` must be "
                f"even, got {steps} (or set `use_timestamp_alignment=False`)."
            )
        if self.gather_gradient not in GATHER_GRADIENTS:
            raise ValueError(
                f"`gather_gradient` must be one of {GATHER_GRADIENTS}, got {self.gather_gradient!r}."
            )
        if self.use_graph and not self.use_prototypes:
            raise ValueError(
                "`use_graph` needs `use_prototypes`: the semantic graph comes from the prototype codes."
            )
