"""``bench --profile N``: where a step's time goes, by operation, for each execution.

After the timed steps, :func:`profile_steps` runs ``N`` more under ``torch.profiler`` and keeps
the operations that took the most time of their own: GPU time on CUDA (kernels, by the
operator that launched them), CPU time otherwise. It is how the two-tower net's norms and copies
were found to outweigh its convolutions on one H200; the profiler slows each step, so its
milliseconds are for comparing operations, not for throughput.
"""

from __future__ import annotations

from torch.profiler import ProfilerActivity, profile

TOP = 15


def profile_steps(step, first: int, count: int, cuda: bool, sync) -> list[dict]:
    """Run ``step(i)`` for ``count`` steps from ``first`` under the profiler; the top operations
    by their own time: name, calls and milliseconds per step, share of the profiled total."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(first, first + count):
            step(i)
        sync()
    events = prof.key_averages()

    def own(e) -> float:  # microseconds
        if cuda:
            return getattr(e, "self_device_time_total", None) or e.self_cuda_time_total
        return e.self_cpu_time_total

    total = sum(own(e) for e in events) or 1.0
    top = sorted(events, key=own, reverse=True)[:TOP]
    return [{"op": e.key, "calls_per_step": e.count / count, "ms_per_step": own(e) / 1e3 / count,
             "share": own(e) / total} for e in top if own(e) > 0]  # fmt: skip


def format_profile(name: str, rows: list[dict], cuda: bool) -> str:
    clock = "GPU" if cuda else "CPU"
    lines = [f"{name}: top operations by their own {clock} time (profiled, ms per step)"]
    for r in rows:
        lines.append(f"  {r['op'][:48]:<48} {r['ms_per_step']:9.3f} ms {100 * r['share']:5.1f}% "
                     f"{r['calls_per_step']:6.1f} calls")  # fmt: skip
    return "\n".join(lines)
