"""Progress bars: tqdm on the main rank at a terminal; elsewhere a bar that draws nothing."""

from __future__ import annotations

import os
import sys


class _Quiet:
    quiet = True  # callers print plain progress lines instead

    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def progress(is_main: bool, total: int, done: int, unit: str = "step"):
    """A tqdm bar on the main rank when attached to a terminal; otherwise nothing."""
    if not is_main or not sys.stderr.isatty() or os.environ.get("ALEXNET2012_NO_BAR"):
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit=unit, dynamic_ncols=True)
