"""The exchanges' counters apart from their arithmetic (parallel/comm/meter.py), on the loopback
pair (tower 0 of a pair whose peer is this process: every collective does its local work)."""

import torch

from alexnet2012.parallel import comm
from alexnet2012.parallel.comm.meter import Meter, nbytes

N, C = 2, 4


def _run_each(g, name):
    """forward and backward of each exchange on ``g``; the gathered activation."""
    x = torch.randn(N, C, 3, 3, requires_grad=True)
    full = comm.gather_towers(x, g, name and f"{name}.towers")
    full.sum().backward()
    h = torch.randn(N, C, requires_grad=True)
    comm.gather_to_head(h, g, name and f"{name}.head").sum().backward()
    comm.sum_partials(h, g, name and f"{name}.sum").sum().backward()
    return x, full


def test_exchanges_without_a_name_count_nothing():
    g = comm.loopback_pair()
    x, full = _run_each(g, None)
    assert full.shape == (N, 2 * C, 3, 3)
    torch.testing.assert_close(full, torch.cat([x, x], dim=1))  # the peer is this tower
    assert g.calls == {} and g.bytes_sent == {} and g.wait_s == {}


def test_the_meter_counts_what_the_exchanges_counted_before():
    g = comm.loopback_pair()
    g.trace = []
    _run_each(g, "e")
    f32, act, head = 4, N * C * 9, N * C  # one tower's elements
    assert g.bytes_sent == {
        "e.towers": 2 * act * f32,  # all-gather of our half, reduce-scatter of the peer's
        "e.head": head * f32,  # the head receives (0), then sends the peer its gradient slice
        "e.sum": head * f32,  # the ring all-reduce: 2 (size - 1) / size of the tensor
    }
    assert g.calls == {"e.towers": 2, "e.head": 2, "e.sum": 1}
    assert set(g.wait_s) == set(g.calls) and all(v >= 0 for v in g.wait_s.values())
    kinds = [(name, kind, b) for name, kind, b, _, _ in g.trace]
    assert kinds == [("e.towers", "all_gather", act * f32), ("e.towers", "reduce_scatter",
                     act * f32), ("e.head", "to_head", 0), ("e.head", "from_head", head * f32),
                     ("e.sum", "all_reduce", head * f32)]  # fmt: skip
    assert all(t0 <= t1 for *_, t0, t1 in g.trace)


def test_a_meter_counts_one_call_around_its_body():
    g = comm.loopback_pair()
    t = torch.ones(5)
    with Meter(g, "m")("all_gather", t, nbytes(t)):
        pass
    with Meter(g)("all_gather", t, nbytes(t)):  # no name: nothing
        pass
    assert g.calls == {"m": 1} and g.bytes_sent == {"m": 20}


def test_the_rank_without_the_head_counts_its_send_and_no_return():
    """gather_to_head with the head on the peer: this rank sends its fc7 part (counted) and
    receives its gradient slice back (not a send: 0 bytes), as the old counters said."""
    g = comm.loopback_pair()
    g.trace = []
    h = torch.randn(N, C, requires_grad=True)
    out = comm.gather_to_head(h, g, "e.head", head=1)
    assert out.shape == (N, 0)  # the stand-in that carries the gradient back
    out.sum().backward()
    assert g.bytes_sent == {"e.head": N * C * 4} and g.calls == {"e.head": 2}
    kinds = [(name, kind, b) for name, kind, b, _, _ in g.trace]
    assert kinds == [("e.head", "to_head", N * C * 4), ("e.head", "from_head", 0)]
