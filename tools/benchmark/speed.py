"""Speed phases, each run in its own process: training throughput and data wait, FLOP/s and levers, inference.

Training runs the bundle's own ``train.json`` (overlays as its README says) on its synthetic sample data at the
default size, for a few iterations; the first is a warm-up and is not counted. A step (``trainer._process_function``
on one fixed batch, the exact work of one training iteration without the data loader) is what FLOPs are counted on
and what the levers (channels_last, bf16 autocast, torch.compile) are timed against.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from torch.utils.flop_counter import FlopCounterMode

from tools.benchmark.budget import UNLIMITED_EPOCHS
from tools.benchmark.machine import bf16_support
from tools.benchmark.specs import BUNDLE_DIR, BUNDLES, quick_sizes
from tools.bundle_runs import bundle_workflow

__all__ = ["infer_speed", "pixel_features", "pretrain", "step_levers", "train_speed"]

logger = logging.getLogger("tools.benchmark.speed")


def _overrides(name: str, work: str, quick: bool, **extra: Any) -> dict[str, Any]:
    """Synthetic data, outputs under ``work``; the tiny sizes in quick mode."""
    sizes = quick_sizes(name)["train"] if quick else {}
    return {
        "bundle_root": str(BUNDLE_DIR / name),
        "dataset_dir": "",
        "ckpt_dir": str(Path(work) / "models"),
        "output_dir": str(Path(work) / "eval"),
        **sizes,
        **extra,
    }


def _train_workflow(name: str, work: str, quick: bool) -> ConfigWorkflow:
    spec = BUNDLES[name]
    speed = {k: v for k, v in spec.speed.items() if not (quick and k == "synthetic_num")}
    speed.update(max_epochs=UNLIMITED_EPOCHS, ddpm_max_epochs=UNLIMITED_EPOCHS)  # the timer stops the run
    return bundle_workflow(BUNDLE_DIR / name, spec.train_configs, **_overrides(name, work, quick, **speed))


def _batch_size(batch: Any) -> int:
    """Samples the network sees in one batch (the first dimension of the first tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if not isinstance(batch, dict | list | tuple):
        raise ValueError("not a tensor")
    for value in batch.values() if isinstance(batch, dict) else batch:
        with contextlib.suppress(ValueError):
            return _batch_size(value)
    raise ValueError("no tensor in the batch")


def _spatial_shape(batch: Any) -> list[int]:
    """Spatial shape of the batch's ``image`` (or first) tensor."""
    if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
        return list(batch["image"].shape[2:])
    if isinstance(batch, torch.Tensor):
        return list(batch.shape[2:])
    return []


def _window_batches(shape: list[int], roi: list[int], overlap: float, sw_batch_size: int) -> int:
    """Network calls one sampler step makes over an image: MONAI's sliding-window count, in batches of windows."""
    windows = 1
    for size, window in zip(shape, roi, strict=True):
        interval = max(1, int(window * (1 - overlap)))
        windows *= math.ceil(max(size - window, 0) / interval) + 1
    return math.ceil(windows / sw_batch_size)


class IterationTimer:
    """Times each iteration of ``engine`` and the gaps between them (data loading); stops after ``iterations``.

    The data wait is the time from one iteration's end to the next one's start, over the total time from the end
    of the first (warm-up) iteration to the end of the last; gaps across an epoch end (checkpoints) are left out.
    ``max_seconds``: stop earlier once the timed iterations (at least one) have taken that long.
    """

    def __init__(self, engine: Engine, iterations: int | None = None, max_seconds: float | None = None) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.sizes: list[int] = []
        self.epoch_first: list[bool] = []
        self.iterations, self.max_seconds = iterations, max_seconds
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch)
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._end)
        self._new_epoch = True

    def _epoch(self, engine: Engine) -> None:
        self._new_epoch = True

    def _start(self, engine: Engine) -> None:
        self.starts.append(time.perf_counter())
        self.epoch_first.append(self._new_epoch)
        self._new_epoch = False
        self.sizes.append(_batch_size(engine.state.batch))
        self.spatial_shape = _spatial_shape(engine.state.batch)

    def _end(self, engine: Engine) -> None:
        self.ends.append(time.perf_counter())
        enough = self.iterations is not None and len(self.ends) >= self.iterations
        slow = self.max_seconds is not None and len(self.ends) >= 2 and self.ends[-1] - self.ends[0] > self.max_seconds
        if enough or slow:
            engine.terminate()

    def summary(self) -> dict[str, Any]:
        """Images/s, seconds per iteration and data-wait fraction, first iteration excluded when there are more."""
        n = len(self.ends)
        if n == 0:
            raise RuntimeError("no iteration ran")
        first = 1 if n > 1 else 0
        steps = [self.ends[i] - self.starts[i] for i in range(first, n)]
        gaps = [self.starts[i] - self.ends[i - 1] for i in range(max(first, 1), n) if not self.epoch_first[i]]
        total = sum(steps) + sum(gaps)
        images = sum(self.sizes[i] for i in range(first, n))
        return {
            "iterations_timed": n - first,
            "batch_size": self.sizes[-1],
            "seconds_per_iteration": total / (n - first),
            "step_seconds": statistics.median(steps),
            "images_per_s": images / total,
            "data_wait_fraction": sum(gaps) / total if total > 0 else 0.0,
            "warmup_seconds": self.ends[0] - self.starts[0],
        }


