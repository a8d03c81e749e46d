"""Data for alexnet2012: Fashion-MNIST, prepared ImageFolder stores, and a synthetic set.

The trainer needs only :func:`build_data`; ``prepare_main`` builds an ImageFolder store.
"""

from alexnet2012.data.errors import DataError
from alexnet2012.data.loader import Data
from alexnet2012.data.prepare import prepare_main
from alexnet2012.data.sources import build_data
from alexnet2012.data.store import Store

__all__ = ["Data", "DataError", "Store", "build_data", "prepare_main"]
