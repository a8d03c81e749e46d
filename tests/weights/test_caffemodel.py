"""Reading a real ``.caffemodel`` without pycaffe (alexnet2012/convert.py).

The files are written with a schema built here, independently of the reader's, from Caffe's
caffe.proto (github.com/BVLC/caffe, src/caffe/proto/caffe.proto) with more of its fields than the
reader declares (type, bottom, top, diff, input, input_dim), which the reader must skip. The
converted net's logits are checked against a functional Caffe forward pass of the numpy blobs.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("google.protobuf", reason="reading a .caffemodel needs protobuf")
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format  # noqa: E402

from alexnet2012.config import load_config  # noqa: E402
from alexnet2012.nets.build import build_model  # noqa: E402
from alexnet2012.nets.model import AlexNet2012  # noqa: E402
from alexnet2012.training import checkpoint  # noqa: E402
from alexnet2012.weights.caffe import ConvertError, caffe_net_parameter  # noqa: E402
from alexnet2012.weights.convert import from_caffe, read_weights, write_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WIDTHS, CLASSES = (8, 16, 16, 16, 8, 32, 32), 5

# caffe.proto, as a FileDescriptorProto in text form; field numbers as there
CAFFE_PROTO = """
name: "caffe_test.proto" package: "caffe" syntax: "proto2"
message_type { name: "BlobShape"
  field { name: "dim" number: 1 label: LABEL_REPEATED type: TYPE_INT64 options { packed: true } }
}
message_type { name: "BlobProto"
  field { name: "shape" number: 7 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".caffe.BlobShape" }
  field { name: "data" number: 5 label: LABEL_REPEATED type: TYPE_FLOAT options { packed: true } }
  field { name: "diff" number: 6 label: LABEL_REPEATED type: TYPE_FLOAT options { packed: true } }
  field { name: "double_data" number: 8 label: LABEL_REPEATED type: TYPE_DOUBLE
          options { packed: true } }
  field { name: "num" number: 1 label: LABEL_OPTIONAL type: TYPE_INT32 }
  field { name: "channels" number: 2 label: LABEL_OPTIONAL type: TYPE_INT32 }
  field { name: "height" number: 3 label: LABEL_OPTIONAL type: TYPE_INT32 }
  field { name: "width" number: 4 label: LABEL_OPTIONAL type: TYPE_INT32 }
}
message_type { name: "LayerParameter"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "type" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "bottom" number: 3 label: LABEL_REPEATED type: TYPE_STRING }
  field { name: "top" number: 4 label: LABEL_REPEATED type: TYPE_STRING }
  field { name: "blobs" number: 7 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".caffe.BlobProto" }
}
message_type { name: "V0LayerParameter"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "type" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "blobs" number: 50 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".caffe.BlobProto" }
}
message_type { name: "V1LayerParameter"
  field { name: "layer" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".caffe.V0LayerParameter" }
  field { name: "bottom" number: 2 label: LABEL_REPEATED type: TYPE_STRING }
  field { name: "top" number: 3 label: LABEL_REPEATED type: TYPE_STRING }
  field { name: "name" number: 4 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "type" number: 5 label: LABEL_OPTIONAL type: TYPE_ENUM
          type_name: ".caffe.V1LayerParameter.LayerType" }
  field { name: "blobs" number: 6 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".caffe.BlobProto" }
  enum_type { name: "LayerType"
    value { name: "NONE" number: 0 } value { name: "CONVOLUTION" number: 4 }
    value { name: "DATA" number: 5 } value { name: "DROPOUT" number: 6 }
    value { name: "INNER_PRODUCT" number: 14 } value { name: "LRN" number: 15 }
    value { name: "POOLING" number: 17 } value { name: "RELU" number: 18 }
    value { name: "SOFTMAX_LOSS" number: 21 }
  }
}
message_type { name: "NetParameter"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "layers" number: 2 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".caffe.V1LayerParameter" }
  field { name: "input" number: 3 label: LABEL_REPEATED type: TYPE_STRING }
  field { name: "input_dim" number: 4 label: LABEL_REPEATED type: TYPE_INT32 }
  field { name: "layer" number: 100 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".caffe.LayerParameter" }
}
"""
# bvlc_alexnet's train_val.prototxt: layer, type, V1 type; conv (stride, pad, group)
LAYERS = [("data", "Data", "DATA"), ("conv1", "Convolution", "CONVOLUTION"),
          ("relu1", "ReLU", "RELU"), ("norm1", "LRN", "LRN"), ("pool1", "Pooling", "POOLING"),
          ("conv2", "Convolution", "CONVOLUTION"), ("relu2", "ReLU", "RELU"),
          ("norm2", "LRN", "LRN"), ("pool2", "Pooling", "POOLING"),
          ("conv3", "Convolution", "CONVOLUTION"), ("relu3", "ReLU", "RELU"),
          ("conv4", "Convolution", "CONVOLUTION"), ("relu4", "ReLU", "RELU"),
          ("conv5", "Convolution", "CONVOLUTION"), ("relu5", "ReLU", "RELU"),
          ("pool5", "Pooling", "POOLING"), ("fc6", "InnerProduct", "INNER_PRODUCT"),
          ("relu6", "ReLU", "RELU"), ("drop6", "Dropout", "DROPOUT"),
          ("fc7", "InnerProduct", "INNER_PRODUCT"), ("relu7", "ReLU", "RELU"),
          ("drop7", "Dropout", "DROPOUT"), ("fc8", "InnerProduct", "INNER_PRODUCT"),
          ("loss", "SoftmaxLoss", "SOFTMAX_LOSS")]  # fmt: skip
CONV = {"conv1": (4, 0, 1), "conv2": (1, 2, 2), "conv3": (1, 1, 1), "conv4": (1, 1, 2),
        "conv5": (1, 1, 2)}  # fmt: skip


def net_parameter():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(CAFFE_PROTO, descriptor_pb2.FileDescriptorProto()))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))


def caffe_weights(seed=0) -> dict:
    """bvlc_alexnet's blob shapes at WIDTHS: conv (out, in/group, k, k), fc (out, in)."""
    c, rng, out = (3, *WIDTHS, CLASSES), np.random.default_rng(seed), {}
    shapes = {"fc6": (c[6], c[5] * 6 * 6), "fc7": (c[7], c[6]), "fc8": (c[8], c[7])}
    for i, (name, k) in enumerate(zip(CONV, (11, 5, 3, 3, 3), strict=True)):
        shapes[name] = (c[i + 1], c[i] // CONV[name][2], k, k)
    for name, shape in shapes.items():
        w = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
        out[name] = (w.astype(np.float32), (0.1 * rng.standard_normal(shape[0])).astype(np.float32))
    return out


def fill(blob, array, form):
    """One blob as ``shape`` + data, or the legacy 4-d (num, channels, height, width)."""
    if form == "legacy":
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
    else:
        blob.shape.dim.extend(array.shape)
    if form == "double":
        blob.double_data.extend(array.astype(np.float64).ravel().tolist())
    else:
        blob.data.extend(array.ravel().tolist())


def write_caffemodel(path: Path, weights: dict, fmt: str) -> None:
    """``layer``: current format, mostly ``shape`` (fc8 legacy, a double_data bias, a diff);
    ``layers``/``v0``: V1 and V0 formats, whose blobs are all legacy 4-d, fc (1, 1, out, in)."""
    net = net_parameter()(name="AlexNet", input=["data"], input_dim=[10, 3, 227, 227])
    for name, kind, v1_kind in LAYERS:
        if fmt == "layer":
            layer = net.layer.add(name=name, type=kind, bottom=["x"], top=[name])
        elif fmt == "layers":
            layer = net.layers.add(name=name, type=v1_kind, bottom=["x"], top=[name])
        else:
            layer = net.layers.add(bottom=["x"], top=[name]).layer
            layer.name, layer.type = name, kind.lower()
        for i, array in enumerate(weights.get(name, ())):
            form = "shape" if fmt == "layer" else "legacy"
            if fmt == "layer" and (name == "fc8" or (name, i) == ("conv2", 1)):
                form = "legacy"
            elif fmt == "layer" and (name, i) == ("conv3", 1):
                form = "double"
            fill(layer.blobs.add(), array, form)
            if (name, i) == ("fc7", 0):
                layer.blobs[0].diff.extend([7.0] * array.size)  # a gradient, to be ignored
    path.write_bytes(net.SerializeToString())


def caffe_forward(weights: dict, x: torch.Tensor) -> torch.Tensor:
    """Caffe's bvlc_alexnet on BGR input x, from its blobs (test phase: dropout is identity)."""
    w = {k: [torch.from_numpy(a).double() for a in v] for k, v in weights.items()}

    def conv(x, name):
        stride, pad, group = CONV[name]
        return F.relu(F.conv2d(x, *w[name], stride=stride, padding=pad, groups=group))

    def norm_pool(x, norm=True):
        x = F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0) if norm else x
        return F.max_pool2d(x, 3, 2, ceil_mode=True)

    x = norm_pool(conv(norm_pool(conv(x, "conv1")), "conv2"))
    x = norm_pool(conv(conv(conv(x, "conv3"), "conv4"), "conv5"), norm=False).flatten(1)
    x = F.relu(F.linear(F.relu(F.linear(x, *w["fc6"])), *w["fc7"]))
    return F.linear(x, *w["fc8"])


