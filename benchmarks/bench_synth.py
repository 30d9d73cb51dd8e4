"""Speed of the synthetic generator: batched rendering against the same
generator run particle by particle, and the speed of writing the export.

    python benchmarks/bench_synth.py                       # full encapsulation set
    python benchmarks/bench_synth.py --n 5000 --baseline-n 300

Prints particles per second for
  * the batched generator on the whole set (``--n``, default the thesis's
    24,918 encapsulation particles),
  * the batched generator and the straightforward per-particle version
    (``batch_size=1``: the same code, one particle per canvas, no batching)
    on the same ``--baseline-n`` particles, their ratio, and whether both
    gave the same images (they should: each particle has its own random
    stream),
  * ``write_export`` of ``--write-n`` particles (PNG images and masks).
Both versions run in this process, one after the other, so the ratio holds
even when other work slows the machine (the load average is printed); CPU
seconds of this process are printed beside wall-clock seconds because they
are less disturbed by other processes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from liposome_bench.dataset import write_export
from liposome_bench.synth import allocate_counts, generate_dataset


def timed(func):
    """Result, wall-clock seconds and CPU seconds of this process."""
    start, cpu = time.perf_counter(), time.process_time()
    result = func()
    return result, time.perf_counter() - start, time.process_time() - cpu


def rate(label, n, wall, cpu):
    print(
        f"{label:<24}{n:6d} particles in {wall:6.1f} s wall = {n / wall:7.1f} particles/s "
        f"({cpu:6.1f} s CPU = {n / cpu:7.1f} particles/CPU-s)"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--problem", default="encapsulation", choices=["lamellarity", "encapsulation"]
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="particles for the batched run (default: the thesis's size)",
    )
    parser.add_argument(
        "--baseline-n",
        type=int,
        default=500,
        help="particles for the batched vs per-particle comparison",
    )
    parser.add_argument(
        "--write-n", type=int, default=2000, help="particles written with write_export"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    n = sum(allocate_counts(args.problem, args.n).values())
    print(
        f"cores: {os.cpu_count()}, load average at start: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    )

    dataset, wall, cpu = timed(lambda: generate_dataset(args.problem, n, args.seed))
    rate("batched, full set:", n, wall, cpu)
    pixels = sum(p.image.size for p in dataset.particles)
    print(f"  images: {pixels / 1e6:.0f} Mpx of uint8 ({pixels / n:.0f} px per particle)")

    m = args.baseline_n
    batched_set, b_wall, b_cpu = timed(lambda: generate_dataset(args.problem, m, args.seed))
    single_set, s_wall, s_cpu = timed(
        lambda: generate_dataset(args.problem, m, args.seed, batch_size=1)
    )
    rate("batched, subset:", m, b_wall, b_cpu)
    rate("per-particle, subset:", m, s_wall, s_cpu)
    print(f"ratio batched / per-particle: {s_wall / b_wall:.2f}x wall, {s_cpu / b_cpu:.2f}x CPU")
    same = batched_set.fingerprint() == single_set.fingerprint()
    print(f"  same images from both: {'yes' if same else 'NO'}")

    w = min(args.write_n, n)
    subset = dataset.subset(range(w))
    tmp = tempfile.mkdtemp(prefix="bench-synth-")
    try:
        _, wall, cpu = timed(lambda: write_export(subset, os.path.join(tmp, "export")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate("write_export:", w, wall, cpu)
    print(f"  the full set would take ~{n * wall / w:.0f} s to write")
    print("load average at end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
