"""HDC: hierarchically decoupled spatial-temporal contrast (Zhang & Crandall, WACV 2022).

Neither code nor the full text of the paper is public. `HDCModel` (the released encoder) is the plain backbone;
`HDCForPreTraining` is hf_vssl's reconstruction of the objective from the abstract (METHODS.md §3): everything
past the abstract's claims (two contrastive subtasks, one spatial and one temporal, solved at several depths, with
levels weighted by how instance-invariant they are) is [ours] and is a field of `HDCConfig`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_hdc import HDCConfig
from .distributed import gather_no_grad, rank, world_size
from .heads import FeatureQueue, MomentumCopy, ProjectionMLP
from .losses import info_nce
from .modeling_vssl import (
    VideoSSLEncoder,
    VideoSSLForVideoClassification,
    VideoSSLPreTrainedModel,
    clip_to_channels_first,
)

# The views of the HDC recipe (hf_vssl.data.recipes.HDCViews), in order, and the subtask each positive serves.
VIEWS = ("anchor", "spatial_positive", "temporal_positive")
SUBTASKS = ("spatial", "temporal")


class HDCPreTrainedModel(VideoSSLPreTrainedModel):
    config_class = HDCConfig
    base_model_prefix = "hdc"


class HDCModel(VideoSSLEncoder, HDCPreTrainedModel):
    """The HDC encoder: the backbone alone, returning the stage-4 map and its global average (see `VideoSSLEncoder`)."""


class HDCForVideoClassification(VideoSSLForVideoClassification, HDCPreTrainedModel):
    """The HDC encoder with a linear classifier (see `VideoSSLForVideoClassification`)."""

    encoder_class = HDCModel


@dataclass
class HDCPreTrainingOutput(ModelOutput):
    r"""
    Output of `HDCForPreTraining`. Every `*_loss_stage{s}` field is one InfoNCE term before any weight, `None` for a
    stage that is not tapped or a subtask whose weight is 0; `loss` is the weighted total.

    Args:
        loss (`torch.FloatTensor` of shape `()`): `sum_l w_l (alpha L_S^l + (1 - alpha) L_T^l)`.
        spatial_loss_stage1 ... spatial_loss_stage4: the spatial subtask's InfoNCE at each tapped stage.
        temporal_loss_stage1 ... temporal_loss_stage4: the temporal subtask's InfoNCE at each tapped stage.
        level_weights (`torch.FloatTensor` of shape `[num_levels]`): the weights `w_l` used for this loss, in the
            order of `config.tap_stages` (no gradient).
        positive_similarity (`torch.FloatTensor` of shape `[batch_size, num_levels]`): each video's cosine between
            its queries and their positive keys at each level, averaged over the subtasks; the measured invariance
            averages it over the videos of every process.
        hidden_states (`tuple(torch.FloatTensor)`): the online encoder's four stage outputs for the anchors, when
            asked.
    """

    loss: torch.FloatTensor | None = None
    spatial_loss_stage1: torch.FloatTensor | None = None
    temporal_loss_stage1: torch.FloatTensor | None = None
    spatial_loss_stage2: torch.FloatTensor | None = None
    temporal_loss_stage2: torch.FloatTensor | None = None
    spatial_loss_stage3: torch.FloatTensor | None = None
    temporal_loss_stage3: torch.FloatTensor | None = None
    spatial_loss_stage4: torch.FloatTensor | None = None
    temporal_loss_stage4: torch.FloatTensor | None = None
    level_weights: torch.FloatTensor | None = None
    positive_similarity: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def _level_name(stage: int) -> str:
    return f"stage{stage}"


class HDCForPreTraining(HDCPreTrainedModel):
    """The HDC encoder with hf_vssl's reconstruction of the HDC objective (METHODS.md §3; all of it [ours]).

    `forward(pixel_values [B, 3, T, C, H, W])` takes per video the three views of the HDC recipe, in order: the
    anchor q, the spatial positive k_S (another time window, same crop and colour: only appearance matches) and the
    temporal positive k_T (the same frames, independent strong augmentation: only motion matches). Other recipe
    outputs passed as keywords are ignored.

    Which encoder sees which view (MoCo v2): the online (query) encoder `hdc` and its heads see the anchors only; the
    momentum (key) encoder `momentum_encoder` (an EMA copy of backbone and heads, no gradient) sees k_S and k_T in
    one batch. At every tapped stage l and for each subtask s in (spatial, temporal):

        q = norm(head_s^l(avgpool(stage_l(anchor))))         online, with gradient
        k = norm(key_head_s^l(avgpool(key_stage_l(k_s))))    momentum encoder, no gradient
        L_s^l = InfoNCE(q; positive k; negatives: the queue of (l, s), and with `batch_negatives` the current keys
                of every other video of every process), temperature `config.temperature`

    and `loss = sum_l w_l (alpha L_S^l + (1 - alpha) L_T^l)` with `alpha = config.spatial_weight`. The level weights
    are `config.fixed_level_weights` (`invariance_weighting="fixed"`) or, with `"measured"`, the EMA `e_l` of the
    mean positive cosine `<q, k>` at level l (both subtasks, the videos of every process; no gradient), floored at
    `invariance_floor` and normalised to sum to the number of levels. In training mode each forward first adds the
    batch to the EMA (so the weights include it), then pushes the gathered keys into the queues (after the loss,
    MoCo's order); in eval mode nothing changes. A subtask whose weight is 0 has no heads, queue or key pass.

    Training state that is not the released encoder: the momentum copy, the queues (`FeatureQueue`: keys, pointer,
    fill count) and the invariance EMA (`invariance`) are persistent parameters and buffers of this model, so the
    training checkpoint (accelerate `save_state`) restores them exactly; the released encoder is `model.hdc`
    (`HDCModel`). Every process enqueues the keys gathered from all processes, so the queues are identical
    everywhere without a broadcast. A queue of any size works with any global batch: the FIFO wraps around
    slot by slot, and a batch larger than the queue keeps its newest keys.

    Batch norm (MoCo's shuffling BN; the grouping is [ours]): both encoders run in the model's mode, so in training
    their batch norms use batch statistics. Unshuffled, a query and its positive key would be normalised over the
    same videos, a signature of the batch that the contrast can match instead of the content (MoCo v1, §3.3). In
    training, with `shuffle_batch_norm` the positives of the global batch are permuted across videos (one
    permutation, drawn on the first process) before the key encoder and the keys are put back in order after; with
    `batch_norm_splits` = g every process normalises its anchors in g consecutive groups and its shuffled positives
    in g groups, so one process with g splits computes what g processes compute (SplitBatchNorm). The permutation
    comes from torch's global generator (as in MoCo), which checkpoints save and the training loops leave alone when
    they start a data loader iterator, so a resumed run draws the permutations of the uninterrupted one.

    Reversed negatives (`reversed_anchor_negatives`, [ours] beyond METHODS.md §3): the temporal contrast at every
    level also has each anchor played backwards as a negative of that anchor only, through the online encoder (in
    the anchors' batch-norm group) and the temporal head, with gradient on both sides:

        r = norm(head_T^l(avgpool(stage_l(reverse_time(anchor)))))
        L_T^l = -log( e^{<q,k>/tau} / (e^{<q,k>/tau} + sum_negatives e^{<q,k_j>/tau} + e^{<q,r>/tau}) )

    It shares every cue of the anchor except the direction of time, so the temporal features have to see it. The
    gradient reaching both q and r is what moves the backbone: a negative from the key encoder (no gradient) leaves
    only q to move, towards a difference the key encoder does not yet have, and did not teach direction on the
    synthetic demo (README, HDC section).

    Hooks: the training loop calls `after_optimizer_step()` after every optimizer step, which moves the momentum
    copy towards the online weights (`m = config.momentum`), and logs `training_metrics(output)`: each level's
    weight and mean positive cosine, which show how the measured invariance weighs the levels.

    Construction and `from_pretrained`: the momentum copy starts equal to the online backbone and heads; queues start
    empty and the EMA at 1 (equal weights). `from_pretrained` of an `HDCForPreTraining` checkpoint restores all of
    it; from an encoder checkpoint (`HDCModel`) the heads are new, the momentum copy equals the loaded encoder and
    the new heads, the queues are empty and the EMA is 1.
    """

    def __init__(self, config: HDCConfig):
        super().__init__(config)
        self.hdc = HDCModel(config)
        channels = {index + 1: info.num_channels for index, info in enumerate(self.hdc.feature_info)}
        self.subtasks = tuple(
            name
            for name, weight in zip(SUBTASKS, (config.spatial_weight, 1 - config.spatial_weight))
            if weight > 0
        )
        self.heads = nn.ModuleDict(
            {
                _level_name(stage): nn.ModuleDict(
                    {
                        subtask: ProjectionMLP(
                            channels[stage], channels[stage], config.projection_dim, batch_norm=False
                        )
                        for subtask in self.subtasks
                    }
                )
                for stage in config.tap_stages
            }
        )
        self.momentum_encoder = MomentumCopy(backbone=self.hdc.backbone, heads=self.heads)
        self.queues = nn.ModuleDict(
            {
                _level_name(stage): nn.ModuleDict(
                    {
                        subtask: FeatureQueue(config.projection_dim, config.queue_size)
                        for subtask in self.subtasks
                    }
                )
                for stage in config.tap_stages
            }
        )
        # EMA of each level's mean positive cosine, in tap_stages order; 1 = equal weights until measured.
        self.register_buffer("invariance", torch.ones(len(config.tap_stages)))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            # Children are initialised first, so the online weights (initialised or loaded) are final here.
            self.momentum_encoder.copy_from_(backbone=self.hdc.backbone, heads=self.heads)
            init.ones_(self.invariance)

    # --- hooks of the training loop -------------------------------------------------------------------------------

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Move the momentum copy (backbone and heads) towards the online weights: `k <- m k + (1 - m) q`."""
        self.momentum_encoder.update_(self.config.momentum, backbone=self.hdc.backbone, heads=self.heads)

    def training_metrics(self, output: HDCPreTrainingOutput) -> dict[str, torch.Tensor]:
        """Per-level values for the training log: `level_weight_stage{s}` (`w_l`) and `positive_similarity_stage{s}`
        (this process's mean query-positive cosine, the quantity the measured weights follow)."""
        similarity = output.positive_similarity.mean(dim=0)
        metrics = {}
        for index, stage in enumerate(self.config.tap_stages):
            metrics[f"level_weight_{_level_name(stage)}"] = output.level_weights[index]
            metrics[f"positive_similarity_{_level_name(stage)}"] = similarity[index]
        return metrics

    # --- the objective --------------------------------------------------------------------------------------------

    def current_level_weights(self) -> torch.Tensor:
        """The level weights `w_l` (tap_stages order) that the next loss uses, without gradient."""
        config = self.config
        if config.invariance_weighting == "fixed":
            return torch.tensor(
                config.fixed_level_weights, dtype=self.invariance.dtype, device=self.invariance.device
            )
        measured = self.invariance.clamp_min(config.invariance_floor)
        return measured * (len(config.tap_stages) / measured.sum())

    @torch.no_grad()
    def _pooled_keys(self, pixel_values: torch.Tensor) -> dict[int, torch.Tensor]:
        """The key encoder's pooled features of this process's positives, `{stage: [n, subtasks, C_stage]}` in
        the order of the videos, computed under shuffling BN and `batch_norm_splits` groups (class docstring)."""
        config = self.config
        positives = pixel_values[:, [1 + SUBTASKS.index(subtask) for subtask in self.subtasks]]  # [n, S, ...]
        n, splits = positives.shape[0], config.batch_norm_splits
        # In eval mode batch norm uses running statistics: no shuffle (nor a draw from the generator) needed.
        shuffle = self.training and config.shuffle_batch_norm and (splits > 1 or world_size() > 1)
        if shuffle:
            everyone = gather_no_grad(positives, assume_equal_sizes=True)  # [N, S, ...], N = n * processes
            drawn = torch.randperm(everyone.shape[0], device=positives.device)
            order = gather_no_grad(drawn, assume_equal_sizes=True)[: everyone.shape[0]]  # the first process's
            own = slice(rank() * n, (rank() + 1) * n)
            positives = everyone[order[own]]
        pooled = {stage: [] for stage in config.tap_stages}
        for group in positives.chunk(splits):  # one batch-norm group per split, both subtasks together
            stages = self.momentum_encoder.backbone(clip_to_channels_first(group.flatten(0, 1)))
            for stage in config.tap_stages:
                pooled[stage].append(stages[stage - 1].mean(dim=(2, 3, 4)).unflatten(0, group.shape[:2]))
        pooled = {stage: torch.cat(parts) for stage, parts in pooled.items()}
        if shuffle:
            unshuffle = torch.argsort(order)
            pooled = {
                stage: gather_no_grad(keys, assume_equal_sizes=True)[unshuffle][own]
                for stage, keys in pooled.items()
            }
        return pooled

    def _contrast(
        self,
        level: str,
        subtask: str,
        queries: torch.Tensor,
        keys: torch.Tensor,
        own_negatives: torch.Tensor | None = None,
    ):
        """InfoNCE of this process's queries `[n, D]` against [every process's keys; the queue] and each query's
        `own_negatives` `[n, K, D]`; returns the loss and every process's keys `[N, D]` (for the queue)."""
        all_keys = gather_no_grad(keys, assume_equal_sizes=True)
        queue = self.queues[level][subtask]
        n, total = queries.shape[0], all_keys.shape[0]
        device = queries.device
        candidates = torch.cat([all_keys, queue.queue.to(all_keys.dtype)])
        own = rank() * n + torch.arange(n, device=device)
        positive_mask = torch.zeros(n, total + queue.size, dtype=torch.bool, device=device)
        positive_mask[torch.arange(n, device=device), own] = True
        ignore_mask = torch.zeros_like(positive_mask)
        ignore_mask[:, total:] = ~queue.valid_mask()  # empty slots
        if not self.config.batch_negatives:
            ignore_mask[:, :total] = ~positive_mask[:, :total]
        loss = info_nce(
            queries,
            candidates,
            positive_mask,
            self.config.temperature,
            ignore_mask=ignore_mask,
            extra_negatives=own_negatives,
        )
        return loss, all_keys

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> HDCPreTrainingOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `[batch_size, 3, num_frames, num_channels, height, width]`):
                The anchor, the spatial positive and the temporal positive of every video (the HDC view recipe).
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        if pixel_values.ndim != 6 or pixel_values.shape[1] != len(VIEWS):
            raise ValueError(
                "HDCForPreTraining takes `pixel_values` [batch, 3 views (anchor, spatial positive, temporal "
                f"positive), frames, channels, height, width], got {tuple(pixel_values.shape)}."
            )
        splits = config.batch_norm_splits
        if pixel_values.shape[0] % splits:
            raise ValueError(
                f"`batch_norm_splits`={splits} needs a per-process batch that is a multiple of it, got "
                f"{pixel_values.shape[0]} videos."
            )
        # One batch-norm group of consecutive anchors per split (one call per group); with reversed negatives the
        # group's anchors played backwards join it (normalised with their anchors, as one process's clips).
        reversed_negatives = "temporal" in self.subtasks and config.reversed_anchor_negatives
        online_stages, reversed_stages = [], []
        for group in pixel_values[:, 0].chunk(splits):
            clips = torch.cat([group, group.flip(1)]) if reversed_negatives else group
            stages = self.hdc(clips, output_hidden_states=True, return_dict=True).hidden_states
            online_stages.append([stage[: len(group)] for stage in stages])
            if reversed_negatives:
                reversed_stages.append([stage[len(group) :] for stage in stages])
        online_stages = [torch.cat(stage) for stage in zip(*online_stages)]
        # Empty without reversed negatives.
        reversed_stages = [torch.cat(stage) for stage in zip(*reversed_stages)]
        with torch.no_grad():
            key_pooled = self._pooled_keys(pixel_values)

        terms, similarities, gathered = {}, [], {}
        for stage in config.tap_stages:
            level = _level_name(stage)
            pooled = online_stages[stage - 1].mean(dim=(2, 3, 4))
            level_similarity = []
            for subtask, key_input in zip(self.subtasks, key_pooled[stage].unbind(1)):
                head = self.heads[level][subtask]
                queries = F.normalize(head(pooled), dim=1)
                own_negatives = None
                if subtask == "temporal" and reversed_negatives:
                    reversed_pooled = reversed_stages[stage - 1].mean(dim=(2, 3, 4))
                    own_negatives = F.normalize(head(reversed_pooled), dim=1)[:, None]  # [n, 1, D]
                with torch.no_grad():
                    keys = F.normalize(self.momentum_encoder.heads[level][subtask](key_input), dim=1)
                terms[f"{subtask}_loss_{level}"], gathered[level, subtask] = self._contrast(
                    level, subtask, queries, keys, own_negatives
                )
                dtype = self.invariance.dtype  # float32 (float64 in a float64 model), also under autocast
                level_similarity.append((queries.detach().to(dtype) * keys.to(dtype)).sum(dim=1))
            similarities.append(torch.stack(level_similarity).mean(dim=0))  # [n] per level

        with torch.no_grad():
            positive_similarity = torch.stack(similarities, dim=1)  # [n, levels]
            if self.training:
                # The mean over every process's videos, so that the EMA (and the weights) agree everywhere.
                batch_mean = gather_no_grad(positive_similarity, assume_equal_sizes=True).mean(0)
                self.invariance.lerp_(batch_mean, 1 - config.invariance_momentum)
            level_weights = self.current_level_weights()

        total = 0.0
        alpha = {"spatial": config.spatial_weight, "temporal": 1 - config.spatial_weight}
        for weight, stage in zip(level_weights, config.tap_stages):
            level = _level_name(stage)
            level_loss = sum(alpha[subtask] * terms[f"{subtask}_loss_{level}"] for subtask in self.subtasks)
            total = total + weight * level_loss

        if self.training:
            for (level, subtask), keys in gathered.items():
                self.queues[level][subtask].enqueue(keys)

        output = HDCPreTrainingOutput(
            loss=total,
            level_weights=level_weights,
            positive_similarity=positive_similarity,
            hidden_states=tuple(online_stages) if output_hidden_states else None,
            **terms,
        )
        return output if return_dict else output.to_tuple()


HDCConfig.register_for_auto_class()
HDCModel.register_for_auto_class("AutoModel")
HDCForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
HDCForPreTraining.register_for_auto_class("AutoModelForPreTraining")
