"""Reading a BVLC Caffe ``.caffemodel`` with the protobuf package alone (no pycaffe).

The message classes are built at run time from the part of Caffe's public ``caffe.proto``
that holds the weights (:data:`CAFFE_PROTO`, with Caffe's field numbers).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch


class ConvertError(ValueError):
    """Weights that cannot be converted; the message names the file or layer and what to do."""


# The part of BVLC Caffe's caffe.proto (proto2, package caffe; github.com/BVLC/caffe,
# src/caffe/proto/caffe.proto) that holds a .caffemodel's weights, with Caffe's field numbers:
# "*" repeated (numbers packed, as there), capitalised a message. Other fields are skipped.
CAFFE_PROTO = {
    "BlobShape": (("dim", 1, "int64*"),),
    "BlobProto": (("num", 1, "int32"), ("channels", 2, "int32"), ("height", 3, "int32"),
                  ("width", 4, "int32"), ("data", 5, "float*"), ("shape", 7, "BlobShape"),
                  ("double_data", 8, "double*")),
    "LayerParameter": (("name", 1, "string"), ("blobs", 7, "BlobProto*")),
    "V0LayerParameter": (("name", 1, "string"), ("blobs", 50, "BlobProto*")),
    "V1LayerParameter": (("layer", 1, "V0LayerParameter"), ("name", 4, "string"),
                         ("blobs", 6, "BlobProto*")),
    "NetParameter": (("name", 1, "string"), ("layers", 2, "V1LayerParameter*"),
                     ("layer", 100, "LayerParameter*")),
}  # fmt: skip


@functools.cache
def caffe_net_parameter() -> type:
    """Caffe's ``NetParameter`` message class, built from :data:`CAFFE_PROTO` (needs protobuf)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="caffe_weights.proto", package="caffe")
    for message, fields in CAFFE_PROTO.items():
        msg = file.message_type.add(name=message)
        for name, number, kind in fields:
            f = msg.field.add(name=name, number=number, label=fd.LABEL_OPTIONAL)
            if kind.endswith("*"):
                kind, f.label = kind[:-1], fd.LABEL_REPEATED
            if kind[0].isupper():  # a message
                f.type, f.type_name = fd.TYPE_MESSAGE, f".caffe.{kind}"
            else:
                f.type = getattr(fd, f"TYPE_{kind.upper()}")
                if f.label == fd.LABEL_REPEATED:
                    f.options.packed = True
    pool = descriptor_pool.DescriptorPool()  # private: no clash with pycaffe's caffe_pb2
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))


def read_caffemodel(path: Path) -> dict:
    """``{"conv1.0": weights, "conv1.1": biases, ...}`` from a .caffemodel, as Caffe reads it."""
    try:
        net_parameter = caffe_net_parameter()
    except ImportError:
        raise ConvertError(
            f"{path}: reading a .caffemodel needs the protobuf package (pip install protobuf); "
            "or convert it to .npz first, e.g. with pycaffe or caffemodel2pytorch"
        ) from None
    data = path.read_bytes()  # protobuf skips the fields CAFFE_PROTO leaves out
    try:
        net = net_parameter.FromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError
        raise ConvertError(
            f"{path}: not a readable .caffemodel ({type(e).__name__}: {e}); is the download "
            "complete? Or convert it to .npz first, e.g. with pycaffe"
        ) from None
    # current layers, then V1 ones and V0 ones nested in V1 (as Caffe's upgrade_proto.cpp reads)
    layers = [*net.layer, *(v1.layer if v1.HasField("layer") else v1 for v1 in net.layers)]
    out = {}
    for layer in layers:
        for i, blob in enumerate(layer.blobs):
            key = f"{layer.name}.{i}"
            legacy = ("num", "channels", "height", "width")
            if any(blob.HasField(k) for k in legacy):  # Caffe's Blob::FromProto prefers these
                shape = tuple(getattr(blob, k) for k in legacy)
            else:
                shape = tuple(blob.shape.dim)
            values = np.array(blob.double_data or blob.data, np.float32)
            if key in out:
                raise ConvertError(f"{path}: two layers named {layer.name!r} hold weights")
            if values.size != math.prod(shape):
                raise ConvertError(f"{path}: blob {key} holds {values.size} values, not {shape}")
            out[key] = torch.from_numpy(values.reshape(shape))
    if not out:
        raise ConvertError(f"{path}: no layer holds weights (a .prototxt, not a .caffemodel?)")
    return out