@pytest.mark.parametrize("fmt", ["layer", "layers", "v0"])
def test_caffemodel_converts_to_the_same_logits(tmp_path, fmt):
    weights = caffe_weights()
    path = tmp_path / "bvlc_alexnet.caffemodel"
    write_caffemodel(path, weights, fmt)
    flat = read_weights(path)
    assert sorted(flat) == sorted(f"{n}.{i}" for n in weights for i in (0, 1))
    state, sizes = from_caffe(flat, str(path))
    assert sizes == {"widths": WIDTHS, "classes": CLASSES, "in_channels": 3}
    # Caffe's dropout is inverted (scaled in training), so identity at test
    net = AlexNet2012(CLASSES, preset="caffe", widths=WIDTHS, dropout="inverted")
    net.load_state_dict(state)  # strict
    assert_caffe_logits(net, weights)


def assert_caffe_logits(net, weights):
    net.double().eval()
    bgr = 50 * torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1)).double()
    want = caffe_forward(weights, bgr)
    assert want.std() > 0.1
    with torch.no_grad():
        got = net(bgr.flip(1))  # the converted net takes RGB
        unflipped = net(bgr)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(unflipped, want, rtol=1e-3, atol=1e-3)  # the flip was tested


def test_converted_run_folder_gives_caffes_logits(tmp_path):
    weights, path, run = caffe_weights(), tmp_path / "m.caffemodel", tmp_path / "run"
    write_caffemodel(path, weights, "layer")
    state, sizes = from_caffe(read_weights(path), str(path))
    write_run(run, state, "caffe", sizes)
    net = build_model(load_config(run / "config.yaml"), CLASSES, 3)
    net.load_state_dict(checkpoint.load_latest(run)[0]["model"])
    assert_caffe_logits(net, weights)


