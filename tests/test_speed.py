"""The speed settings change nothing but speed, checked on CPU: no host synchronisation inside any pretraining
step, channels-last equal to the default layout (float64, outputs and gradients), a compiled step equal to an
eager one, and the loop's bf16 autocast and gradient accumulation visibly in effect (against an independent
recomputation of the window's mean gradient)."""

import contextlib
import copy
import json
from contextlib import contextmanager

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

import hf_vssl
from hf_vssl.train import pretrain
from hf_vssl.train.arguments import PretrainArguments
from hf_vssl.train.speed import channels_last_clips, compile_model, to_channels_last

from . import test_ctrlaug, test_hdc, test_mlfo
from .training_runs import TINY_RUN


def _mlfo():
    # every term on, the logit queue in the Sinkhorn pool and the graph term active
    config = dict(TINY_RUN["model"], logit_queue_size=8, logit_queue_start_epoch=1, graph_start_epoch=1)
    torch.manual_seed(0)
    model = hf_vssl.MLFOForPreTraining(hf_vssl.MLFOConfig(**config)).double()
    model.set_epoch(2)
    return model, lambda seed: {"pixel_values": test_mlfo.views(num_videos=3, seed=seed)}


def _ctrlaug():
    model = test_ctrlaug.tiny_model()
    model.set_epoch(3)

    def inputs(seed):
        pixel_values, tubes = test_ctrlaug.views(num_videos=3, seed=seed)
        return {"pixel_values": pixel_values, "tubes": tubes}

    return model, inputs


def _hdc():
    return test_hdc.tiny_model(), lambda seed: {"pixel_values": test_hdc.views(num_videos=3, seed=seed)}


METHODS = {"mlfo": _mlfo, "ctrlaug": _ctrlaug, "hdc": _hdc}


def _loss_terms(output) -> dict:
    return {k: v.detach() for k, v in output.items() if "loss" in k and isinstance(v, torch.Tensor)}


