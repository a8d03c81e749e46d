"""Where a two-rank step's exchange time goes (``bench --exchanges``): per call, waiting for
the other rank against the call's own cost, and that cost against the same call alone.

Both ranks run on one host, so their host clocks (``time.perf_counter``: CLOCK_MONOTONIC) are
one clock. For each exchange call of a step, the rank that arrives first waits until the other
arrives (``wait``); from then on the call costs both ranks its latency and transfer (``call``:
exit minus the later entry). ``alone`` is the same call timed with both ranks starting together
(:mod:`alexnet2012.bench.probe`), ``latency`` the same at 4 bytes. A rank's compute is
its step time less its time in exchanges.
"""

from __future__ import annotations

import numpy as np

KIND_NAMES = {
    "all_gather": "all-gather",
    "reduce_scatter": "reduce-scatter",
    "to_head": "send to rank 0",
    "from_head": "send from rank 0",
    "all_reduce": "all-reduce",
}


def breakdown(ranks: list[dict]) -> dict:
    """Per call (medians over the timed steps) and per step (medians and means), in ms."""
    calls = []
    wait_steps = np.zeros((len(ranks), len(ranks[0]["step_s"])))
    call_steps = np.zeros_like(wait_steps)
    for k, c in enumerate(ranks[0]["exchange_calls"]):
        enter = np.array([r["exchange_calls"][k]["enter"] for r in ranks])  # (ranks, steps)
        leave = np.array([r["exchange_calls"][k]["exit"] for r in ranks])
        last = enter.max(0)
        wait, own = last - enter, leave - last
        wait_steps += wait
        call_steps += own
        calls.append({
            "name": c["name"], "kind": c["kind"], "bytes": c["bytes"],
            "wait_ms": (1e3 * np.median(wait, 1)).tolist(),
            "call_ms": (1e3 * np.median(own, 1)).tolist(),
            "call_mean_ms": (1e3 * own.mean(1)).tolist(),
            "alone_ms": _ms(c["alone_s"]), "latency_ms": _ms(c["latency_s"]),
        })  # fmt: skip
    steps = np.array([r["step_s"] for r in ranks])
    parts = {"step": steps, "compute": steps - wait_steps - call_steps}
    parts.update(wait=wait_steps, call=call_steps)
    out = {"calls": calls}
    out["per_step_ms"] = {k: (1e3 * np.median(v, 1)).tolist() for k, v in parts.items()}
    out["per_step_mean_ms"] = {k: (1e3 * v.mean(1)).tolist() for k, v in parts.items()}
    out["alone_per_step_ms"] = {  # the calls alone, summed over a step
        "median": sum(c["alone_ms"]["median"] for c in calls),
        "mean": sum(c["alone_ms"]["mean"] for c in calls),
        "latency_median": sum(c["latency_ms"]["median"] for c in calls),
        "latency_mean": sum(c["latency_ms"]["mean"] for c in calls),
    }
    return out


def _ms(stats: dict) -> dict:
    """Seconds -> ms in a probe's figures (the share over 1 ms stays a share)."""
    return {k: v if k == "over_1ms" else 1e3 * v for k, v in stats.items()}


def _pair(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def format_breakdown(b: dict) -> str:
    """The breakdown as text: one line per call, then the step's totals (rank 0 / rank 1)."""
    head = (
        f"{'exchange':<8} {'call':<17} {'KB':>6} {'wait ms':>12} {'in call ms':>12} "
        f"{'mean ms':>12} {'alone ms':>14} {'4 B ms':>7} {'>1ms':>5}"
    )
    lines = [head, "-" * len(head)]
    for c in b["calls"]:
        alone, lat = c["alone_ms"], c["latency_ms"]
        a = f"{alone['median']:.2f} ({alone['mean']:.2f})"
        lines.append(
            f"{c['name']:<8} {KIND_NAMES[c['kind']]:<17} "
            f"{c['bytes'] / 1e3:>6.1f} {_pair(c['wait_ms']):>12} {_pair(c['call_ms']):>12} "
            f"{_pair(c['call_mean_ms']):>12} {a:>14} {lat['median']:>7.2f} "
            f"{100 * lat['over_1ms']:>4.0f}%"
        )
    for label, key in (("median", "per_step_ms"), ("mean", "per_step_mean_ms")):
        s = b[key]
        lines.append(
            f"per step ({label}, rank 0 / rank 1): step {_pair(s['step'])} ms = compute "
            f"{_pair(s['compute'])} + waiting {_pair(s['wait'])} + in calls {_pair(s['call'])}"
        )
    a = b["alone_per_step_ms"]
    lines.append(
        f"the same calls alone, per step: median {a['median']:.2f} ms, mean "
        f"{a['mean']:.2f} ms; at 4 bytes (latency) median {a['latency_median']:.2f} ms, "
        f"mean {a['latency_mean']:.2f} ms"
    )
    return "\n".join(lines)
