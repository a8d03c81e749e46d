"""Import published AlexNet weights: BVLC Caffe's bvlc_alexnet, or torchvision's alexnet.

    alexnet2012 convert bvlc_alexnet.caffemodel runs/caffe --from caffe
    alexnet2012 convert bvlc_alexnet.npz runs/caffe --from caffe --evaluate --set data.root=/in256
    alexnet2012 convert alexnet-owt-7be5be79.pth tv.pth --from torchvision

``--from caffe``: a numpy ``.npz``/``.npy`` dict or a torch state dict with Caffe's layer names
(``conv1``..``conv5``, ``fc6``..``fc8``; blobs as ``conv1.weight``/``conv1.bias``,
``conv1/weights``, ``conv1.0``/``conv1.1`` or nested ``{"conv1": {"weights", "biases"}}``). Caffe's
blobs are (out, in/group, k, k), which is this project's canonical grouped layout, so only conv1
changes: Caffe feeds BGR images, so its input-channel axis is flipped to RGB. The result loads
into ``AlexNet2012(preset="caffe")`` (ref §5: 227 input, LRN across both towers, k=1). A
``.caffemodel`` (current, V1 or V0 layer format) is read with the ``protobuf`` package, no pycaffe.
Nothing read runs code: torch files go through the weights-only unpickler (tensors and plain
containers), and a ``.npy`` holding a pickled dict (the old Caffe-to-NumPy ports) is read only
with ``--allow-pickle``, for a file you trust.

``--from torchvision``: torchvision's state dict (``features.0.weight`` ...), checked against
:func:`alexnet2012.nets.baselines.torchvision_alexnet` (ref §5 [TV]).

DST ending in ``.pt``/``.pth``: a plain state dict. Any other DST: a run folder (``config.yaml``
and ``checkpoints/ckpt-00000000.pt``) that ``kernels``, ``neighbours`` and ``--evaluate``
(centre crop and 10 views, ref §3) read; ``--set key=value ...`` goes into its config,
e.g. ``data.root`` of a store made by ``alexnet2012 prepare`` (class folders in the same
sorted-synset order as the weights). Caffe's weights expect mean-subtracted 0-255 pixels, as
``data.pixels=c12`` gives (Caffe warped images to 256x256; ``prepare`` centre-crops). In a
torchvision run folder, ImageNet's per-channel mean/std is folded into conv1 so that the
pipeline's [0, 1] pixels (``data.pixels=unit``) can be fed; exact except at conv1's 2-pixel
zero-padded border, where torchvision pads standardised zeros.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np
import torch
import yaml

from alexnet2012.config import LAYERS, flatten, load_config, to_dict
from alexnet2012.data import build_data
from alexnet2012.nets.baselines import TV_WIDTHS, torchvision_alexnet
from alexnet2012.nets.build import build_model, input_size
from alexnet2012.nets.model import FULL_WIDTHS, AlexNet2012
from alexnet2012.parallel.execution import Execution
from alexnet2012.training import checkpoint, weights_only
from alexnet2012.training import evaluate as evaluation
from alexnet2012.weights.caffe import ConvertError, read_caffemodel

log = logging.getLogger(__name__)

TV_NAMES = dict(zip(LAYERS, ("features.0", "features.3", "features.6", "features.8",
                             "features.10", "classifier.1", "classifier.4", "classifier.6"),
                    strict=True))  # fmt: skip
KERNELS = {"conv1": 11, "conv2": 5, "conv3": 3, "conv4": 3, "conv5": 3}
TV_MEAN, TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet transform
_BLOB = re.compile(r"^(?:.*[./])?(conv[1-5]|fc[6-8])[./_:](weights?|w|0|bias(?:es)?|b|1)$")


def _flat(d: dict) -> dict[str, torch.Tensor]:
    """Nested dicts of arrays -> ``{"conv1.weights": float32 tensor, ...}``."""
    return {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in flatten(d).items()}


def read_weights(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Flat name -> float32 tensor, from a ``.caffemodel``, ``.npz``, ``.npy`` or torch file.

    Torch files go through the weights-only unpickler; NumPy files are read without pickles
    unless ``allow_pickle`` (``--allow-pickle``: old Caffe-to-NumPy ports pickle a dict, and
    unpickling it runs whatever code the file holds)."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if path.suffix == ".caffemodel":
        return read_caffemodel(path)
    try:
        if path.suffix in (".npz", ".npy"):
            data = _read_numpy(path, allow_pickle)
        else:
            data = weights_only.load(path)
            if isinstance(data, dict) and data.get("format") == checkpoint.FORMAT:
                raise ConvertError(
                    f"{path}: already an alexnet2012 checkpoint; put it in a run folder's "
                    "checkpoints/ and resume or evaluate that folder instead"
                )
            data = data.get("state_dict", data) if isinstance(data, dict) else None
    except (ConvertError, weights_only.UnsafeFileError):
        raise
    except Exception as e:
        raise ConvertError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a dict of named weights")
    return _flat(data)


def _read_numpy(path: Path, allow_pickle: bool):
    """A ``.npz`` archive or ``.npy`` array of weights as a dict (None if it holds no dict)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=allow_pickle) as z:
                return {k: z[k] for k in z.files}
        data = np.load(path, allow_pickle=allow_pickle)
    except ValueError as e:
        if allow_pickle or "allow_pickle" not in str(e):
            raise
        raise ConvertError(
            f"{path}: holds pickled Python objects, which could run code when loaded; pass "
            "--allow-pickle only if you trust the file, or save its arrays with numpy.savez"
        ) from None
    return data.item() if data.dtype == object and data.shape == () else None


