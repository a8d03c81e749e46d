"""The split as a module (parallel/parallelize.py): a rank's tower keeps the plain net's names
for its slices, places the exchanges the plan asks for, runs them as stand-ins in local mode,
compiles as it is, and is what DDP wraps. One process, no peer: a collective would fail."""

import pytest
import torch
from spawn import run_ranks

from alexnet2012.nets.model import AlexNet2012, Block
from alexnet2012.parallel import comm
from alexnet2012.parallel.execution import Execution
from alexnet2012.parallel.layers import (
    GatherToHead,
    GatherTowers,
    SumPartials,
    SwapCross,
    local_exchanges,
)
from alexnet2012.parallel.parallelize import TowerNet, parallelize
from alexnet2012.parallel.plan import local_slice

PLANS = [(r, fc8, ov) for r in (0, 1) for fc8 in ("rank0", "split") for ov in (False, True)]


def tiny(cross=("conv3", "fc6", "fc7", "fc8"), seed=0):
    return AlexNet2012(
        num_classes=10, widths=(8, 16, 24, 24, 16, 32, 32), input_size=67, cross=cross,
        dropout="none", seed=seed,
    )  # fmt: skip


def unconnected(rank):
    """Tower ``rank`` of a pair with no process group: any real exchange raises."""
    return comm.TowerGroup(None, rank, 2)


@pytest.mark.parametrize("rank,fc8,overlap", PLANS)
def test_tower_holds_the_plain_nets_slices_under_its_names(rank, fc8, overlap):
    full = tiny().state_dict()
    tower = parallelize(tiny(), unconnected(rank), fc8, overlap)
    assert isinstance(tower, TowerNet)
    mine = {k: local_slice(k, v, fc8, rank) for k, v in full.items()}
    expected = [k for k, v in mine.items() if v is not None]
    assert list(tower.state_dict()) == expected  # same names, same order: no exchange in them
    assert [k for k, _ in tower.named_parameters()] == expected
    for k, p in tower.named_parameters():
        assert torch.equal(p, mine[k]), k
    assert all(not list(m.parameters()) for m in tower.modules() if isinstance(m, GatherTowers))


def test_the_plan_places_the_exchanges():
    names = [n for n, _ in parallelize(tiny(), unconnected(0), "rank0").named_children()]
    assert names == ["conv1", "conv2", "conv3_gather", "conv3", "conv4", "conv5",
                     "fc6_gather", "fc6", "fc7_gather", "fc7", "fc8_gather", "fc8"]  # fmt: skip
    rank1 = parallelize(tiny(), unconnected(1), "rank0")
    assert not hasattr(rank1, "fc8") and isinstance(rank1.fc8_gather, GatherToHead)
    split = parallelize(tiny(["conv4", "fc8"]), unconnected(1), "split")
    assert [n for n, _ in split.named_children()][-3:] == ["fc7", "fc8", "fc8_sum"]
    assert isinstance(split.conv4_gather, GatherTowers) and isinstance(split.fc8_sum, SumPartials)
    swap = parallelize(tiny(), unconnected(0), "rank0", overlap=True)
    assert isinstance(swap.conv3, SwapCross) and isinstance(swap.conv3, Block)
    assert not hasattr(swap, "conv3_gather") and swap.conv3.weight.shape == (12, 16, 3, 3)


@pytest.mark.parametrize("rank,fc8,overlap", PLANS)
def test_local_mode_gives_stand_ins_and_exchanges_nothing(rank, fc8, overlap):
    g = unconnected(rank)
    tower = parallelize(tiny(), g, fc8, overlap)
    x = torch.randn(3, 3, 67, 67)
    with local_exchanges(tower):
        feats = tower.features(x)
        out = tower(x)
    assert feats.shape == (3, 16)  # fc7: this tower's half
    classes = 10 if rank == 0 or fc8 == "split" else 0  # (N, 0) off the head, as [C12]
    assert out.shape == (3, classes)
    out.float().sum().backward()  # the backward compiles too: it runs without a peer
    assert tower.conv1.weight.grad is not None
    assert g.calls == {} and g.bytes_sent == {}
    assert not any(getattr(m, "local", False) for m in tower.modules())  # restored
    with pytest.raises((RuntimeError, ValueError)):
        tower(x)  # outside local mode the exchanges do exchange: no group here


