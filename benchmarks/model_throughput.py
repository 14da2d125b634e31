"""Model throughput, as ratios against reference runs on the same machine, same weights and same inputs.

* inference: ``MLFOModel`` (hf_vssl's R3D-18, torchvision layout) against a plain-PyTorch torchvision-layout R3D-18
  (``tests/torchvision_video_resnet.py``) loaded with the same weights;
* training: one ``MLFOForPreTraining`` step (3 views per video, every term of the objective) against the plain
  forward + backward of the same backbone on the same 3 clips per video, i.e. what the objective costs on top;
  one ``HDCForPreTraining`` step (anchor through the online encoder with gradient, both positives through the momentum
  encoder without, six queue contrasts, the momentum update) against the same 3-clip reference and against the bare
  backbone work of that step (forward + backward on the anchor, forward without gradient on the positives); the
  same with ``reversed_anchor_negatives`` against that reference and against one whose online encoder also trains
  on the reversed anchors;
  and one ``CtrlAugForPreTraining`` step (global view + 2 local clips with their tubes, all four terms) against the
  same 3-clip reference (the same backbone architecture).

    python benchmarks/model_throughput.py [--batch-size 4] [--frames 16] [--size 112] [--repeats 5] [--device cpu]

Prints a markdown table of clips/s and the ratios (1.00 = as fast as the reference).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hf_vssl  # noqa: E402
from hf_vssl.backbones import convert_torchvision_state_dict  # noqa: E402
from tests import torchvision_video_resnet as reference  # noqa: E402


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch, frames, size = args.batch_size, args.frames, args.size

    plain = reference.r3d_18().to(device).eval()
    config = hf_vssl.MLFOConfig(backbone="r3d", num_frames=frames, image_size=size)
    encoder = hf_vssl.MLFOModel(config).to(device).eval()
    encoder.backbone.load_state_dict(convert_torchvision_state_dict(plain.state_dict(), "r3d"))
    clips = torch.randn(batch, frames, 3, size, size, device=device)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(clips).last_hidden_state, plain.features(clips.transpose(1, 2))[-1]
        )
        plain_s = timed(lambda: plain.features(clips.transpose(1, 2)), args.repeats, device)
        ours_s = timed(lambda: encoder(clips), args.repeats, device)

    pretraining = hf_vssl.MLFOForPreTraining(config).to(device).train()
    views = torch.randn(batch, 3, frames, 3, size, size, device=device)
    backbone = pretraining.mlfo.backbone

    def backbone_step():
        backbone(views.flatten(0, 1).transpose(1, 2))[-1].mean().backward()

    def pretraining_step():
        pretraining(views).loss.backward()

    backbone_s = timed(backbone_step, args.repeats, device)
    step_s = timed(pretraining_step, args.repeats, device)

    # HDC on the same 3 clips per video (anchor, spatial and temporal positive): the online encoder trains on the
    # anchors, the momentum encoder only encodes the positives; a second reference is that bare MoCo-shaped step.
    hdc_config = hf_vssl.HDCConfig(backbone="r3d", num_frames=frames, image_size=size)
    hdc = hf_vssl.HDCForPreTraining(hdc_config).to(device).train()
    hdc_backbone, key_backbone = hdc.hdc.backbone, hdc.momentum_encoder.backbone

    def moco_backbone_step(reversed_anchors=False):
        anchors = views[:, 0]
        anchors = torch.cat([anchors, anchors.flip(1)]) if reversed_anchors else anchors
        hdc_backbone(anchors.transpose(1, 2))[-1].mean().backward()
        with torch.no_grad():
            key_backbone(views[:, 1:].flatten(0, 1).transpose(1, 2))

    def hdc_step(model):
        model(views).loss.backward()
        model.after_optimizer_step()

    moco_s = timed(moco_backbone_step, args.repeats, device)
    hdc_s = timed(lambda: hdc_step(hdc), args.repeats, device)
    # With reversed-anchor negatives the online encoder also trains on each anchor played backwards.
    hdc_reversed = hf_vssl.HDCForPreTraining(
        hf_vssl.HDCConfig(backbone="r3d", num_frames=frames, image_size=size, reversed_anchor_negatives=True)
    )
    hdc_reversed = hdc_reversed.to(device).train()
    moco_reversed_s = timed(lambda: moco_backbone_step(reversed_anchors=True), args.repeats, device)
    hdc_reversed_s = timed(lambda: hdc_step(hdc_reversed), args.repeats, device)

    # ctrlaug: the global view and two local clips per video, each local clip's tube inside the global view.
    ctrlaug = (
        hf_vssl.CtrlAugForPreTraining(
            hf_vssl.CtrlAugConfig(backbone="r3d", num_frames=frames, image_size=size)
        )
        .to(device)
        .train()
    )
    tubes = torch.tensor([[0.0, 0.25, 0.1, 0.2, 0.6, 0.9], [0.5, 0.75, 0.4, 0.0, 1.0, 0.5]], device=device)
    tubes = tubes.expand(batch, 2, 6)

    def ctrlaug_step():
        ctrlaug(views, tubes=tubes).loss.backward()

    ctrlaug_step_s = timed(ctrlaug_step, args.repeats, device)

    rows = [
        ("inference: plain PyTorch R3D-18 (reference)", batch / plain_s, 1.0),
        ("inference: MLFOModel, same weights", batch / ours_s, plain_s / ours_s),
        ("training: backbone forward+backward, 3 clips/video (reference)", batch / backbone_s, 1.0),
        ("training: MLFOForPreTraining step, all terms", batch / step_s, backbone_s / step_s),
        (
            "training: HDCForPreTraining step (3 levels x 2 subtasks, queues, momentum update)",
            batch / hdc_s,
            backbone_s / hdc_s,
        ),
        (
            "training: backbone fwd+bwd on the anchor, no-grad fwd on 2 positives (MoCo reference)",
            batch / moco_s,
            1.0,
        ),
        ("training: HDCForPreTraining step against the MoCo reference", batch / hdc_s, moco_s / hdc_s),
        (
            "training: HDC step with reversed_anchor_negatives against the MoCo reference",
            batch / hdc_reversed_s,
            moco_s / hdc_reversed_s,
        ),
        (
            "training: HDC step with reversed_anchor_negatives against the MoCo reference + reversed anchors",
            batch / hdc_reversed_s,
            moco_reversed_s / hdc_reversed_s,
        ),
        (
            "training: CtrlAugForPreTraining step, all terms",
            batch / ctrlaug_step_s,
            backbone_s / ctrlaug_step_s,
        ),
    ]
    print(f"device={device}, batch={batch} videos, clip={frames}x{size}x{size}, median of {args.repeats}\n")
    print("| run | videos/s | ratio to reference |\n|---|---:|---:|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