def cli(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", ALEXNET2012_NO_BAR="1", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "alexnet2012", "convert", *map(str, args)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_convert_command_writes_a_run_folder(tmp_path):
    path, run = tmp_path / "bvlc_alexnet.caffemodel", tmp_path / "run"
    write_caffemodel(path, caffe_weights(), "layer")
    result = cli(path, run, "--from", "caffe")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"widths {WIDTHS}, {CLASSES} classes, 3 input channels" in out, out
    assert "flipped from Caffe's BGR order to RGB" in out, out
    wrote = Path(re.search(r"^wrote (.+)$", out, re.M).group(1))
    payload, latest = checkpoint.load_latest(run)
    assert latest == wrote and (run / "config.yaml").is_file()
    state, _ = from_caffe(read_weights(path))
    assert payload["model"].keys() == state.keys()
    assert all(torch.equal(payload["model"][k], v) for k, v in state.items())


def test_damaged_caffemodel_one_line_exit_2(tmp_path):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    write_caffemodel(path, caffe_weights(), "layer")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = cli(path, tmp_path / "w.pt", "--from", "caffe")
    err = result.stderr
    assert result.returncode == 2 and "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert str(path) in errors[0] and "not a readable .caffemodel" in errors[0], errors[0]
    assert not (tmp_path / "w.pt").exists()


def test_caffemodel_without_weights_or_with_wrong_sizes(tmp_path):
    net = net_parameter()(name="deploy", input=["data"])
    net.layer.add(name="relu1", type="ReLU")
    (tmp_path / "empty.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(ConvertError, match="no layer holds weights"):
        read_weights(tmp_path / "empty.caffemodel")
    blob = net.layer.add(name="conv1").blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([0.0] * 5)
    (tmp_path / "short.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(ConvertError, match=r"conv1\.0 holds 5 values, not \(2, 3\)"):
        read_weights(tmp_path / "short.caffemodel")


def test_caffemodel_without_protobuf_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "m.caffemodel").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "google.protobuf", None)  # as if not installed
    caffe_net_parameter.cache_clear()
    with pytest.raises(ConvertError, match=r"needs the protobuf package \(pip install protobuf\)"):
        read_weights(tmp_path / "m.caffemodel")


def test_evaluating_a_folder_without_weights_names_it(tmp_path):
    """A run folder with no readable checkpoint: one ConvertError naming the folder and, when
    there is one, what is wrong with its newest file."""
    from alexnet2012.weights.convert import ConvertError, evaluate

    with pytest.raises(ConvertError, match=f"{tmp_path}: no readable checkpoint in"):
        evaluate(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-00000003.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConvertError, match="the newest: .*ckpt-00000003.pt"):
        evaluate(tmp_path)