def test_stand_ins_have_the_exchanges_shapes_and_strides():
    g = comm.loopback_pair()  # tower 0 of a pair whose peer is this process (comm/loopback.py)
    x = torch.randn(2, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    for exchange in (GatherTowers(g, "a"), GatherToHead(g, "b"), SumPartials(g, "c")):
        real = exchange(x)
        with local_exchanges(exchange):
            stand_in = exchange(x)
        assert (stand_in.shape, stand_in.stride(), stand_in.dtype) == (
            real.shape, real.stride(), real.dtype), exchange  # fmt: skip
    assert g.calls == {"a": 1, "b": 1, "c": 1}  # the real ones only


def test_compiling_the_tower_as_it_is_breaks_at_the_exchanges():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    tower = parallelize(tiny(), unconnected(0), "rank0", overlap=True)
    x = torch.randn(2, 3, 67, 67)
    with local_exchanges(tower):
        eager = tower(x)
        tower.compile(backend="eager")  # nn.Module's, in place
        compiled = tower(x)
    torch.testing.assert_close(compiled, eager)
    reasons = [*counters["graph_break"], *counters["unimplemented"]]
    assert any("compiler.disable" in r for r in reasons)  # the exchanges stay out of graphs
    torch._dynamo.reset()


def test_compile_runs_makes_one_graph_per_run_between_exchanges():
    from torch._dynamo.eval_frame import OptimizedModule

    tower = parallelize(tiny(), unconnected(1), "rank0", overlap=True)
    runs = [s for s in tower._stages if type(s) is torch.nn.Sequential]
    assert [[b.name for b in r] for r in runs] == [["conv1", "conv2"], ["conv4", "conv5"]]
    tower.compile_runs()  # lazy: nothing compiles before the first call
    compiled = [s for s in tower._stages if isinstance(s, OptimizedModule)]
    assert [[b.name for b in s._orig_mod] for s in compiled] == [["conv1", "conv2"],
                                                                 ["conv4", "conv5"]]  # fmt: skip
    eager = [s for s in tower._stages if not isinstance(s, OptimizedModule)]
    assert {type(s) for s in eager} == {SwapCross, GatherToHead}  # the exchanges stay eager
    assert all(vars(type(s)).get("_kept_eager") for s in eager)  # compiled calls leave them


def _replicas(rank):
    """Two data-parallel replicas of the one-process net: DDP wraps the module itself."""
    ex = Execution(tiny(), data=comm.world())
    ex.replicate()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 3, 67, 67, generator=g), torch.randint(0, 10, (4,), generator=g)
    ex.loss(ex.forward(x[2 * rank : 2 * rank + 2]), y[2 * rank : 2 * rank + 2]).backward()
    return {
        "wrapped": ex.replicated.module is ex.model,
        "grads": {k: p.grad for k, p in ex.model.named_parameters()},
    }


def test_ddp_wraps_the_module_with_no_shim(tmp_path):
    per_rank = run_ranks(_replicas, 2, tmp_path)
    m = tiny()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 3, 67, 67, generator=g), torch.randint(0, 10, (4,), generator=g)
    torch.nn.functional.cross_entropy(m(x), y).backward()  # the whole batch in one process
    for got in per_rank:
        assert got["wrapped"]
        for k, p in m.named_parameters():
            torch.testing.assert_close(torch.from_numpy(got["grads"][k]), p.grad, msg=k)


def test_building_a_split_net_does_not_load_the_compiler():
    """torch's compiler (~150 MB of host memory, seconds to import) loads only when something
    compiles: the exchanges are kept out of graphs when a tower compiles, not at import."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "import torch\n"
        "from test_parallelize import tiny, unconnected\n"
        "from alexnet2012.parallel.execution import Execution\n"
        "from alexnet2012.training import loop\n"
        "for overlap in (False, True):\n"
        "    ex = Execution(tiny(), unconnected(0), 'rank0', overlap)\n"
        "    assert len(list(ex.model.children())) > 8\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", out
