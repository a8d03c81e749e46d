"""What two devices would do, from one rank's share measured on one (``rank_share``).

``rank_share`` runs tower 0 of the split net (the rank that holds fc8 with ``parallel.fc8=
rank0``) with each exchange replaced by a local copy of its size (parallel/comm/loopback.py),
so its step is one rank's compute plus those copies, and its counters give each exchange
point's calls and bytes. Two ranks, exchanging without overlap (the default path), would take

    step = measured step - time of the local copies + sum over calls of (latency + bytes / bw)

and train ``batch / step`` images/s. At the head, fc8's forward also receives what its backward
sends (the head counts what it sends). The links are assumptions, printed with the figure.
"""

from __future__ import annotations

# (name, GB/s per direction, latency per call in µs): nominal figures derated to what NCCL
# typically reaches between two GPUs; assumptions, not measurements
LINKS = (
    ("NVLink 4 (H100/H200 SXM)", 350.0, 15.0),
    ("PCIe 5.0 x16", 50.0, 25.0),
    ("PCIe 4.0 x16", 25.0, 25.0),
)


def project(row: dict, links=LINKS) -> dict:
    """Projected two-rank step and images/s for a ``rank_share`` row, per link."""
    bytes_by = {k: max(v) for k, v in row["bytes_per_step_by_point"].items()}
    if row.get("fc8") == "rank0" and "fc8" in bytes_by:
        bytes_by["fc8"] *= 2  # the forward's receive at the head, as large as its backward's send
    calls = row["calls_per_step_by_point"]
    copies = sum(row["exchange_s_per_step_by_point"].values())
    compute = max(row["step_s_median"] - copies, 0.0)
    out = {"execution": row["name"], "batch_size": row["batch_size"],
           "step_s": row["step_s_median"], "local_copies_s": copies, "compute_s": compute,
           "bytes_per_step": bytes_by,
           "calls_per_step": calls, "overlap": False, "links": []}  # fmt: skip
    for name, gbs, lat_us in links:
        link_s = sum(calls.get(k, 0) * lat_us * 1e-6 + b / (gbs * 1e9) for k, b in bytes_by.items())
        step = compute + link_s
        out["links"].append({"link": name, "gb_per_s": gbs, "latency_us": lat_us,
                             "exchange_s": link_s, "step_s": step,
                             "images_per_s": row["batch_size"] / step})  # fmt: skip
    return out


def format_projection(p: dict) -> str:
    mb = sum(p["bytes_per_step"].values()) / 1e6
    calls = sum(p["calls_per_step"].values())
    lines = [
        f"two devices, projected from {p['execution']} (one rank's share on this device): "
        f"compute {p['compute_s'] * 1e3:.2f} ms/step (measured step {p['step_s'] * 1e3:.2f} ms "
        f"less {p['local_copies_s'] * 1e3:.2f} ms of local copies), {calls:.0f} exchange calls "
        f"and {mb:.2f} MB per step, no overlap; assumed links:"
    ]
    for link in p["links"]:
        lines.append(
            f"  {link['link']:<26} {link['gb_per_s']:>5.0f} GB/s, "
            f"{link['latency_us']:>3.0f} µs/call: exchanges {link['exchange_s'] * 1e3:6.2f} ms, "
            f"step {link['step_s'] * 1e3:7.2f} ms, "
            f"{link['images_per_s']:9.0f} img/s"
        )
    return "\n".join(lines)