def _step(model, inputs) -> tuple[dict, dict]:
    """One training step's forward and backward: the loss terms and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    output = model(**inputs)
    output.loss.backward()
    grads = {
        n.removeprefix("_orig_mod."): p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    return _loss_terms(output), grads


def _assert_same_step(a, b, **tolerance):
    (terms_a, grads_a), (terms_b, grads_b) = a, b
    assert terms_a.keys() == terms_b.keys() and grads_a.keys() == grads_b.keys()
    for name in terms_a:
        torch.testing.assert_close(terms_a[name], terms_b[name], **tolerance, msg=name)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], **tolerance, msg=name)


# --- no host synchronisation ---------------------------------------------------------------------------------------


class HostRead(AssertionError):
    pass


# Every way Python code reads a tensor's value on the host: `.item()`, `.tolist()`, `int(t)`, `float(t)`, `if t:`,
# `range(t)` / indexing with a tensor scalar, `.cpu()`, `.numpy()`. On an accelerator each one waits for the GPU.
HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")


@contextmanager
def host_reads_forbidden():
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def forbid(name):
        def read(self, *args, **kwargs):
            raise HostRead(f"Tensor.{name} inside a training step (a host-device synchronisation)")

        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, forbid(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def test_the_guard_catches_every_host_read():
    loss = torch.ones(3, requires_grad=True).sum()
    for read in (
        lambda: loss.item(),
        lambda: float(loss),
        lambda: int(loss),
        lambda: bool(loss > 0),
        lambda: loss.tolist(),
        lambda: torch.arange(3)[torch.tensor(1)] if range(torch.tensor(2)) else None,
    ):
        with host_reads_forbidden(), pytest.raises(HostRead):
            read()
    assert loss.item() == 3.0  # restored


def _classifier():
    # problem_type given, as the first loss call would set it (a change that costs a recompilation)
    config = test_hdc.tiny_hdc_config(num_labels=4, problem_type="single_label_classification")
    torch.manual_seed(0)
    classifier = hf_vssl.HDCForVideoClassification(config).double()
    labels = torch.tensor([0, 3, 1])
    return classifier, lambda seed: {
        "pixel_values": test_hdc.views(num_videos=3, seed=seed)[:, 0],
        "labels": labels,
    }


def _two_steps(model, inputs, forbid_host_reads=True, steps=2) -> list:
    """Two training steps (forward, backward, the loop's hooks, SGD), the second with the queues holding the
    first step's keys: each step's loss terms and gradients."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    results = []
    for seed in (1, 2)[:steps]:
        batch = inputs(seed)
        with host_reads_forbidden() if forbid_host_reads else contextlib.nullcontext():
            results.append(_step(model, batch))
            for hook in ("before_optimizer_step", "after_optimizer_step"):
                getattr(model, hook, lambda: None)()
            optimizer.step()
    return results


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_pretraining_step_reads_nothing_on_the_host_and_is_unchanged_by_channels_last_and_compile(method):
    """Every pretraining model, every term on, float64:

    * two steps read no tensor value on the host: an `.item()`, a `.tolist()` or an `if` on a tensor in a
      model, head or loss fails;
    * a channels-last copy (model and clips) gives the same loss terms and gradients (first step);
    * a compiled copy (`compile_model`, dynamo's `eager` backend: the graph capture, guards and the queues'
      in-place updates, without code generation) gives the same in one graph, without graph breaks.
    """
    from torch._dynamo.utils import counters

    model, inputs = METHODS[method]()
    fast, compiled = to_channels_last(copy.deepcopy(model)), copy.deepcopy(model)
    reference = _two_steps(model, inputs)

    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not conv.weight.is_contiguous()  # really another layout, not a no-op
    batch = inputs(1)
    fast_batch = channels_last_clips(batch)
    clips = fast_batch["pixel_values"].flatten(0, 1).permute(0, 2, 1, 3, 4)  # what the encoder's stem sees
    assert clips.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(fast_batch["pixel_values"], batch["pixel_values"])
    for expected, result in zip(
        reference, _two_steps(fast, lambda seed: channels_last_clips(inputs(seed)), steps=1)
    ):
        _assert_same_step(expected, result, rtol=1e-9, atol=1e-12)

    counters.clear()
    torch._dynamo.reset()
    compiled = compile_model(compiled, backend="eager")
    for expected, result in zip(reference, _two_steps(compiled, inputs, forbid_host_reads=False)):
        _assert_same_step(expected, result, rtol=1e-9, atol=1e-12)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_a_classifier_compiled_with_aot_autograd_trains_like_an_eager_one():
    """Fine-tuning's model under `compile_model` with `aot_eager` (AOT autograd's joint forward-backward graph,
    as inductor gets it, without inductor's code generation)."""
    model, inputs = _classifier()
    compiled = compile_model(copy.deepcopy(model), backend="aot_eager")
    for expected, result in zip(
        _two_steps(model, inputs), _two_steps(compiled, inputs, forbid_host_reads=False)
    ):
        _assert_same_step(expected, result, rtol=1e-9, atol=1e-12)


# --- the loop: bf16 autocast and gradient accumulation in effect, channels-last and compile through it ----------


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _loop_args(tmp_path, tiny_data, **overrides) -> PretrainArguments:
    values = {**TINY_RUN, "train_dir": str(tiny_data["train"]), "output_dir": str(tmp_path / "run")}
    args = PretrainArguments(**{**values, **overrides})
    args.validate()
    return args


def test_the_loop_autocasts_to_bf16_and_steps_on_the_mean_gradient_of_each_window(
    tmp_path, tiny_data, monkeypatch, fresh_accelerate_state
):
    """With `--mixed_precision bf16 --gradient_accumulation_steps 2` the convolutions run in bfloat16, and the
    optimizer steps once per two micro-batches on the mean of their gradients, recomputed here from a copy of the
    model taken at the start of each window and the recorded micro-batches. The run also keeps a channels-last
    model (forced on CPU), which must checkpoint and release like the default layout."""
    accumulation = 2
    seen = {"dtypes": [], "batches": [], "snapshots": [], "steps": []}

    def build_model(args):
        model = build_model.original(args)
        names = {id(p): n for n, p in model.named_parameters()}

        def before_forward(module, args, kwargs):
            if len(seen["batches"]) % accumulation == 0:  # a window starts: the state it starts from
                seen["snapshots"].append(copy.deepcopy(module))
            seen["batches"].append({k: v.clone() for k, v in kwargs.items()})

        model.register_forward_pre_hook(before_forward, with_kwargs=True)
        stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
        stem.register_forward_hook(lambda m, i, output: seen["dtypes"].append(output.dtype))
        model._names = names
        return model

    def build_optimizer(args, model):
        optimizer = build_optimizer.original(args, model)
        step = optimizer.step

        def recording_step(*a, **k):
            seen["steps"].append(
                {model._names[id(p)]: p.grad.clone() for p in model.parameters() if p.grad is not None}
            )
            return step(*a, **k)

        optimizer.step = recording_step
        return optimizer

    build_model.original, build_optimizer.original = pretrain.build_model, pretrain.build_optimizer
    monkeypatch.setattr(pretrain, "build_model", build_model)
    monkeypatch.setattr(pretrain, "build_optimizer", build_optimizer)
    args = _loop_args(
        tmp_path,
        tiny_data,
        max_steps=1,
        gradient_accumulation_steps=accumulation,
        mixed_precision="bf16",
        channels_last=True,
    )
    final = pretrain.train(args)

    assert seen["dtypes"] and set(seen["dtypes"]) == {torch.bfloat16}
    assert len(seen["batches"]) == 2 and len(seen["steps"]) == 1  # one optimizer step per two micro-batches
    for window, (snapshot, grads) in enumerate(zip(seen["snapshots"], seen["steps"])):
        reference = snapshot.train()
        assert next(reference.parameters()).grad is None
        for batch in seen["batches"][window * accumulation : (window + 1) * accumulation]:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = reference(**batch).loss
            (loss / accumulation).backward()
        reference.before_optimizer_step()
        expected = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
        assert grads.keys() == expected.keys() and len(grads) > 10
        for name in grads:
            torch.testing.assert_close(grads[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)
    # the channels-last model checkpointed and released (safetensors refuses tensors it cannot write as stored)
    assert (final / "model.safetensors").is_file() and any((tmp_path / "run" / "checkpoints").iterdir())


def test_torch_compile_through_the_loop(tmp_path, tiny_data, fresh_accelerate_state):
    """`--torch_compile` (dynamo's eager backend on CPU) trains, logs and releases; the model the loop stepped was compiled."""
    from torch._dynamo.utils import counters

    counters.clear()
    args = _loop_args(tmp_path, tiny_data, max_steps=2, torch_compile=True, torch_compile_backend="eager")
    final = pretrain.train(args)
    assert counters["stats"]["unique_graphs"] >= 1
    records = [
        json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert (final / "model.safetensors").is_file()


def test_a_single_process_loop_reads_nothing_on_the_host_between_steps(fresh_accelerate_state):
    """The per-step "does every process still have a batch" agreement costs one process no device read."""
    from accelerate import Accelerator

    from hf_vssl.train.collectives import all_processes_have_batch

    accelerator = Accelerator(cpu=True)
    with host_reads_forbidden():
        assert all_processes_have_batch(accelerator, True) and not all_processes_have_batch(
            accelerator, False
        )


def test_every_paper_config_trains_in_bf16():
    """The papers' setups train in mixed precision; the paper configs (K400, UCF101) say so, the demos need not."""
    import yaml

    from hf_vssl.methods import CONFIG_DIR

    papers = sorted([*CONFIG_DIR.glob("*_k400.yaml"), *CONFIG_DIR.glob("*_ucf101.yaml")])
    assert len(papers) >= 6
    for path in papers:
        assert yaml.safe_load(path.read_text()).get("mixed_precision") == "bf16", path.name