def _publish_final(ckpt_dir: Path, final: str, target: str) -> None:
    """Copy ``final`` to ``target`` in ``ckpt_dir`` when no validated ``target`` exists (inference loads it)."""
    if not (ckpt_dir / target).is_file() and (ckpt_dir / final).is_file():
        shutil.copyfile(ckpt_dir / final, ckpt_dir / target)


def pretrain(name: str, work: str, quick: bool) -> dict[str, Any]:
    """What training needs first (GMS: one epoch of its autoencoder), so that training can be measured alone."""
    spec = BUNDLES[name]
    assert spec.pretrain is not None
    configs, extra = spec.pretrain
    if quick:
        extra = quick_sizes(name)["pretrain"]["args"]
    workflow = bundle_workflow(BUNDLE_DIR / name, configs, **_overrides(name, work, quick, **extra))
    workflow.run()
    workflow.finalize()
    return {"configs": list(configs)}


def train_speed(name: str, work: str, quick: bool, iterations: int, max_seconds: float) -> dict[str, Any]:
    """Train ``iterations`` iterations (fewer past ``max_seconds``) at the default size: throughput, data wait."""
    spec = BUNDLES[name]
    workflow = _train_workflow(name, work, quick)
    trainer = workflow.parser.get_parsed_content(spec.trainer_id)
    timer = IterationTimer(trainer, iterations, max_seconds)
    workflow.run()
    workflow.finalize()
    _publish_final(Path(work) / "models", "model_final.pt", "model.pt")
    return {**timer.summary(), "configs": list(spec.train_configs), "trainable_parameters": _trainable(workflow, spec)}


def _trainable(workflow: ConfigWorkflow, spec: Any) -> int:
    total = 0
    for network_id in spec.networks:
        module = workflow.parser.get_parsed_content(network_id)
        if isinstance(module, torch.nn.Module):
            total += sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total


def pixel_features(name: str, work: str, quick: bool) -> dict[str, Any]:
    """The DDPM bundle's pixel-classifier training (features of the DDPM trained before), one epoch."""
    overrides = _overrides(name, work, quick, max_epochs=1, val_interval=1)
    if not quick:
        overrides["synthetic_num"] = 16
    workflow = bundle_workflow(BUNDLE_DIR / name, ["train.json"], **overrides)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    start = time.perf_counter()
    workflow.run()
    workflow.finalize()
    _publish_final(Path(work) / "models", "model_final.pt", "model.pt")
    store = workflow.parser.get_parsed_content("train#feature_store")
    extractor = workflow.parser.get_parsed_content("feature_extractor")
    return {
        "train_seconds": time.perf_counter() - start,
        "iterations": trainer.state.iteration,
        "pixels": store.num_pixels(),
        "features_per_pixel": extractor.num_features,
    }


# ------------------------------------------------------------------------------------------------------------------
# one training step: FLOPs and levers


def _modules(workflow: ConfigWorkflow, spec: Any) -> list[torch.nn.Module]:
    found = [workflow.parser.get_parsed_content(i) for i in spec.networks]
    return [m for m in found if isinstance(m, torch.nn.Module)]


