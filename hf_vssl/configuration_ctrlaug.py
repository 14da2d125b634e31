"""ctrlaug configuration (controllable augmentations; Qian et al., Visual Intelligence 2024).

"ctrlaug" is hf_vssl's identifier, not the authors'. No code and no full text of the paper is public: beyond the
abstract's claims everything here is a reconstruction (METHODS.md §2, [ours]); every such choice is a field so that
it can be ablated. View sampling (number of local clips, their coverage by the global box, spans, strides) belongs
to the view recipe (`hf_vssl.data.recipes.CtrlAugViews`), not to this configuration: the model reads the number of
local clips from its input.
"""

from huggingface_hub.dataclasses import strict

from .configuration_vssl import VideoSSLConfig, check_positive

GATHER_GRADIENTS = ("local", "all")


@strict
class CtrlAugConfig(VideoSSLConfig):
    r"""
    Configuration of a ctrlaug model; see `VideoSSLConfig` for the backbone and clip fields (`projection_dim` is
    the width of every head's output, `temperature` that of the instance, region and order terms). Every field
    below is [ours] (METHODS.md §2) unless it says otherwise.

    Args:
        region_stage (`int`, *optional*, defaults to 4):
            Stage (3 or 4) of the global view whose cells are pooled into the local clips' region features
            (METHODS.md: "G's stage-4 map (configurable: stage 3)").
        order_stage (`int`, *optional*, defaults to 3):
            Stage whose time steps form the time-resolved embeddings of the order term. Stage 3 keeps 4 steps of a
            16-frame global view (stage 4 only 2), so that a local clip spanning at most a quarter of it has a slot
            of its own. With the order term alone, stages above it get no gradient (DDP then needs
            `find_unused_parameters`).
        order_local_steps (`int`, *optional*, defaults to 2):
            Time steps each local clip is pooled to in the order term; each step's slot is the global step that
            holds the centre of its share of the clip's tube time range.
        low_level_stage (`int`, *optional*, defaults to 1):
            Stage whose (stop-gradient) features, pooled over a local clip's tube in the global view, are the
            low-level descriptor of the mutual-information critic (METHODS.md: stage 1).
        critic_temperature (`float`, *optional*, defaults to 0.07):
            Temperature of the critic's InfoNCE bound.
        order_weight (`float`, *optional*, defaults to 1.0):
            Weight lambda_order of the local-global temporal order term (METHODS.md default).
        mi_weight (`float`, *optional*, defaults to 0.1):
            Weight w_mi of the adversarial mutual-information term (METHODS.md default). It scales the critic's
            training signal as well as what reaches the encoder.
        gradient_reversal_strength (`float`, *optional*, defaults to 0.1):
            Final strength lambda of the gradient-reversal layer between encoder and critic (METHODS.md default).
        gradient_reversal_warmup_epochs (`int`, *optional*, defaults to 10):
            Epochs over which the reversal strength ramps linearly from 0 (epoch 0) to its final value (reached at
            this epoch); 0 starts at full strength.
        gather_gradient (`str`, *optional*, defaults to `"local"`):
            How rows from other processes enter the gradient: `"local"` (as the same authors' MLFO code: other
            processes' rows are constants) or `"all"` (several processes train exactly as one on their joint
            batch).
        use_instance, use_region, use_mi, use_order (`bool`, *optional*, default `True`):
            Switch each term off; all off but `use_instance` is the plain instance-contrast baseline.
    """

    model_type = "ctrlaug"

    region_stage: int = 4
    order_stage: int = 3
    order_local_steps: int = 2
    low_level_stage: int = 1
    critic_temperature: float | int = 0.07
    order_weight: float | int = 1.0
    mi_weight: float | int = 0.1
    gradient_reversal_strength: float | int = 0.1
    gradient_reversal_warmup_epochs: int = 10
    gather_gradient: str = "local"
    use_instance: bool = True
    use_region: bool = True
    use_mi: bool = True
    use_order: bool = True

    def validate_ctrlaug(self):
        for name in ("region_stage", "order_stage", "low_level_stage"):
            if getattr(self, name) not in (1, 2, 3, 4):
                raise ValueError(f"`{name}` must be a stage number 1-4, got {getattr(self, name)}.")
        if self.region_stage not in (3, 4):
            raise ValueError(f"`region_stage` must be 3 or 4, got {self.region_stage}.")
        check_positive("order_local_steps", self.order_local_steps)
        check_positive("critic_temperature", self.critic_temperature)
        for name in (
            "order_weight",
            "mi_weight",
            "gradient_reversal_strength",
            "gradient_reversal_warmup_epochs",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.gather_gradient not in GATHER_GRADIENTS:
            raise ValueError(
                f"`gather_gradient` must be one of {GATHER_GRADIENTS}, got {self.gather_gradient!r}."
            )
        if not (self.use_instance or self.use_region or self.use_mi or self.use_order):
            raise ValueError(
                "At least one of `use_instance`, `use_region`, `use_mi`, `use_order` must be on."
            )
