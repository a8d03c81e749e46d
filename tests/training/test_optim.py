"""Parameter groups, the paper's SGD rule, name-keyed optimiser state and the plateau schedule."""

import pytest
import torch
from torch import nn

from alexnet2012.config import TrainConfig
from alexnet2012.training.optim import (
    PaperSGD,
    build_optimizer,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    param_groups,
)
from alexnet2012.training.schedule import ConstantSchedule, PlateauSchedule, build_schedule


def small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def batch(i: int):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)


def train(net, opt, steps, start=0):
    for i in range(start, start + steps):
        x, y = batch(i)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def test_param_groups_split_weights_and_biases():
    cfg = TrainConfig(lr=0.01, weight_decay=5e-4, bias_lr_mult=2.0, bias_decay=False)
    weights, biases = param_groups(small_net().named_parameters(), cfg)
    assert weights["name"] == "weights" and biases["name"] == "biases"
    assert weights["param_names"] == ["0.weight", "2.weight"]
    assert biases["param_names"] == ["0.bias", "2.bias"]
    assert weights["lr"] == pytest.approx(0.01) and weights["weight_decay"] == 5e-4
    assert biases["lr"] == pytest.approx(0.02) and biases["weight_decay"] == 0.0
    assert weights["lr_mult"] == 1.0 and biases["lr_mult"] == 2.0
    assert all(p.dim() == 1 for p in biases["params"])
    cfg.bias_decay = True
    assert param_groups(small_net().named_parameters(), cfg)[1]["weight_decay"] == 5e-4


def test_build_optimizer_kinds():
    net = small_net()
    assert type(build_optimizer(net.named_parameters(), TrainConfig())) is torch.optim.SGD
    opt = build_optimizer(net.named_parameters(), TrainConfig(update="paper"))
    assert isinstance(opt, PaperSGD)
    # [D2L]: plain SGD, no momentum, no weight decay
    plain = build_optimizer(net.named_parameters(), TrainConfig(momentum=0.0, weight_decay=0.0))
    w0 = net[0].weight.detach().clone()
    train(net, plain, 1)
    assert not plain.state and not torch.equal(w0, net[0].weight)


def _pair(**kw):
    cfg = TrainConfig(lr=0.05, momentum=0.9, weight_decay=1e-2, **kw)
    a, b = small_net(), small_net()
    return (
        a,
        b,
        build_optimizer(a.named_parameters(), cfg),
        PaperSGD(param_groups(b.named_parameters(), cfg), lr=cfg.lr, momentum=cfg.momentum),
    )


def test_paper_sgd_equals_torch_sgd_at_constant_lr():
    a, b, torch_opt, paper_opt = _pair()
    for i in range(6):
        train(a, torch_opt, 1, start=i)
        train(b, paper_opt, 1, start=i)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0)


def _step_recording(net, opt, i):
    """One step on batch ``i``; returns layer 0's weight and gradient from before the step."""
    x, y = batch(i)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    w, g = net[0].weight.detach().clone(), net[0].weight.grad.clone()
    opt.step()
    return w, g


def test_paper_sgd_keeps_old_lr_in_velocity_after_a_drop():
    a, b, torch_opt, paper_opt = _pair()
    train(a, torch_opt, 4)
    train(b, paper_opt, 4)
    lr0, lr1, m, wd = 0.05, 0.005, 0.9, 1e-2
    buf_torch = torch_opt.state[a[0].weight]["momentum_buffer"].clone()  # gradient units
    buf_paper = paper_opt.state[b[0].weight]["momentum_buffer"].clone()  # = -v, lr included
    torch.testing.assert_close(buf_paper, lr0 * buf_torch, atol=1e-7, rtol=1e-5)
    for opt in (torch_opt, paper_opt):
        for group in opt.param_groups:
            group["lr"] = lr1 * group["lr_mult"]
    wa, ga = _step_recording(a, torch_opt, 4)
    wb, gb = _step_recording(b, paper_opt, 4)
    v = m * -buf_paper - wd * lr1 * wb - lr1 * gb  # [P] §5: lr inside the velocity
    torch.testing.assert_close(b[0].weight.detach(), wb + v, atol=1e-7, rtol=0)
    expected = wa - lr1 * (m * buf_torch + ga + wd * wa)  # torch: lr multiplies the whole buffer
    torch.testing.assert_close(a[0].weight.detach(), expected, atol=1e-7, rtol=0)
    # the difference is the old velocity's scale: m * (lr0 - lr1) * buf
    diff = a[0].weight.detach() - b[0].weight.detach()
    torch.testing.assert_close(diff, m * (lr0 - lr1) * buf_torch, atol=1e-6, rtol=0)
    assert diff.abs().max() > 1e-4


