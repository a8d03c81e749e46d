"""Local ranks share the Fashion-MNIST cache: one downloads, the others wait and then read it."""

import json
import multiprocessing as mp
import time
from pathlib import Path

from fakedata import make_fashion

from alexnet2012.data import fashion_mnist


def _locate(cache: str, record: str, out: str) -> None:
    """One local rank on a fresh machine: no Debian package, an empty cache, a slow download."""

    def download(folder: Path):
        with open(record, "a") as f:
            f.write("download\n")
        time.sleep(1.0)  # long enough for the other rank to look meanwhile
        make_fashion(folder, gz=True)
        return fashion_mnist.find_files(folder)

    fashion_mnist.download = download  # what locate() calls when the cache is empty
    found = fashion_mnist.locate("", system_dir=Path(cache) / "no-debian", cache=Path(cache))
    data = fashion_mnist.load("", system_dir=Path(cache) / "no-debian", cache=Path(cache))
    Path(out).write_text(json.dumps({k: str(v) for k, v in found.items()}
                                    | {"n": len(data["train_labels"])}))  # fmt: skip


def test_one_local_rank_downloads_the_others_wait(tmp_path):
    cache, record = tmp_path / "cache", tmp_path / "downloads.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_locate, args=(str(cache), str(record), str(tmp_path / f"{i}")))
             for i in range(3)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert record.read_text() == "download\n"  # one download; the others found its files
    results = [json.loads((tmp_path / f"{i}").read_text()) for i in range(3)]
    assert results[0] == results[1] == results[2] and results[0]["n"] == 120
