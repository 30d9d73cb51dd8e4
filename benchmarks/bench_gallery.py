"""What the particle galleries add to ``report``: the report of a results
folder without galleries (``--gallery-size 0``, the baseline) against the
same report with them (and optionally ``--filters``), in this process.

Target (issue 16): the galleries of a default lamellarity benchmark
(14,169 particles; SVM and lipnet-4) cost under 20 s on 2 cores, Keras'
import included. Each stage is timed in wall time and in this process's CPU
time (less disturbed by other jobs on a shared machine). Keras is imported
first and timed on its own, since any command that loads a CNN pays it once.

Usage::

    python benchmarks/bench_gallery.py RESULTS [--filters] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--filters", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    _, wall, cpu = _timed(lambda: __import__("keras"))
    print(f"import keras: {wall:.1f} s wall, {cpu:.1f} s CPU")
    from liposome_bench.gallery import render_galleries
    from liposome_bench.report import render_report

    best = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _, wall, cpu = _timed(
                lambda: render_report(args.results, tmp / "plain.md", gallery_size=0)
            )
            best["report without galleries"] = min(
                best.get("report without galleries", (1e9, 0)), (wall, cpu)
            )
            out, wall, cpu = _timed(
                lambda: render_galleries(args.results, tmp / "figures", filters=args.filters)
            )
            best["galleries"] = min(best.get("galleries", (1e9, 0)), (wall, cpu))
    if out.note:
        print(f"note: {out.note}")
    tiles = sum(len(g.ids) for g, _ in out.galleries)
    for name, (wall, cpu) in best.items():
        print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU (best of {args.repeats})")
    print(
        f"{len(out.galleries)} galleries, {tiles} tiles, {out.saliency_count} saliency maps"
        + (f", {len(out.filter_images)} filter/activation figures" if args.filters else "")
    )
    base = best["report without galleries"][0]
    print(f"ratio galleries / report without galleries (wall): {best['galleries'][0] / base:.1f}")


if __name__ == "__main__":
    main()
