"""Data for alexnet2012: Fashion-MNIST, prepared ImageFolder stores, and a synthetic set.

The trainer needs only :func:`build_data`; ``prepare_main`` builds an ImageFolder store.
"""

from .errors import DataError
from .loader import Data, build_data
from .prepare import prepare_main
from .store import Store

__all__ = ["Data", "DataError", "Store", "build_data", "prepare_main"]