def _map_tensors(batch: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(batch, torch.Tensor):
        return function(batch)
    if isinstance(batch, dict):
        return {k: _map_tensors(v, function) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_map_tensors(v, function) for v in batch)
    return batch


def _time_steps(step: Callable[[], Any], repeats: int, max_seconds: float, warmup: int = 1) -> float:
    """Median time of ``repeats`` calls after ``warmup``; fewer repeats (at least one) when a call is slow, and
    none when the warm-up call alone took over ``max_seconds``: its time is then the measurement."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    first = (time.perf_counter() - start) / max(warmup, 1)
    if warmup and first > max_seconds:
        return first
    times = []
    for _ in range(max(1, min(repeats, int(max_seconds / max(first, 1e-9))))):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def _step_setup(name: str, work: str, quick: bool) -> tuple[ConfigWorkflow, Engine, Any]:
    workflow = _train_workflow(name, work, quick)
    trainer = workflow.parser.get_parsed_content(BUNDLES[name].trainer_id)
    # plain tensors: MONAI's MetaTensor does not go through torch.compile's tracing
    batch = _map_tensors(next(iter(trainer.data_loader)), lambda t: t.as_tensor() if isinstance(t, MetaTensor) else t)
    trainer.state.iteration, trainer.state.epoch = 1, 1
    return workflow, trainer, batch


#: kinds of operation of a step's profile, by fragments of the profiler's op names (the first kind that matches)
OP_KINDS = (
    ("convolution", ("convolution", "conv2d", "conv3d", "conv_transpose")),
    ("matrix multiply, attention", ("mm", "matmul", "linear", "attention")),
    ("normalization", ("norm",)),
)
OTHER_KIND = "other (element-wise, copies, optimizer)"


def _kind(op: str) -> str:
    return next((kind for kind, fragments in OP_KINDS if any(f in op for f in fragments)), OTHER_KIND)


def _profile_step(run: Callable[[], Any], flop_counts: dict[str, int]) -> dict[str, Any]:
    """Where one step's time goes: the share of its CPU self time of each kind of operation, its five largest
    operations, and the FLOP/s of its convolutions alone (their FLOPs over their self time)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        run()
    events = [(e.key, e.self_cpu_time_total / 1e6) for e in profiler.key_averages()]
    total = sum(seconds for _, seconds in events) or float("inf")
    shares = dict.fromkeys([kind for kind, _ in OP_KINDS] + [OTHER_KIND], 0.0)
    for op, seconds in events:
        shares[_kind(op)] += seconds / total
    conv_flops = sum(flops for op, flops in flop_counts.items() if _kind(op) == "convolution")
    conv_seconds = shares["convolution"] * total
    return {
        "profiled_seconds": total,
        "shares": shares,
        "top_ops": [{"op": op, "share": s / total} for op, s in sorted(events, key=lambda e: -e[1])[:5]],
        "convolution_gflops_per_s": conv_flops / conv_seconds / 1e9 if conv_seconds > 0 else None,
    }


def step_levers(
    name: str, work: str, quick: bool, repeats: int, levers: list[str], max_seconds: float
) -> dict[str, Any]:
    """FLOPs of one training step, its plain time and profile, and each lever's time (``compile`` runs in its own
    phase)."""
    workflow, trainer, batch = _step_setup(name, work, quick)

    def step(context: Callable[[], Any] = _nothing) -> Callable[[], Any]:
        def run() -> Any:
            with context():
                return trainer._process_function(trainer, batch)

        return run

    plain = _time_steps(step(), repeats, max_seconds)
    with FlopCounterMode(display=False) as counter:
        step()()
    flops = counter.get_total_flops()
    flop_counts = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    results: dict[str, Any] = {
        "flops_per_step": flops,
        "plain_step_seconds": plain,
        "achieved_gflops_per_s": flops / plain / 1e9,
        "profile": _profile_step(step(), flop_counts),
        "levers": {},
    }
    if "bf16" in levers:
        support = bf16_support()
        if support["available"]:
            seconds = _time_steps(step(lambda: torch.autocast("cpu", dtype=torch.bfloat16)), repeats, max_seconds)
            results["levers"]["bf16"] = {"step_seconds": seconds, "speedup": plain / seconds}
        else:
            results["levers"]["bf16"] = {"status": "not available on this CPU (no avx512_bf16 / amx flags)"}
    if "channels_last" in levers:
        results["levers"]["channels_last"] = _channels_last_lever(
            _modules(workflow, BUNDLES[name]), step(), plain, repeats, max_seconds
        )
    return results


def _is_channels_last(modules: list[torch.nn.Module]) -> bool:
    """Whether the networks' 4D weights are in channels-last format (as ``common.networks.place_network`` puts them);
    weights that both formats describe alike (one input channel, 1x1 kernels) do not decide."""
    weights = [p for m in modules for p in m.parameters() if p.dim() == 4]
    telling = [w for w in weights if not (w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last))]
    return bool(telling) and all(w.is_contiguous(memory_format=torch.channels_last) for w in telling)