@pytest.mark.parametrize("update", ["pytorch", "paper"])
def test_state_by_name_resumes_exactly(update):
    cfg = TrainConfig(lr=0.05, momentum=0.9, weight_decay=1e-2, update=update)
    ref = small_net()
    ref_opt = build_optimizer(ref.named_parameters(), cfg)
    train(ref, ref_opt, 6)

    first = small_net()
    opt = build_optimizer(first.named_parameters(), cfg)
    train(first, opt, 3)
    state = optimizer_state_by_name(opt)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(set(s) == {"momentum_buffer"} for s in state.values())
    weights = {k: v.clone() for k, v in first.state_dict().items()}

    resumed = small_net(seed=1)
    resumed.load_state_dict(weights)
    # a different parameter order: the state is matched by name, not by index
    new_opt = build_optimizer(reversed(list(resumed.named_parameters())), cfg)
    load_optimizer_state_by_name(new_opt, state)
    train(resumed, new_opt, 3, start=3)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(resumed.get_parameter(name), p, atol=0, rtol=0)


def test_missing_state_means_no_momentum():
    cfg = TrainConfig(lr=0.05)
    net = small_net()
    opt = build_optimizer(net.named_parameters(), cfg)
    train(net, opt, 2)
    state = optimizer_state_by_name(opt)
    del state["0.weight"]
    state["other_shard.weight"] = {"momentum_buffer": torch.zeros(7)}  # ignored
    load_optimizer_state_by_name(opt, state)
    assert net[0].weight not in opt.state and net[2].weight in opt.state
    with pytest.raises(ValueError, match="2.bias"):
        load_optimizer_state_by_name(opt, {"2.bias": {"momentum_buffer": torch.zeros(9)}})


def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def test_plateau_schedule_drops_when_error_stops_improving():
    cfg = TrainConfig(lr=0.01, bias_lr_mult=2.0, plateau_patience=0, max_drops=2)
    opt = build_optimizer(small_net().named_parameters(), cfg)
    sched = build_schedule(opt, cfg)
    assert isinstance(sched, PlateauSchedule)
    errors = [0.9, 0.8, 0.8, 0.7, 0.75, 0.6, 0.65, 0.7]
    dropped = [False, False, True, False, True, False, False, False]  # max_drops=2
    weight_lr = [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4]
    for err, want_drop, lr in zip(errors, dropped, weight_lr, strict=True):
        assert sched.step(err) is want_drop
        assert lrs(opt) == pytest.approx([lr, 2 * lr])


def test_plateau_patience_and_state_round_trip():
    cfg = TrainConfig(lr=0.1, bias_lr_mult=1.0, plateau_patience=1, max_drops=3)
    opt = build_optimizer(small_net().named_parameters(), cfg)
    sched = build_schedule(opt, cfg)
    # 0.6: one bad epoch (= patience) keeps lr; 0.55: second bad epoch drops
    for err, lr in [(0.5, 0.1), (0.6, 0.1), (0.55, 0.01), (0.4, 0.01), (0.45, 0.01)]:
        sched.step(err)
        assert lrs(opt) == pytest.approx([lr, lr])
    saved = sched.state_dict()

    opt2 = build_optimizer(small_net().named_parameters(), cfg)
    sched2 = build_schedule(opt2, cfg)
    sched2.load_state_dict(saved)
    assert lrs(opt2) == pytest.approx([0.01, 0.01])
    for s, o in ((sched, opt), (sched2, opt2)):
        assert s.step(0.4) is True  # equal to the best is not an improvement
        assert lrs(o) == pytest.approx([1e-3, 1e-3])


def test_constant_schedule_never_drops():
    cfg = TrainConfig(lr=0.01, bias_lr_mult=2.0, schedule="constant")
    opt = build_optimizer(small_net().named_parameters(), cfg)
    sched = build_schedule(opt, cfg)
    assert isinstance(sched, ConstantSchedule) and not isinstance(sched, PlateauSchedule)
    for err in [0.5, 0.6, 0.7, 0.8]:
        assert sched.step(err) is False
    sched.load_state_dict(sched.state_dict())
    assert lrs(opt) == pytest.approx([0.01, 0.02])
