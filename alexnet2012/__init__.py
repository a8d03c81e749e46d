"""alexnet2012: the 2012 two-GPU AlexNet, reproduced faithfully and run across two processes."""

from alexnet2012.nets.model import AlexNet2012

__version__ = "0.1.0"
__all__ = ["AlexNet2012", "__version__"]