def _channels_last_lever(
    modules: list[torch.nn.Module], run: Callable[[], Any], shipped_seconds: float, repeats: int, max_seconds: float
) -> dict[str, Any]:
    """Step time in the other memory format than the bundle ships (its ``channels_last`` key), as a bundle would run
    it (the networks' weights converted, the batch unchanged); ``speedup`` is always the default
    format's time over channels-last's."""
    shipped = "channels_last" if _is_channels_last(modules) else "contiguous"
    other = torch.contiguous_format if shipped == "channels_last" else torch.channels_last
    for module in modules:
        module.to(memory_format=other)
    other_seconds = _time_steps(run, repeats, max_seconds)
    last, default = (shipped_seconds, other_seconds) if shipped == "channels_last" else (other_seconds, shipped_seconds)
    return {"shipped": shipped, "step_seconds": last, "contiguous_step_seconds": default, "speedup": default / last}


def compile_step(name: str, work: str, quick: bool, repeats: int, max_seconds: float) -> dict[str, Any]:
    """One training step with every trained network ``torch.compile``d in place (inductor), against plain."""
    workflow, trainer, batch = _step_setup(name, work, quick)

    def run() -> Any:
        return trainer._process_function(trainer, batch)

    plain = _time_steps(run, repeats, max_seconds)
    for module in _modules(workflow, BUNDLES[name]):
        module.compile()
    start = time.perf_counter()
    run()
    compile_seconds = time.perf_counter() - start
    seconds = _time_steps(run, repeats, max_seconds, warmup=0)
    return {
        "plain_step_seconds": plain,
        "step_seconds": seconds,
        "speedup": plain / seconds,
        "first_step_seconds": compile_seconds,
    }


# ------------------------------------------------------------------------------------------------------------------
# inference


def infer_speed(name: str, work: str, quick: bool) -> dict[str, Any]:
    """The bundle's inference.json on its synthetic sample data with the weights trained above: s/image and NFE."""
    spec = BUNDLES[name]
    extra = {"synthetic_num": 2} if quick else dict(spec.infer)
    overrides = _overrides(name, work, quick, **extra, output_dir=str(Path(work) / "inference"))
    workflow = bundle_workflow(BUNDLE_DIR / name, ["inference.json"], "infer", **overrides)
    evaluator = workflow.parser.get_parsed_content("evaluator")
    inferer = workflow.parser.get_parsed_content("inferer")
    timer = IterationTimer(evaluator)
    workflow.run()
    workflow.finalize()
    summary = timer.summary()
    seconds = summary["step_seconds"] / summary["batch_size"]
    result: dict[str, Any] = {"seconds_per_image": seconds, "images_timed": summary["iterations_timed"]}
    if spec.diffusion:
        calls = getattr(inferer, "last_nfe", None)
        if calls is None:  # DDPM features: one network evaluation per feature timestep
            nfe = calls = len(workflow.parser["feature_timesteps"])
        else:  # the SDF sampler counts its calls over every batch of sliding windows
            p = workflow.parser
            nfe = calls // _window_batches(timer.spatial_shape, p["patch_size"], p["overlap"], p["sw_batch_size"])
        result.update(nfe=int(nfe), network_calls_per_image=int(calls))
        samples = int(workflow.parser["num_samples"]) if "num_samples" in workflow.parser else 1
        if not quick and spec.default_nfe and (nfe, samples) != (spec.default_nfe, spec.default_samples):
            result.update(
                measured_nfe=int(nfe),
                measured_samples=samples,
                measured_seconds_per_image=seconds,
                nfe=spec.default_nfe,
                samples=spec.default_samples,
                seconds_per_image=seconds * spec.default_nfe / nfe * spec.default_samples / samples,
                extrapolated=f"timed at {nfe} network evaluations x {samples} sample(s) per window, scaled to the "
                f"default {spec.default_nfe} x {spec.default_samples}",
            )
    return result
