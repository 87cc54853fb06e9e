"""Files: download and upload throughput of a large file through the server, beside ``cp``.

One run, one disk: a file of ``--size-mb`` (default 1,024 MiB) is made in a
temporary directory under ``--dir``, the server (``run.py``, a real process)
gets its data directory there too, and each measure copies the file once:

* **cp**: ``cp src dst``, the peer: what the disk and page cache give;
* **cp + sync**: the same, then ``sync dst`` (an fsync), since an upload
  fsyncs before it answers;
* **download**: ``GET /api/files/content`` with ``curl -o dst``;
* **upload**: ``PUT /api/files/content`` with ``curl -T src``.

curl is the client so that the server is what is measured (an httpx client
in Python would share the two ends' CPU cost with it). Each measure is the
best of ``--repeat`` runs taken in turn, each after a ``sync`` (so none
pays for the previous one's write-back); the ratio is cp's time over the
measure's (100 %: as fast as cp). The server's peak RSS rise is the largest
over the runs: its ``VmHWM`` reset before a transfer (``/proc/<pid>/clear_refs``)
and read after, against its ``VmRSS`` before.

    .venv/bin/python bench/files_bench.py [--size-mb 1024] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.files.memory import peak_rise
from tests.support.process import run_server

MIB = 1 << 20


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with open(path, "wb") as file:
        for index in range(size // MIB):
            file.write(index.to_bytes(8, "big") + block[8:])
        os.fsync(file.fileno())


async def run(*command: str) -> None:
    await trio.run_process(list(command), stdout=subprocess.DEVNULL)


async def remove(path: Path) -> None:
    await trio.Path(path).unlink(missing_ok=True)


async def bench(args: argparse.Namespace, work: Path) -> None:
    size = args.size_mb * MIB
    source = work / "source.bin"
    copy = work / "copy.bin"
    data_dir = work / "data"
    served = data_dir / "files" / "served.bin"
    print(f"making a {args.size_mb} MiB file in {work} ...", flush=True)
    await trio.to_thread.run_sync(make_file, source, size)
    (data_dir / "files").mkdir(parents=True)
    await trio.to_thread.run_sync(shutil.copyfile, source, served)

    environ = {
        "AUTOBOT_DATA_DIR": str(data_dir),
        "AUTOBOT_MAX_UPLOAD_BYTES": str(2 * size),
        "AUTOBOT_LLM_URL": "http://127.0.0.1:9",
    }
    async with run_server(environ) as server:
        pid = server.process.pid
        url = f"{server.url}/api/files/content"

        async def cp() -> None:
            await run("cp", str(source), str(copy))

        async def cp_sync() -> None:
            await run("cp", str(source), str(copy))
            await run("sync", str(copy))

        async def download() -> None:
            await run("curl", "-sSf", "-o", str(copy), f"{url}?path=served.bin")

        async def upload() -> None:
            await run(
                "curl", "-sSf", "-H", "Expect:", "-T", str(source), f"{url}?path=uploaded.bin"
            )

        measures: dict[str, Callable[[], Awaitable[None]]] = {
            "cp": cp,
            "cp + sync": cp_sync,
            "download (GET)": download,
            "upload (PUT)": upload,
        }
        seconds = dict.fromkeys(measures, float("inf"))
        rises = dict.fromkeys(measures, 0)
        for _ in range(args.repeat):  # round robin, so a noisy moment hurts each alike
            for name, measure in measures.items():
                await remove(copy)
                await remove(data_dir / "files" / "uploaded.bin")
                await trio.to_thread.run_sync(os.sync)  # each starts with nothing to write back
                started = time.perf_counter()
                _, rise = await peak_rise(pid, measure)
                seconds[name] = min(seconds[name], time.perf_counter() - started)
                rises[name] = max(rises[name], rise)
        assert (data_dir / "files" / "uploaded.bin").stat().st_size == size
        await remove(copy)

    cp_s, cp_sync_s = seconds["cp"], seconds["cp + sync"]
    print(f"\n{args.size_mb} MiB, best of {args.repeat}, server peak RSS rise the largest seen\n")
    print("| measure | seconds | MB/s | vs cp | vs cp + sync | server RSS rise |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, taken in seconds.items():
        through_server = name.startswith(("download", "upload"))
        rise = f"{rises[name] / MIB:.1f} MiB" if through_server else ""
        print(
            f"| {name} | {taken:.2f} | {size / taken / 1e6:.0f} | {cp_s / taken:.0%} "
            f"| {cp_sync_s / taken:.0%} | {rise} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the file and the data directory go")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("files_bench needs curl")
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        trio.run(bench, args, Path(work))


if __name__ == "__main__":
    main()
