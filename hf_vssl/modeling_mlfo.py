"""MLFO: multi-level feature optimisation (Qian et al., ICCV 2021).

The released encoder (`MLFOModel`) is the plain backbone. `MLFOForPreTraining` adds what the authors' public code
trains it with (METHODS.md §1): motion-excitation adapters on the low (stage 2) and mid (stage 3) taps, fed with the
map and its time-reversed copy; time-pointwise projection heads per level and use; a global head and prototypes
for swapped prediction with Sinkhorn codes; and a graph built from instance affinities and cluster labels that
guides every level's similarity distribution.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mlfo import MLFOConfig
from .distributed import gather_no_grad, gather_with_grad, gather_with_local_grad, rank
from .heads import FeatureQueue, MotionExcitation, PointwiseMLP, ProjectionMLP, Prototypes
from .losses import (
    info_nce,
    similarity_logits,
    sinkhorn,
    soft_target_cross_entropy,
    swapped_prediction,
    timestamp_alignment,
)
from .modeling_vssl import VideoSSLEncoder, VideoSSLForVideoClassification, VideoSSLPreTrainedModel

# Levels from deep to shallow, with the backbone stage each one taps (hidden_states index).
LEVELS = {"high": 3, "mid": 2, "low": 1}
VIEWS = ("A", "B", "G")


class MLFOPreTrainedModel(VideoSSLPreTrainedModel):
    config_class = MLFOConfig
    base_model_prefix = "mlfo"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Prototypes):
            init.copy_(module.weight, F.normalize(module.weight, dim=1))


class MLFOModel(VideoSSLEncoder, MLFOPreTrainedModel):
    """The MLFO encoder: the backbone alone, returning the stage-4 map and its global average (see `VideoSSLEncoder`)."""


class MLFOForVideoClassification(VideoSSLForVideoClassification, MLFOPreTrainedModel):
    """The MLFO encoder with a linear classifier (see `VideoSSLForVideoClassification`)."""

    encoder_class = MLFOModel


@dataclass
class MLFOPreTrainingOutput(ModelOutput):
    r"""
    Output of `MLFOForPreTraining`. Every `*_loss` field is one term of the objective before its weight, `None` when
    the term is switched off; `loss` is the weighted total.

    Args:
        loss (`torch.FloatTensor` of shape `()`): the total objective.
        instance_loss: high-level instance contrast between clips A and B (term 1).
        motion_loss_mid, motion_loss_low: instance contrast with time-reversed negatives at mid and low level (2).
        timestamp_loss_high, timestamp_loss_mid, timestamp_loss_low: local-global timestamp alignment (3).
        prototype_loss: swapped prediction of Sinkhorn codes (4).
        graph_loss: the graph constraint, summed over levels with their weights; 0 before `graph_start_epoch` (5).
        cluster_labels (`torch.LongTensor` of shape `[batch_size]`): the videos' cluster assignments.
        hidden_states (`tuple(torch.FloatTensor)`): stage outputs of all `3 * batch_size` clips, when asked.
    """

    loss: torch.FloatTensor | None = None
    instance_loss: torch.FloatTensor | None = None
    motion_loss_mid: torch.FloatTensor | None = None
    motion_loss_low: torch.FloatTensor | None = None
    timestamp_loss_high: torch.FloatTensor | None = None
    timestamp_loss_mid: torch.FloatTensor | None = None
    timestamp_loss_low: torch.FloatTensor | None = None
    prototype_loss: torch.FloatTensor | None = None
    graph_loss: torch.FloatTensor | None = None
    cluster_labels: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def _time_mean_embedding(head: nn.Module, sequence: torch.Tensor) -> torch.Tensor:
    """Project a level sequence `[n, C, T]` with a time-pointwise head, average over time, L2-normalise: `[n, D]`."""
    return F.normalize(head(sequence).mean(dim=-1), dim=-1)


class MLFOForPreTraining(MLFOPreTrainedModel):
    """The MLFO encoder with the authors' pretraining heads and objective.

    `forward(pixel_values [B, 3, T, C, H, W])` takes per video the views of the MLFO recipe, in order: clip A, clip
    B (the 16 frames right after A) and the global clip G (A and B at half the frame rate); other recipe outputs
    passed as keywords are ignored. Negatives come from the batch of every process (each must hold the same batch
    size); as in the authors' code, only a process's own rows carry gradient (`config.gather_gradient="local"`),
    and `"all"` makes several processes train exactly as one process on their joint batch. The training loop calls
    `set_epoch(epoch)` at each epoch (prototype freeze, logit queue and graph schedules), and around each optimizer
    step `before_optimizer_step()` (parameters whose term is not active yet are skipped) and
    `after_optimizer_step()` (prototype re-normalisation). After pretraining, `model.mlfo` is the encoder to
    release.
    """

    def __init__(self, config: MLFOConfig):
        super().__init__(config)
        self.mlfo = MLFOModel(config)
        channels = dict(zip(("low", "mid", "high"), config.hidden_sizes[1:]))
        dim = config.projection_dim

        # The authors' heads per level and use; a head exists only when a term that needs it is on, so that no
        # parameter sits unused in a DDP step.
        uses = {"instance": [], "timestamp": [], "graph": []}
        uses["instance"].append("high")
        if config.use_motion_contrast:
            uses["instance"] += ["mid", "low"]
        if config.use_timestamp_alignment:
            uses["timestamp"] += list(LEVELS)
        if config.use_graph:
            uses["graph"] += list(LEVELS)
        self.projections = nn.ModuleDict(
            {
                level: nn.ModuleDict(
                    {use: PointwiseMLP(channels[level], dim) for use in uses if level in uses[use]}
                )
                for level in LEVELS
            }
        )
        self.motion_excitation = nn.ModuleDict(
            {
                level: MotionExcitation(channels[level], config.motion_excitation_reduction)
                for level in ("mid", "low")
                if self.projections[level]
            }
        )
        if config.use_prototypes:
            self.global_head = ProjectionMLP(channels["high"], channels["high"], dim)
            self.prototypes = Prototypes(dim, config.num_prototypes)
            # Past prototype scores of both clips (A and B side by side) for the Sinkhorn codes.
            self.logit_queue = FeatureQueue(2 * config.num_prototypes, config.logit_queue_size)
        self.epoch = 0
        self.post_init()

    # --- hooks of the training loop -------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Tell the model the current epoch: schedules (prototype freeze, logit queue, graph term) read it."""
        self.epoch = int(epoch)

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Drop the gradients of the parameters whose term is not active yet, so that the optimizer skips them.

        Those are the prototypes in the frozen epoch and the graph heads before `graph_start_epoch` (they take part
        in every step with a zero gradient, so that DDP sees them used). An optimizer leaves a parameter whose
        `grad` is `None` alone: no update, no weight decay, no step counted in its moments, which is what the
        authors' code gets (`grad = None` for the prototypes; the graph heads are not used before the graph term
        starts). A zero gradient would not do: Adam turns the weight decay alone into steps of about the learning
        rate and shrinks the weights, and the steps it counts distort its bias correction later.
        """
        config = self.config
        inactive = []
        if config.use_prototypes and self.epoch < config.prototype_freeze_epochs:
            inactive.append(self.prototypes.weight)
        if config.use_graph and self.epoch < config.graph_start_epoch:
            inactive += [p for level in LEVELS for p in self.projections[level]["graph"].parameters()]
        for parameter in inactive:
            parameter.grad = None

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Re-normalise the prototypes to unit rows, as the authors do before every step."""
        if self.config.use_prototypes:
            self.prototypes.normalize_()

    # --- the objective --------------------------------------------------------------------------------------------

    def _gather(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Every process's rows `[N, D]` of `embeddings` `[n, D]`, with gradient as `config.gather_gradient` says."""
        gather = gather_with_local_grad if self.config.gather_gradient == "local" else gather_with_grad
        return gather(embeddings, assume_equal_sizes=True)

    def _clip_contrast(
        self, anchor_a: torch.Tensor, anchor_b: torch.Tensor, extra_negatives: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Terms 1 and 2: each clip's positive is the other clip of its video, negatives both clips of the others.

        Args:
            anchor_a, anchor_b: `[n, D]` normalised embeddings of this process's clips A and B.
            extra_negatives: `[n, K, D]` additional negatives per video (time-reversed clips), used by both clips.

        Returns:
            the loss and the affinity `S_ij = softmax_j(<a_i, b_j> / tau)` `[n, N]` over all processes' clips B.
        """
        all_a, all_b = self._gather(anchor_a), self._gather(anchor_b)
        n, total = anchor_a.shape[0], all_a.shape[0]
        own = rank() * n + torch.arange(n, device=anchor_a.device)  # this process's rows among all videos
        rows = torch.arange(2 * n, device=anchor_a.device)
        same_video = torch.cat([own, own])
        # Candidates are [all A; all B]: anchor A_i's positive is B_i and it ignores itself, and vice versa.
        positive_mask = torch.zeros(2 * n, 2 * total, dtype=torch.bool, device=anchor_a.device)
        ignore_mask = torch.zeros_like(positive_mask)
        positive_mask[rows, same_video + torch.cat([own.new_full((n,), total), own.new_zeros(n)])] = True
        ignore_mask[rows, same_video + torch.cat([own.new_zeros(n), own.new_full((n,), total)])] = True
        if extra_negatives is not None:
            extra_negatives = torch.cat([extra_negatives, extra_negatives])
        loss = info_nce(
            torch.cat([anchor_a, anchor_b]),
            torch.cat([all_a, all_b]),
            positive_mask,
            self.config.temperature,
            ignore_mask=ignore_mask,
            extra_negatives=extra_negatives,
        )
        affinity = torch.softmax(
            similarity_logits(anchor_a.detach(), all_b.detach(), self.config.temperature), 1
        )
        return loss, affinity

    def _timestamp_loss(
        self, head: nn.Module, clip_a: torch.Tensor, clip_b: torch.Tensor, clip_g: torch.Tensor
    ):
        """Term 3: A and B pooled to half length and joined in time must find their steps in G (`[n, C, T]` each)."""
        steps = clip_g.shape[-1]
        local = torch.cat(
            [
                F.adaptive_avg_pool1d(head(clip_a), steps // 2),
                F.adaptive_avg_pool1d(head(clip_b), steps // 2),
            ],
            dim=-1,
        )
        return timestamp_alignment(
            local.transpose(1, 2), head(clip_g).transpose(1, 2), self.config.temperature
        )

    def _sinkhorn_pool(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows Sinkhorn runs over, the current ones `scores` `[N, 2K]` last, and which of them take part.

        From `logit_queue_start_epoch` on, the authors' code pushes the batch into its FIFO of `logit_queue_size`
        rows before reading it: the batch and the `logit_queue_size - N` newest past rows, oldest first (fewer
        while the queue fills; the batch alone if it is larger than the queue). Before, the batch alone. The
        pool always has the rows of a full window and a mask of those that hold scores, so that nothing reads
        the queue's fill level on the host.
        """
        if self.epoch < self.config.logit_queue_start_epoch:
            return scores, None
        past, valid = self.logit_queue.newest_window(self.config.logit_queue_size - scores.shape[0])
        mask = torch.cat([valid, valid.new_ones(scores.shape[0])])
        return torch.cat([past.to(scores.dtype), scores]), mask

    def _prototype_loss(self, high: torch.Tensor):
        """Term 4: swapped prediction of Sinkhorn codes; returns the loss and all videos' cluster labels `[N]`.

        `high` `[3n, C, T]` holds the high level of every view, video by video. The global head sees all three
        views, as in the code, so that its batch norm takes its statistics from the same batch; only A and B
        are scored.
        """
        config = self.config
        embeddings = F.normalize(self.global_head(high.mean(dim=-1)), dim=-1)
        embeddings = embeddings.view(-1, len(VIEWS), embeddings.shape[-1])
        logits_a, logits_b = (
            similarity_logits(embeddings[:, view], self.prototypes.weight) for view in (0, 1)
        )
        with torch.no_grad():
            scores = gather_no_grad(
                torch.cat([logits_a, logits_b], dim=1), assume_equal_sizes=True
            )  # [N, 2K]
            pool, mask = self._sinkhorn_pool(scores)
            # A's and B's problems side by side, [2, rows, K]: one Sinkhorn for both clips
            pools = pool.unflatten(1, (2, -1)).transpose(0, 1)
            codes = sinkhorn(pools, config.sinkhorn_epsilon, config.sinkhorn_iterations, mask)
            codes = codes[:, -scores.shape[0] :].unbind(0)
            if self.training:
                self.logit_queue.enqueue(scores)
            own = rank() * logits_a.shape[0] + torch.arange(logits_a.shape[0], device=scores.device)
            cluster_labels = (codes[0] + codes[1]).argmax(dim=1)
        loss = swapped_prediction(
            logits_a, logits_b, codes[0][own], codes[1][own], config.prototype_temperature
        )
        return loss, cluster_labels

    def _graph_targets(self, affinity: torch.Tensor, cluster_labels: torch.Tensor) -> torch.Tensor:
        """Term 5's target G `[n, N]`: thresholded instance affinities within the anchor's cluster, rows normalised."""
        n = affinity.shape[0]
        own = rank() * n + torch.arange(n, device=affinity.device)
        is_self = torch.zeros_like(affinity, dtype=torch.bool)
        is_self[torch.arange(n, device=affinity.device), own] = True
        instance = torch.where(is_self | (affinity >= self.config.graph_threshold), affinity, 0.0)
        semantic = (cluster_labels[own, None] == cluster_labels[None, :]).to(affinity.dtype)
        graph = instance * semantic
        return graph / graph.sum(dim=1, keepdim=True)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MLFOPreTrainingOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `[batch_size, 3, num_frames, num_channels, height, width]`):
                Clips A, B and G of every video (the MLFO view recipe).
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        if pixel_values.ndim != 6 or pixel_values.shape[1] != len(VIEWS):
            raise ValueError(
                "MLFOForPreTraining takes `pixel_values` [batch, 3 views (A, B, G), frames, channels, height, "
                f"width], got {tuple(pixel_values.shape)}."
            )
        batch = pixel_values.shape[0]
        encoded = self.mlfo(pixel_values.flatten(0, 1), output_hidden_states=True, return_dict=True)

        # Every level as a time sequence [3B, C, T_level] (space pooled away, time pooled to the level's steps);
        # mid and low through their motion-excitation adapter, which also sees the time-reversed map.
        sequences, reversed_sequences = {}, {}
        for (level, stage), steps in zip(LEVELS.items(), config.level_time_steps):
            feature_map = encoded.hidden_states[stage]
            if level in self.motion_excitation:
                excited = self.motion_excitation[level](torch.cat([feature_map, feature_map.flip(2)]))
                pooled = F.adaptive_avg_pool3d(excited, (steps, 1, 1)).flatten(2)
                sequences[level], reversed_sequences[level] = pooled.chunk(2)
            else:
                sequences[level] = F.adaptive_avg_pool3d(feature_map, (steps, 1, 1)).flatten(2)

        def views(sequence):  # [3B, C, T] -> A, B, G of shape [B, C, T]
            return sequence.view(batch, len(VIEWS), *sequence.shape[1:]).unbind(1)

        weights = dict(zip(LEVELS, config.level_weights))
        terms = {}
        total = 0.0

        high_a, high_b, _ = views(sequences["high"])
        head = self.projections["high"]["instance"]
        terms["instance_loss"], affinity = self._clip_contrast(
            _time_mean_embedding(head, high_a), _time_mean_embedding(head, high_b)
        )
        total = total + weights["high"] * terms["instance_loss"]

        if config.use_motion_contrast:
            for level in ("mid", "low"):
                head = self.projections[level]["instance"]
                clip_a, clip_b, _ = views(sequences[level])
                reversed_a, reversed_b, _ = views(reversed_sequences[level])
                reversed_own = torch.stack(
                    [_time_mean_embedding(head, reversed_a), _time_mean_embedding(head, reversed_b)], dim=1
                )
                terms[f"motion_loss_{level}"], _ = self._clip_contrast(
                    _time_mean_embedding(head, clip_a), _time_mean_embedding(head, clip_b), reversed_own
                )
                total = total + weights[level] * terms[f"motion_loss_{level}"]

        if config.use_timestamp_alignment:
            for level in LEVELS:
                terms[f"timestamp_loss_{level}"] = self._timestamp_loss(
                    self.projections[level]["timestamp"], *views(sequences[level])
                )
                total = total + weights[level] * terms[f"timestamp_loss_{level}"]

        cluster_labels = None
        if config.use_prototypes:
            terms["prototype_loss"], cluster_labels = self._prototype_loss(sequences["high"])
            total = total + config.prototype_loss_weight * terms["prototype_loss"]

        if config.use_graph:
            targets = self._graph_targets(affinity, cluster_labels)
            graph_loss = 0.0
            for level in LEVELS:
                head = self.projections[level]["graph"]
                clip_a, clip_b, _ = views(sequences[level])
                all_b = self._gather(_time_mean_embedding(head, clip_b))
                logits = similarity_logits(_time_mean_embedding(head, clip_a), all_b, config.temperature)
                level_loss = soft_target_cross_entropy(logits, targets, config.graph_loss_mean_over_columns)
                graph_loss = graph_loss + weights[level] * level_loss
            # Computed from the first step so that its heads take part in every DDP step, counted once active.
            terms["graph_loss"] = graph_loss * float(self.epoch >= config.graph_start_epoch)
            total = total + terms["graph_loss"]

        own = rank() * batch + torch.arange(batch, device=pixel_values.device)
        output = MLFOPreTrainingOutput(
            loss=total,
            cluster_labels=cluster_labels[own] if cluster_labels is not None else None,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
            **terms,
        )
        return output if return_dict else output.to_tuple()


MLFOConfig.register_for_auto_class()
MLFOModel.register_for_auto_class("AutoModel")
MLFOForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
MLFOForPreTraining.register_for_auto_class("AutoModelForPreTraining")
