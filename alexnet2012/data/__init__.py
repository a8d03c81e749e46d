"""Data for alexnet2012: Fashion-MNIST, prepared ImageFolder stores, and a synthetic set.

The trainer needs only :func:`build_data`; ``prepare_main`` builds a store from ILSVRC-2012's
archives (read in place), their extracted or Kaggle layouts, or ImageFolder trees.
"""

from alexnet2012.data.errors import DataError
from alexnet2012.data.loader import Data
from alexnet2012.data.prepare import prepare_main
from alexnet2012.data.sources import build_data
from alexnet2012.data.store import Store

__all__ = ["Data", "DataError", "Store", "build_data", "prepare_main"]
