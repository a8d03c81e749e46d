"""Small JPEG trees for the data tests: three classes of generated images with the awkward
files a real ImageNet copy holds (CMYK, greyscale, truncated, empty, not an image)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def jpeg(path: Path, size, colour, mode="RGB", quality=90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.paste((255 - colour[0], colour[1] // 2, 255), (0, 0, size[0] // 3, size[1] // 2))
    img.convert(mode).save(path, "JPEG", quality=quality)
    return path


def make_tree(src: Path) -> Path:
    """train/ and val/ trees, 3 classes, with every kind of awkward file."""
    colours = {"ant": (200, 30, 30), "bee": (30, 200, 30), "cat": (30, 30, 200)}
    for split, n in (("train", 4), ("val", 2)):
        for c, colour in colours.items():
            for i in range(n):
                jpeg(src / split / c / f"{c}{i}.JPEG", (40 + 7 * i, 34 + 3 * i), colour)
    jpeg(src / "train/ant/cmyk.JPEG", (50, 36), (255, 0, 0), mode="CMYK")
    jpeg(src / "train/bee/grey.JPEG", (36, 48), (90, 90, 90), mode="L")
    full = jpeg(src / "train/cat/truncated.JPEG", (64, 64), (1, 2, 3)).read_bytes()
    (src / "train/cat/truncated.JPEG").write_bytes(full[: len(full) // 2])
    (src / "train/cat/notes.txt").write_text("not an image")
    (src / "val/bee/empty.JPEG").write_bytes(b"")
    return src
