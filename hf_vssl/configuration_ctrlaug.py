"""ctrlaug configuration (controllable augmentations; Qian et al., Visual Intelligence 2024).

"ctrlaug" is hf_vssl's identifier, not the authors'. Beyond the paper's abstract everything here is a reconstruction
(METHODS.md §2, [ours]); every such choice is a field so that it can be ablated.
"""

from huggingface_hub.dataclasses import strict

from .configuration_vssl import VideoSSLConfig, _check_positive, _check_probability


@strict
class CtrlAugConfig(VideoSSLConfig):
    r"""
    Configuration of a ctrlaug model; see `VideoSSLConfig` for the backbone and clip fields.

    Args:
        num_local_clips (`int`, *optional*, defaults to 2):
            Local clips sampled inside each global view.
        region_stage (`int`, *optional*, defaults to 4):
            Stage (3 or 4) of the global view whose cells are pooled into region features.
        min_local_coverage (`float`, *optional*, defaults to 0.5):
            Minimum fraction of a local clip's box covered by the global view's box.
        order_weight (`float`, *optional*, defaults to 1.0):
            Weight of the local-global temporal order term.
        mi_weight (`float`, *optional*, defaults to 0.1):
            Weight of the adversarial mutual-information term.
        gradient_reversal_strength (`float`, *optional*, defaults to 0.1):
            Final strength of the gradient-reversal layer between encoder and critic.
        gradient_reversal_warmup_epochs (`int`, *optional*, defaults to 10):
            Epochs over which the reversal strength ramps from 0 to its final value.
        use_instance, use_region, use_order, use_mi (`bool`, *optional*, default `True`):
            Switch each term off.
    """

    model_type = "ctrlaug"

    num_local_clips: int = 2
    region_stage: int = 4
    min_local_coverage: float | int = 0.5
    order_weight: float | int = 1.0
    mi_weight: float | int = 0.1
    gradient_reversal_strength: float | int = 0.1
    gradient_reversal_warmup_epochs: int = 10
    use_instance: bool = True
    use_region: bool = True
    use_order: bool = True
    use_mi: bool = True

    def validate_ctrlaug(self):
        _check_positive("num_local_clips", self.num_local_clips)
        if self.region_stage not in (3, 4):
            raise ValueError(f"`region_stage` must be 3 or 4, got {self.region_stage}.")
        _check_probability("min_local_coverage", self.min_local_coverage)
        for name in (
            "order_weight",
            "mi_weight",
            "gradient_reversal_strength",
            "gradient_reversal_warmup_epochs",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
