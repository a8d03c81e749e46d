"""Rows of ``alexnet2012 bench``'s report: one row per measured execution (throughput, step-time
spread, memory, exchanged bytes, FLOP/s) from the per-rank figures :mod:`.benchlib` measured, and
the ratios between executions measured side by side in one run.
"""

from __future__ import annotations

import numpy as np

from alexnet2012 import config
from alexnet2012.bench.measure import SPLIT, Job
from alexnet2012.config import Config
from alexnet2012.nets.build import build_model, input_size


def forward_macs(cfg: Config, classes: int, channels: int) -> int:
    """Forward multiply-adds per image of the whole network (summary.layer_table, summed)."""
    from alexnet2012.nets.summary import layer_table

    model = build_model(cfg, classes, channels)
    return sum(r["macs"] for r in layer_table(model, channels, input_size(cfg)))


def summarise(job: Job, ranks: list[dict], epoch_images: int, flops: dict | None) -> dict:
    """One result row: throughput, step-time spread, memory, exchanged bytes, FLOP/s."""
    cfg = config.from_dict(job.cfg)
    steps = np.max([r["step_s"] for r in ranks], axis=0)  # the pair's step is its slower rank's
    median = float(np.median(steps))
    ips = cfg.train.batch_size / median
    points = sorted({k for r in ranks for k in r["bytes_by_point"]})
    row = {
        "name": job.name, "execution": job.execution, "model": cfg.model.name,
        "fc8": cfg.parallel.fc8 if job.execution in SPLIT else None,
        "world_size": job.world_size, "device": ranks[0]["device"],
        "backend": ranks[0]["backend"], "threads_per_rank": [r["threads"] for r in ranks],
        "overlapped": ranks[0]["overlapped"],
        "batch_size": cfg.train.batch_size, "input_size": input_size(cfg),
        "steps": job.steps, "warmup": job.warmup,
        "images_per_s": ips, "epoch_images": epoch_images, "epoch_s": epoch_images / ips,
        "step_s_median": median, "step_s_mean": float(np.mean(steps)),
        "step_s_p10": float(np.percentile(steps, 10)),
        "step_s_p90": float(np.percentile(steps, 90)),
        "peak_memory_kind": "cuda_max_allocated" if job.cuda else "max_rss",
        "peak_memory_per_rank": [r["peak_memory"] for r in ranks],
        "memory_at_start_per_rank": [r["memory_at_start"] for r in ranks],
        "param_bytes_per_rank": [r["param_bytes"] for r in ranks],
        "optimizer_bytes_per_rank": [r["optimizer_bytes"] for r in ranks],
        "bytes_per_step_by_point": {
            p: [r["bytes_by_point"].get(p, 0.0) for r in ranks] for p in points
        },
        "bytes_per_step_per_rank": [sum(r["bytes_by_point"].values()) for r in ranks],
        "calls_per_step_by_point": ranks[0]["calls_by_point"],
        "exchange_s_per_step_by_point": ranks[0]["exchange_s_by_point"],
        "exchange_share_per_rank": [r["wait_s"] / sum(r["step_s"]) for r in ranks],
        # how the exchanges' time was taken (comm.TowerGroup.wait_s): CUDA events on a GPU
        "exchange_share_measured_with": "cuda_events" if job.cuda else "host_clock",
        "profile": ranks[0]["profile"],  # rank 0's (bench --profile)
    }  # fmt: skip
    if flops:
        gflop = 3 * 2 * flops["macs"] / 1e9  # training ~ 3x forward, 2 FLOP per multiply-add
        achieved = gflop * ips / 1e3
        row.update(
            forward_macs=flops["macs"], train_gflop_per_image=gflop, achieved_tflops=achieved
        )
        if flops.get("peak_tflops"):
            peak = flops["peak_tflops"] * job.world_size  # two GPUs when two ranks hold one each
            row.update(peak_tflops=peak, peak_share=achieved / peak)
    return row


def ratios(rows: list[dict], plan: dict[str, list[int]]) -> dict:
    """Two ranks against one process, side by side in this run: step time and memory."""
    by = {r["name"]: r for r in rows}
    emulated, out = by.get("emulated"), {"step_time_two_ranks_over_emulated": {},
                                         "memory_larger_rank_over_one_process": {}}  # fmt: skip
    if emulated is None:
        return out
    one = emulated["param_bytes_per_rank"][0] + emulated["optimizer_bytes_per_rank"][0]
    opt_per_param = emulated["optimizer_bytes_per_rank"][0] / emulated["param_bytes_per_rank"][0]
    for fc8 in ("rank0", "split"):
        row = by.get(f"two_ranks/{fc8}")
        if row is not None:
            out["step_time_two_ranks_over_emulated"][fc8] = (
                row["step_s_median"] / emulated["step_s_median"]
            )
            mem = zip(row["param_bytes_per_rank"], row["optimizer_bytes_per_rank"], strict=True)
            larger, source = max(p + o for p, o in mem), "measured"
        elif fc8 in plan:  # not run: the plan's slices, with the optimizer's measured share
            larger, source = max(plan[fc8]) * (1 + opt_per_param), "plan"
        else:
            continue
        out["memory_larger_rank_over_one_process"][fc8] = {"ratio": larger / one, "source": source}
    return out


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table (MB are 10^6 bytes)."""
    head = (
        f"{'execution':<17} {'img/s':>9} {'step ms med [p10-p90]':>24} {'exch%':>6} "
        f"{'peak MB/rank':>14} {'param+opt MB/rank':>18} {'exch MB/step':>12} {'TFLOP/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ms = f"{r['step_s_median'] * 1e3:.1f} [{r['step_s_p10'] * 1e3:.1f}-"
        ms += f"{r['step_s_p90'] * 1e3:.1f}]"
        peak = "/".join(f"{v / 1e6:.1f}" for v in r["peak_memory_per_rank"])
        pairs = zip(r["param_bytes_per_rank"], r["optimizer_bytes_per_rank"], strict=True)
        mem = "/".join(f"{(p + o) / 1e6:.1f}" for p, o in pairs)
        exch = "/".join(f"{v / 1e6:.1f}" for v in r["bytes_per_step_per_rank"])
        share = 100 * max(r["exchange_share_per_rank"])
        tf = f"{r['achieved_tflops']:.3g}" if "achieved_tflops" in r else "-"
        if "peak_share" in r:
            tf += f" ({100 * r['peak_share']:.1f}%)"
        lines.append(f"{r['name']:<17} {r['images_per_s']:>9.1f} {ms:>24} {share:>6.1f} "
                     f"{peak:>14} {mem:>18} {exch:>12} {tf:>8}")  # fmt: skip
    return "\n".join(lines)
