"""Evaluation of frozen video encoders, CoCLR style.

Typical use::

    from hf_vssl.evaluation import extract_features, evaluate_features, format_results_table

    train = extract_features(model, train_loader)  # VideoFeatures(features [N, D], labels [N], video_ids)
    test = extract_features(model, test_loader)
    results = evaluate_features(train, test)  # {"linear_probe/top1": ..., "knn/top1": ..., "retrieval/R@1": ...}
    print(format_results_table({"pretrained": results}))
    EvalResults.from_metrics(results, dataset="ucf101", split="test").save("results.json")  # for the model card

All metrics are fractions in ``[0, 1]``; `EvalResults` (``results.py``) is the one record of measured numbers that
the training scripts write and model cards render.
"""

from .classifier import multi_view_accuracy
from .features import VideoFeatures, aggregate_by_video, encode_clips, extract_features, pooled_output
from .linear_probe import LinearProbeClassifier, linear_probe, train_linear_probe
from .metrics import class_indices, recall_at_k, topk_accuracy
from .results import EvalRecord, EvalResults, describe_views
from .retrieval import RETRIEVAL_KS, center_and_normalize, cosine_topk, knn_classify, retrieval_recall
from .suite import PROTOCOLS, evaluate_features, format_results_table

__all__ = [
    "PROTOCOLS",
    "RETRIEVAL_KS",
    "EvalRecord",
    "EvalResults",
    "LinearProbeClassifier",
    "VideoFeatures",
    "aggregate_by_video",
    "center_and_normalize",
    "class_indices",
    "cosine_topk",
    "describe_views",
    "encode_clips",
    "evaluate_features",
    "extract_features",
    "format_results_table",
    "knn_classify",
    "linear_probe",
    "multi_view_accuracy",
    "pooled_output",
    "recall_at_k",
    "retrieval_recall",
    "topk_accuracy",
    "train_linear_probe",
]
