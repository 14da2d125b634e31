"""Controllable augmentations, local clips inside a global video (Qian et al., Visual Intelligence 2024).

The released encoder (`CtrlAugModel`) is the plain backbone. `CtrlAugForPreTraining` trains it with the four
objectives the paper's abstract names. No code and no full text of the paper is public: everything beyond the
abstract's claims is hf_vssl's reconstruction (METHODS.md §2, [ours]), and every such choice is a field of
`CtrlAugConfig`:

1. instance contrast between the pooled global view G and the pooled local clips of the same video;
2. soft region contrast between each local clip and G's features pooled over the clip's tube, with soft targets
   over the video's clips proportional to their 3-D tube IoU;
3. adversarial mutual-information minimisation between a local clip's high-level feature and a stop-gradient
   low-level descriptor of the same region in G: a critic maximises an InfoNCE bound, the encoder minimises it
   through a gradient-reversal layer;
4. local-global temporal order: each local clip's time steps must find their slots in G's time steps.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .configuration_ctrlaug import CtrlAugConfig
from .distributed import gather_rows, rank, world_size
from .heads import GradientReversal, PointwiseMLP, ProjectionMLP, tube_iou, tube_pool
from .losses import info_nce, soft_target_contrast, timestamp_alignment
from .modeling_vssl import VideoSSLEncoder, VideoSSLForVideoClassification, VideoSSLPreTrainedModel


class CtrlAugPreTrainedModel(VideoSSLPreTrainedModel):
    config_class = CtrlAugConfig
    base_model_prefix = "ctrlaug"


class CtrlAugModel(VideoSSLEncoder, CtrlAugPreTrainedModel):
    """The CtrlAug encoder: the backbone alone, returning the stage-4 map and its global average (see `VideoSSLEncoder`)."""


class CtrlAugForVideoClassification(VideoSSLForVideoClassification, CtrlAugPreTrainedModel):
    """The CtrlAug encoder with a linear classifier (see `VideoSSLForVideoClassification`)."""

    encoder_class = CtrlAugModel


@dataclass
class CtrlAugPreTrainingOutput(ModelOutput):
    r"""
    Output of `CtrlAugForPreTraining`. Every `*_loss` field is one term of the objective before its weight, `None`
    when the term is switched off; `loss` is `instance + region + order_weight * order + mi_weight * mi`.

    Args:
        loss (`torch.FloatTensor` of shape `()`): the total objective.
        instance_loss: G against its local clips, gathered batch negatives (term 1).
        region_loss: soft region contrast, both directions averaged (term 2).
        mi_loss: the critic's loss, the negative InfoNCE bound `-(log M - L_NCE)` on the mutual information between
            local clips' high-level features and the low-level descriptors of their regions (term 3). The critic
            minimises it (maximises the bound); the encoder receives its gradient reversed.
        order_loss: local-global temporal order alignment (term 4).
        reversal_strength (`torch.FloatTensor` of shape `()`): strength of the gradient reversal at this epoch.
        hidden_states (`tuple(torch.FloatTensor)`): stage outputs of all `(1 + K) * batch_size` clips, when asked.
    """

    loss: torch.FloatTensor | None = None
    instance_loss: torch.FloatTensor | None = None
    region_loss: torch.FloatTensor | None = None
    mi_loss: torch.FloatTensor | None = None
    order_loss: torch.FloatTensor | None = None
    reversal_strength: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def _mlp(in_dim: int, out_dim: int) -> ProjectionMLP:
    """[ours] A 2-layer head `in -> in -> out` without batch norm, so that a term's value on several processes is
    its value on their joint batch (batch statistics would differ per process)."""
    return ProjectionMLP(in_dim, in_dim, out_dim, batch_norm=False)


class CtrlAugForPreTraining(CtrlAugPreTrainedModel):
    """The CtrlAug encoder with the heads and objective of METHODS.md §2 (all [ours] beyond the abstract).

    `forward(pixel_values [B, 1 + K, T, C, H, W], tubes [B, K, 6])` takes per video the views of the
    `CtrlAugViews` recipe in order (global view G, then the K local clips; K is read from the input) and each local
    clip's tube in G's normalised coordinates `(t0, t1, x0, y0, x1, y1)`. Other recipe outputs (`global_span`)
    are accepted and not needed: the tubes are already normalised. Negatives come from the batch of every process
    (each must hold the same batch size), with gradients as `config.gather_gradient` says.

    Terms ([ours] beyond the abstract; `z` = L2-normalised head outputs, pooled = global average of stage 4):

    1. instance: anchors G_i (positives: its K clips, negatives: every other video's clips) and each clip L_ik
       (positive: G_i, negatives: every other video's G), multi-positive InfoNCE, the two directions averaged.
    2. region: `r_ik` = `tube_pool` of G_i's `region_stage` map over tube_ik; anchors z(L_ik) against every
       clip's z(r_jl), soft target `IoU3D(tube_ik, tube_il) / sum_l' IoU3D(tube_ik, tube_il')` for j = i, else 0;
       and the same with the roles exchanged; averaged.
    3. mutual information: `x_ik` = pooled L_ik through a `GradientReversal`, `y_ik` = `tube_pool` of sg(G_i's
       `low_level_stage` map) over tube_ik; critic `s(x, y) = <f(x), g(y)> / critic_temperature`; the InfoNCE bound
       over the M = N K in-batch pairs `I = log M - L_NCE` (x_ik's positive is y_ik); the term is `-I`. The
       critic's heads f, g get the plain gradient of `mi_weight * -I` (they maximise the bound); the encoder gets
       it multiplied by `-strength` (it minimises the bound), the strength ramping linearly from 0 at epoch 0 to
       `gradient_reversal_strength` at `gradient_reversal_warmup_epochs` (`set_epoch`).
    4. order: G's `order_stage` map, space pooled, through a time-pointwise head (T_G steps); each local clip's map
       likewise, pooled to `order_local_steps` steps; step j of clip k belongs to the G step holding
       `t0 + (j + 1/2)(t1 - t0) / order_local_steps`; `timestamp_alignment` with those slots, same-video
       candidates only.

    Heads exist only for the terms that are on (no parameter unused in a DDP step). After pretraining,
    `model.ctrlaug` is the encoder to release.
    """

    def __init__(self, config: CtrlAugConfig):
        super().__init__(config)
        self.ctrlaug = CtrlAugModel(config)
        channels = config.hidden_sizes
        dim = config.projection_dim
        if config.use_instance:
            self.instance_head = _mlp(channels[3], dim)
        if config.use_region:
            self.region_local_head = _mlp(channels[3], dim)
            self.region_global_head = _mlp(channels[config.region_stage - 1], dim)
        self.epoch = 0
        if config.use_mi:
            self.gradient_reversal = GradientReversal(self.reversal_strength_at(self.epoch))
            self.critic_high = _mlp(channels[3], dim)
            self.critic_low = _mlp(channels[config.low_level_stage - 1], dim)
        if config.use_order:
            self.order_head = PointwiseMLP(channels[config.order_stage - 1], dim)
        self.post_init()

    # --- hooks of the training loop -------------------------------------------------------------------------------

    def reversal_strength_at(self, epoch: int) -> float:
        """The gradient-reversal strength of `epoch`: a linear ramp from 0 to `gradient_reversal_strength`."""
        config = self.config
        ramp = (
            1.0
            if config.gradient_reversal_warmup_epochs == 0
            else epoch / config.gradient_reversal_warmup_epochs
        )
        return float(config.gradient_reversal_strength) * min(1.0, ramp)

    def set_epoch(self, epoch: int) -> None:
        """Tell the model the current epoch: the gradient-reversal ramp reads it."""
        self.epoch = int(epoch)
        if self.config.use_mi:
            self.gradient_reversal.strength = self.reversal_strength_at(self.epoch)

    # --- the objective --------------------------------------------------------------------------------------------

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        return gather_rows(rows, self.config.gather_gradient, assume_equal_sizes=True)

    def _instance_loss(
        self, global_z: torch.Tensor, local_z: torch.Tensor, own: torch.Tensor
    ) -> torch.Tensor:
        """Term 1 from `global_z` `[n, D]` and `local_z` `[n, K, D]` of this process's videos `own` `[n]`."""
        n, k = local_z.shape[:2]
        all_global = self._gather(global_z)  # [N, D]
        all_local = self._gather(local_z.flatten(0, 1))  # [N K, D], video-major
        local_video = torch.arange(all_local.shape[0], device=own.device) // k
        global_to_local = info_nce(
            global_z, all_local, own[:, None] == local_video[None, :], self.config.temperature
        )
        all_videos = torch.arange(all_global.shape[0], device=own.device)
        local_to_global = info_nce(
            local_z.flatten(0, 1),
            all_global,
            own.repeat_interleave(k)[:, None] == all_videos[None, :],
            self.config.temperature,
        )
        return 0.5 * (global_to_local + local_to_global)

    def _region_loss(
        self, local_z: torch.Tensor, region_z: torch.Tensor, tubes: torch.Tensor, own: torch.Tensor
    ) -> torch.Tensor:
        """Term 2 from `local_z`, `region_z` `[n, K, D]` and the tubes `[n, K, 6]`."""
        n, k = local_z.shape[:2]
        iou = tube_iou(tubes, tubes)  # [n, K, K], 1 on the diagonal
        within = iou / iou.sum(dim=-1, keepdim=True)
        # Row (i, k) against column (j, l) of the gathered, video-major candidates: IoU weights for j = i only.
        targets = within.new_zeros(n, k, world_size() * n, k)
        targets[torch.arange(n, device=own.device), :, own] = within
        targets = targets.view(n * k, -1)
        temperature = self.config.temperature
        local_rows, region_rows = local_z.flatten(0, 1), region_z.flatten(0, 1)
        local_to_region = soft_target_contrast(local_rows, self._gather(region_rows), targets, temperature)
        region_to_local = soft_target_contrast(region_rows, self._gather(local_rows), targets, temperature)
        return 0.5 * (local_to_region + region_to_local)

    def _mi_loss(self, high: torch.Tensor, low: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """Term 3 from the local clips' pooled features `high` `[n, K, C]` and region descriptors `low` `[n, K, C']`.

        Returns `-(log M - L_NCE)`, the critic's loss.
        """
        n, k = high.shape[:2]
        x = F.normalize(self.critic_high(self.gradient_reversal(high.flatten(0, 1))), dim=-1)
        y = F.normalize(self.critic_low(low.flatten(0, 1)), dim=-1)
        all_y = self._gather(y)  # [N K, D]
        pair = own.repeat_interleave(k) * k + torch.arange(k, device=own.device).repeat(n)
        positives = pair[:, None] == torch.arange(all_y.shape[0], device=own.device)[None, :]
        bound = math.log(all_y.shape[0]) - info_nce(x, all_y, positives, self.config.critic_temperature)
        return -bound

    def _order_loss(
        self, global_map: torch.Tensor, local_maps: torch.Tensor, tubes: torch.Tensor
    ) -> torch.Tensor:
        """Term 4 from G's `[n, C, T, H, W]` and the clips' `[n, K, C, T, H, W]` `order_stage` maps."""
        n, k = local_maps.shape[:2]
        steps = self.config.order_local_steps
        global_seq = self.order_head(global_map.mean(dim=(3, 4)))  # [n, D, T_G]
        local_seq = self.order_head(local_maps.flatten(0, 1).mean(dim=(3, 4)))  # [n K, D, T_L]
        local_seq = F.adaptive_avg_pool1d(local_seq, steps).view(n, k, -1, steps)  # [n, K, D, S]
        local_seq = local_seq.permute(0, 1, 3, 2).flatten(1, 2)  # [n, K S, D], clip-major
        num_global = global_seq.shape[-1]
        with torch.no_grad():
            start, end = tubes[..., 0].double(), tubes[..., 1].double()
            centre = (
                start[..., None]
                + (torch.arange(steps, device=tubes.device) + 0.5) * (end - start)[..., None] / steps
            )
            slots = torch.floor(centre * num_global).long().clamp(0, num_global - 1).flatten(1)  # [n, K S]
        return timestamp_alignment(
            local_seq, global_seq.transpose(1, 2), self.config.temperature, slots=slots
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        tubes: torch.Tensor | None = None,
        global_span: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CtrlAugPreTrainingOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `[batch_size, 1 + K, num_frames, num_channels, height, width]`):
                The global view and the K local clips of every video (the ctrlaug view recipe).
            tubes (`torch.FloatTensor` of shape `[batch_size, K, 6]`):
                Each local clip's tube `(t0, t1, x0, y0, x1, y1)` in G's normalised coordinates (time over G's span,
                box in G's rendered frame, flip-corrected). Needed by the region, mutual-information and order terms.
            global_span (`torch.FloatTensor` of shape `[batch_size, 2]`, *optional*):
                G's first source frame and span, as the recipe records them; not used (the tubes are normalised).
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        if pixel_values.ndim != 6 or pixel_values.shape[1] < 2:
            raise ValueError(
                "CtrlAugForPreTraining takes `pixel_values` [batch, 1 + K views (global, local_1..K), frames, "
                f"channels, height, width] with K >= 1, got {tuple(pixel_values.shape)}."
            )
        batch, num_views = pixel_values.shape[:2]
        num_local = num_views - 1
        needs_tubes = config.use_region or config.use_mi or config.use_order
        if needs_tubes and (tubes is None or tuple(tubes.shape) != (batch, num_local, 6)):
            got = None if tubes is None else tuple(tubes.shape)
            raise ValueError(
                f"The region, mutual-information and order terms need `tubes` [batch, K, 6] = "
                f"[{batch}, {num_local}, 6], got {got}."
            )
        encoded = self.ctrlaug(pixel_values.flatten(0, 1), output_hidden_states=True, return_dict=True)

        def views(tensor):  # [B V, ...] -> G [B, ...], locals [B, K, ...]
            tensor = tensor.view(batch, num_views, *tensor.shape[1:])
            return tensor[:, 0], tensor[:, 1:]

        pooled_global, pooled_local = views(encoded.pooler_output)
        own = rank() * batch + torch.arange(batch, device=pixel_values.device)
        terms, total = {}, 0.0

        if config.use_instance:
            global_z = F.normalize(self.instance_head(pooled_global), dim=-1)
            local_z = F.normalize(self.instance_head(pooled_local.flatten(0, 1)), dim=-1).view(
                batch, num_local, -1
            )
            terms["instance_loss"] = self._instance_loss(global_z, local_z, own)
            total = total + terms["instance_loss"]

        if config.use_region:
            region_map, _ = views(encoded.hidden_states[config.region_stage - 1])
            regions = tube_pool(region_map, tubes).to(pooled_local.dtype)  # [B, K, C]
            local_z = F.normalize(self.region_local_head(pooled_local.flatten(0, 1)), dim=-1)
            region_z = F.normalize(self.region_global_head(regions.flatten(0, 1)), dim=-1)
            terms["region_loss"] = self._region_loss(
                local_z.view(batch, num_local, -1), region_z.view(batch, num_local, -1), tubes, own
            )
            total = total + terms["region_loss"]

        reversal_strength = None
        if config.use_mi:
            low_map, _ = views(encoded.hidden_states[config.low_level_stage - 1])
            low = tube_pool(low_map.detach(), tubes).to(pooled_local.dtype)
            terms["mi_loss"] = self._mi_loss(pooled_local, low, own)
            total = total + config.mi_weight * terms["mi_loss"]
            reversal_strength = torch.tensor(self.gradient_reversal.strength, device=pixel_values.device)

        if config.use_order:
            global_map, local_maps = views(encoded.hidden_states[config.order_stage - 1])
            terms["order_loss"] = self._order_loss(global_map, local_maps, tubes)
            total = total + config.order_weight * terms["order_loss"]

        output = CtrlAugPreTrainingOutput(
            loss=total,
            reversal_strength=reversal_strength,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
            **terms,
        )
        return output if return_dict else output.to_tuple()


CtrlAugConfig.register_for_auto_class()
CtrlAugModel.register_for_auto_class("AutoModel")
CtrlAugForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
CtrlAugForPreTraining.register_for_auto_class("AutoModelForPreTraining")
