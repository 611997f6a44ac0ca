"""results.md (Markdown tables) and the PNG plots of a benchmark run, written atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from common.io import atomic_output, atomic_write_text

__all__ = ["PLOTS", "markdown", "write_plots"]

PLOTS = ("dice_vs_nfe.png", "throughput.png", "memory.png")


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "met" if value else "not met"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and abs(value) < 0.01:
            return f"{value:.{max(digits, 1)}g}"
        return f"{value:.{digits}f}"
    return str(value)


def _get(d: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _scores(scores: dict | None) -> str:
    if not scores:
        return "-"
    return ", ".join(f"{k} {_f(v)}" for k, v in scores.items() if k != "method" and isinstance(v, int | float))


def _quality_rows(results: dict) -> list[str]:
    rows = [
        "| bundle | data | metric | bundle (method) | BasicUNet, same wall time | training s (bundle / UNet) | "
        "paper (bundle / UNet) | paper source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["bundles"].items():
        q = r.get("quality", {})
        paper = r.get("paper", {})
        if "error" in q:
            rows.append(f"| {name} | - | failed: {q['error']} | - | - | - | - | - |")
            continue
        bundle = q.get("bundle", {})
        unet = _scores(q["basic_unet"]) if q.get("basic_unet") else q.get("basic_unet_note", "-")
        published = (
            f"{_scores(paper.get('bundle'))} / {_scores(paper.get('unet'))} ({paper.get('dataset')})"
            if "bundle" in paper
            else paper.get("note", "-")
        )
        seconds = f"{_f(q.get('train_seconds'), 0)} / {_f(q.get('basic_unet_train_seconds'), 0)}"
        if q.get("input"):
            bundle = {**bundle, "method": f"{bundle.get('method')}; corrupted input: {_scores(q['input'])}"}
        rows.append(
            f"| {name} | {Path(q.get('data', '-')).name} | {q.get('metric', '-')} | {_scores(bundle)} "
            f"({bundle.get('method', '-')}) | {unet} | {seconds} | {published} | {paper.get('source', '-')} |"
        )
    return rows


def _curve_rows(results: dict) -> list[str]:
    curve = _get(results, "bundles", "sdf_score_segmentation", "quality", "dice_vs_nfe")
    if not curve:
        return []
    rows = [
        "",
        "### SDF bundle: Dice vs network evaluations (same trained network)",
        "",
        "| sampler | NFE | Dice | s / image |",
        "|---|---|---|---|",
    ]
    rows += [f"| {c['sampler']} | {c['nfe']} | {_f(c['dice'])} | {_f(c['seconds_per_image'])} |" for c in curve]
    return rows


def _speed_rows(results: dict) -> list[str]:
    rows = [
        "| bundle | training images/s (batch) | s / training step | inference s / image | NFE / image | "
        "peak RSS train (MB) | peak RSS inference (MB) | peak RSS pixel features (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["bundles"].items():
        train, infer, mem = (
            r.get("speed", {}).get("train", {}),
            r.get("speed", {}).get("inference", {}),
            r.get("memory", {}),
        )
        latency = _f(infer.get("seconds_per_image"))
        if infer.get("extrapolated"):
            latency += " (extrapolated)"
        rows.append(
            f"| {name} | {_f(train.get('images_per_s'))} ({train.get('batch_size', '-')}) | "
            f"{_f(train.get('step_seconds'))} | {latency} | "
            f"{_f(infer.get('nfe'))} | {_f(mem.get('train_peak_rss_mb'), 0)} | "
            f"{_f(mem.get('inference_peak_rss_mb'), 0)} | {_f(mem.get('pixel_features_peak_rss_mb'), 0)} |"
        )
    return rows


def _lever(lever: dict | None) -> str:
    if not lever:
        return "-"
    if "speedup" in lever:
        return f"{lever['speedup']:.2f}x" + (" (on by default)" if lever.get("shipped") == "channels_last" else "")
    return lever.get("status", lever.get("error", "-"))


def _efficiency_rows(results: dict) -> list[str]:
    goals = results["goals"]
    rows = [
        f"| bundle | GFLOP / step | achieved GFLOP/s | of ceiling (goal >= {goals['ceiling_fraction']:.0%}) | "
        f"data wait (goal < {goals['data_wait_fraction']:.0%}) | channels_last | bf16 autocast | torch.compile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["bundles"].items():
        e = r.get("efficiency", {})
        if "error" in e:
            rows.append(f"| {name} | failed: {e['error']} | | | | | | |")
            continue
        levers = e.get("levers", {})
        fraction, wait = e.get("ceiling_fraction"), e.get("data_wait_fraction")
        rows.append(
            f"| {name} | {_f((e.get('flops_per_step') or 0) / 1e9)} | {_f(e.get('achieved_gflops_per_s'))} | "
            f"{_f(100 * fraction if fraction is not None else None, 1)}% ({_f(e.get('ceiling_goal_met'))}) | "
            f"{_f(100 * wait if wait is not None else None, 1)}% ({_f(e.get('data_wait_goal_met'))}) | "
            f"{_lever(levers.get('channels_last'))} | {_lever(levers.get('bf16'))} | {_lever(levers.get('compile'))} |"
        )
    return rows


def _profile_rows(results: dict) -> list[str]:
    """Where each bundle's training step spends its time (profiler self time), and its convolutions' FLOP/s."""
    kinds = None
    rows: list[str] = []
    for name, r in results["bundles"].items():
        profile = _get(r, "efficiency", "profile")
        if not profile:
            continue
        if kinds is None:
            kinds = list(profile["shares"])
            rows = [
                "| bundle | " + " | ".join(kinds) + " | convolutions' GFLOP/s | largest operations |",
                "|---|" + "---|" * (len(kinds) + 2),
            ]
        top = ", ".join(f"{op['op']} {100 * op['share']:.0f}%" for op in profile["top_ops"][:3])
        shares = " | ".join(f"{100 * profile['shares'].get(k, 0.0):.0f}%" for k in kinds)
        rows.append(f"| {name} | {shares} | {_f(profile.get('convolution_gflops_per_s'), 1)} | {top} |")
    return rows


def markdown(results: dict) -> str:
    """The report: machine, quality, speed and memory, efficiency and levers."""
    m = results["machine"]
    mode = "QUICK (tiny networks and synthetic data: the numbers are not meaningful)" if results["quick"] else "full"
    lines = [
        "# Benchmark of the bundle collection",
        "",
        f"Mode: {mode}. Budget per bundle: {results['budget_s']:.0f} s of training (the BasicUNet gets the wall time "
        f"the bundle took). Machine: {m['cpu']['model']}, {m['cpu']['usable_cpus']} CPUs, {m['cpu']['torch_threads']} "
        f"torch threads, torch {m['cpu']['torch']}; conv2d ceiling {m['conv_ceiling']['gflops_per_s']:.1f} GFLOP/s "
        f"(oneDNN, float32); bf16: {'available' if m['cpu']['bf16']['available'] else 'not available on this CPU'}.",
        "",
        "## Quality (seeded test split)",
        "",
        *_quality_rows(results),
        *_curve_rows(results),
        "",
        "## Speed and memory (default sizes, synthetic sample data; peak RSS of each phase's own process)",
        "",
        *_speed_rows(results),
        "",
        "## Efficiency of a training step (FLOPs counted by torch.utils.flop_counter; levers: step time without the "
        "lever / with it)",
        "",
        *_efficiency_rows(results),
        "",
        "### Where a training step's time goes (torch.profiler, CPU self time of one step)",
        "",
        *_profile_rows(results),
        "",
        f"Total wall time: {results.get('seconds', 0):.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _save(figure: plt.Figure, path: Path) -> None:
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)


def _bars(results: dict, series: dict[str, tuple[str, ...]], ylabel: str, title: str, path: Path) -> None:
    names = list(results["bundles"])
    figure, axis = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(series))
    for i, (label, keys) in enumerate(series.items()):
        values = [_get(results["bundles"][n], *keys) or 0.0 for n in names]
        axis.bar([x + i * width for x in range(len(names))], values, width, label=label)
    axis.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(names))])
    axis.set_xticklabels([n.split("_")[0] for n in names])
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend()
    _save(figure, path)


def write_plots(results: dict, out_dir: Path) -> list[str]:
    """dice_vs_nfe.png (when the SDF bundle ran), throughput.png and memory.png; the names written."""
    written = []
    curve = _get(results, "bundles", "sdf_score_segmentation", "quality", "dice_vs_nfe")
    if curve:
        figure, axis = plt.subplots(figsize=(6, 4))
        for sampler in ("ode", "pc"):
            points = [c for c in curve if c["sampler"].startswith(sampler)]
            if points:
                axis.plot([c["nfe"] for c in points], [c["dice"] for c in points], "o-", label=sampler.upper())
        unet = _get(results, "bundles", "sdf_score_segmentation", "quality", "basic_unet", "dice")
        if unet is not None:
            axis.axhline(unet, color="grey", linestyle="--", label="BasicUNet (1 evaluation)")
        axis.set_xscale("log")
        axis.set_xlabel("network evaluations per image (NFE)")
        axis.set_ylabel("Dice")
        axis.set_title("SDF bundle: Dice vs NFE")
        axis.legend()
        _save(figure, out_dir / PLOTS[0])
        written.append(PLOTS[0])
    _bars(
        results,
        {"training": ("speed", "train", "images_per_s")},
        "images / s",
        "Training throughput (default sizes)",
        out_dir / PLOTS[1],
    )
    _bars(
        results,
        {
            "training": ("memory", "train_peak_rss_mb"),
            "inference": ("memory", "inference_peak_rss_mb"),
            "pixel features": ("memory", "pixel_features_peak_rss_mb"),
        },
        "peak RSS (MB)",
        "Peak memory of each phase",
        out_dir / PLOTS[2],
    )
    written += list(PLOTS[1:])
    return written


def write_markdown(results: dict, out_dir: Path) -> None:
    """results.md in ``out_dir``."""
    atomic_write_text(out_dir / "results.md", markdown(results))