def _check(state: dict, expected: dict, src: str) -> None:
    """Every expected key present with its shape; otherwise a ConvertError naming the layer."""
    for key, shape in expected.items():
        if key not in state:
            raise ConvertError(f"{src}: layer {key.rsplit('.', 1)[0]} has no {key}")
        got = tuple(state[key].shape)
        if got != tuple(shape):
            hint = ""
            if len(got) == 4 and got[:2] == tuple(shape[2:]):
                hint = "; it looks like TensorFlow layout (k, k, in, out): give Caffe's blobs"
            raise ConvertError(f"{src}: {key} has shape {got}, expected {tuple(shape)}{hint}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ConvertError(f"{src}: unexpected weights {', '.join(extra[:4])}")


def _sizes(state: dict, names: dict, src: str) -> tuple[tuple, int, int]:
    """(widths of conv1..fc7, classes, input channels) read off the weights' shapes."""
    for layer, name in names.items():
        w = state.get(f"{name}.weight")
        want = 4 if layer in KERNELS else 2
        if w is None or w.dim() != want:
            shape = None if w is None else tuple(w.shape)
            raise ConvertError(f"{src}: layer {layer} ({name}.weight) needs {want}-d, got {shape}")
        if layer in KERNELS and tuple(w.shape[2:]) != (KERNELS[layer],) * 2:
            raise ConvertError(
                f"{src}: {name}.weight has shape {tuple(w.shape)}, expected {KERNELS[layer]}x"
                f"{KERNELS[layer]} kernels as (out, in/group, k, k)"
            )
    outs = [state[f"{names[layer]}.weight"].shape[0] for layer in LAYERS]
    return tuple(outs[:7]), outs[7], state[f"{names['conv1']}.weight"].shape[1]


def from_caffe(flat: dict, src: str = "weights") -> tuple[dict, dict]:
    """Caffe-named blobs -> (canonical state dict for ``AlexNet2012(preset="caffe")``, sizes)."""
    state = {}
    for key, value in flat.items():
        m = _BLOB.match(key)
        if not m:
            raise ConvertError(f"{src}: {key!r} is not a Caffe AlexNet blob (conv1..fc8)")
        name = f"{m.group(1)}.{'bias' if m.group(2)[0] in 'b1' else 'weight'}"
        if name in state:
            raise ConvertError(f"{src}: two blobs map to {name}")
        if name.endswith("bias"):
            value = value.reshape(-1)  # V1 blobs are (1, 1, 1, out)
        elif m.group(1).startswith("fc") and value.dim() == 4 and value.shape[:2] == (1, 1):
            value = value[0, 0]  # V1 fc blobs are (1, 1, out, in)
        state[name] = value
    widths, classes, channels = _sizes(state, {layer: layer for layer in LAYERS}, src)
    with torch.device("meta"):
        ref = AlexNet2012(classes, channels, preset="caffe", widths=widths)
    _check(state, {k: v.shape for k, v in ref.state_dict().items()}, src)
    if channels == 3:  # Caffe feeds BGR; the data pipeline here gives RGB
        state["conv1.weight"] = state["conv1.weight"].flip(1)
        log.info("conv1: input channels flipped from Caffe's BGR to RGB")
    return state, {"widths": widths, "classes": classes, "in_channels": channels}


def from_torchvision(flat: dict, src: str = "weights") -> tuple[dict, dict]:
    """torchvision's alexnet state dict -> (the same, checked against ``torchvision_alexnet``)."""
    state = {k.removeprefix("module."): v for k, v in flat.items()}
    widths, classes, channels = _sizes(state, TV_NAMES, src)
    with torch.device("meta"):
        ref = torchvision_alexnet(classes, channels, widths)
    _check(state, {k: v.shape for k, v in ref.state_dict().items()}, src)
    return state, {"widths": widths, "classes": classes, "in_channels": channels}


def fold_normalisation(state: dict) -> dict:
    """torchvision conv1 for [0, 1] pixels: W' = W / std_c, b' = b - sum W * mean_c / std_c."""
    w, b = state["features.0.weight"], state["features.0.bias"]
    mean, std = (torch.tensor(v)[None, :, None, None] for v in (TV_MEAN, TV_STD))
    folded = {"features.0.weight": w / std, "features.0.bias": b - (w * mean / std).sum((1, 2, 3))}
    return {**state, **folded}


def write_run(dst: str | Path, state: dict, kind: str, sizes: dict, overrides=()) -> Path:
    """A run folder holding the converted weights as step 0 and a config to evaluate them."""
    caffe = kind == "caffe"
    base = [f"model.name={'alexnet2012' if caffe else 'torchvision'}",
            f"model.preset={'caffe' if caffe else 'original'}", "data.name=imagefolder",
            "data.ten_view=true", f"data.pixels={'c12' if caffe else 'unit'}",
            "wandb.mode=disabled", f"run.dir={dst}", f"run.name=converted-{kind}"]  # fmt: skip
    if caffe:  # Caffe's dropout scales at training time and is the identity at test
        base.append("model.dropout=inverted")
    if sizes["widths"] != (FULL_WIDTHS if caffe else TV_WIDTHS):
        base.append(f"model.widths={list(sizes['widths'])}")
    cfg = load_config(None, [*base, *overrides])
    if not caffe and sizes["in_channels"] == 3:
        state = fold_normalisation(state)
        log.info("conv1: torchvision's ImageNet mean/std folded in, for [0, 1] pixels")
    payload = {"config": to_dict(cfg), "model": state, "step": 0, "converted_from": kind}
    path = checkpoint.save(dst, payload, step=0)
    (Path(dst) / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def evaluate(run_dir: str | Path, overrides=(), ten_view=True, device: str = "auto") -> dict:
    """Test error of a run folder's latest weights: centre crop, and 10 views (ref §3)."""
    payload, _ = checkpoint.load_latest_or(run_dir, ConvertError)
    cfg = load_config(Path(run_dir) / "config.yaml", list(overrides))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    data = build_data(cfg, input_size(cfg), device)
    ex = Execution(build_model(cfg, data.num_classes, data.in_channels))
    ex.load_canonical(payload["model"])
    ex.model.to(device)
    out = {}
    for views in (False, True) if ten_view else (False,):
        out.update(evaluation.evaluate(ex, data, cfg, views, "test"))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help=".caffemodel (needs protobuf), .npz, .npy or .pt/.pth")
    p.add_argument("dst", help="a .pt/.pth file (state dict) or a run folder")
    p.add_argument("--from", dest="kind", choices=("caffe", "torchvision"), required=True)
    p.add_argument("--evaluate", action="store_true", help="test the run folder (10 views)")
    p.add_argument("--force", action="store_true", help="replace an existing DST .pt/.pth file")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a .npy/.npz that holds pickled Python objects (old Caffe-to-NumPy "
                   "ports pickle a dict); unpickling runs any code the file holds: only for a "
                   "file you trust. Torch files are always read weights-only")  # fmt: skip
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for the run folder, e.g. data.root=...")  # fmt: skip


def _refuse_to_overwrite(dst: Path, force: bool) -> None:
    """A weights file is replaced only with --force; a run folder never."""
    if dst.suffix in (".pt", ".pth"):
        if dst.exists() and not force:
            raise ConvertError(f"{dst} exists; pass --force to replace it, or choose another")
        return
    if (dst / "config.yaml").exists():
        raise ConvertError(
            f"{dst} already holds a run (config.yaml); choose a new run folder for the "
            "converted weights"
        )
    checkpoint.refuse_to_overwrite(dst)


def main(args) -> int:
    _refuse_to_overwrite(Path(args.dst), args.force)  # before any work
    flat = read_weights(args.src, args.allow_pickle)
    convert = from_caffe if args.kind == "caffe" else from_torchvision
    state, sizes = convert(flat, str(args.src))
    n = sum(v.numel() for v in state.values())
    print(f"{args.src}: {args.kind} AlexNet, widths {sizes['widths']}, {sizes['classes']} classes, "
          f"{sizes['in_channels']} input channels, {n:,} parameters")  # fmt: skip
    if args.kind == "caffe" and sizes["in_channels"] == 3:
        print("conv1: input channels flipped from Caffe's BGR order to RGB")
    if Path(args.dst).suffix in (".pt", ".pth"):
        if args.evaluate or args.overrides:
            raise ConvertError("--evaluate and --set need a run folder DST, not a .pt file")
        torch.save(state, args.dst)
        print(f"wrote {args.dst} (state dict)")
        return 0
    path = write_run(args.dst, state, args.kind, sizes, args.overrides)
    print(f"wrote {path}")
    if args.evaluate:
        for k, v in evaluate(args.dst).items():
            print(f"{k}: {v:.4f}")
    return 0
