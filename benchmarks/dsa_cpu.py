"""DSA mode S on a CPU: each family computed for the members that picked it, against every family for
the whole batch (the device route), alternately in one process; the outputs are checked to be equal.

    python benchmarks/dsa_cpu.py                  # digits- and CIFAR-shaped batches, 10 members
    python benchmarks/dsa_cpu.py --members 40 --repeat 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ddrank import rng
from ddrank.augment import dsa

SHAPES = {"digits (1x8x8, batch 100)": (100, 1, 8), "CIFAR (3x32x32, batch 256)": (256, 3, 32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10, help="distinct batches (ensemble members)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="calls per variant and repetition")
    args = parser.parse_args()
    if min(args.members, args.repeat, args.calls) < 1:
        parser.error("--members, --repeat and --calls must be at least 1")
    augment = dsa.DSA("color_crop_cutout_scale_rotate")
    routes = {"whole batch": lambda images: False, "by member subsets": dsa._by_subsets}
    families = "_".join(augment.families)
    print(f"DSA mode S ({families}), {args.members} members, {torch.get_num_threads()} threads")
    for name, (batch, channels, size) in SHAPES.items():
        x = torch.randn(args.members, batch, channels, size, size, generator=torch.Generator().manual_seed(0))
        key = rng.key_from_seed(list(range(args.members)))
        times: dict[str, list[float]] = {route: [] for route in routes}
        outputs = {}
        for _ in range(args.repeat):
            for route, choose in routes.items():
                dsa._by_subsets = choose
                outputs[route] = augment(x, key)
                started = time.perf_counter()
                for _ in range(args.calls):
                    augment(x, key)
                times[route].append((time.perf_counter() - started) / args.calls)
        dsa._by_subsets = routes["by member subsets"]
        assert torch.equal(*outputs.values()), "the two routes differ"
        before, after = (statistics.median(times[route]) for route in routes)
        print(
            f"  {name:28s} whole batch {1e3 * before:7.2f} ms   by subsets {1e3 * after:7.2f} ms   "
            f"{before / after:.2f}x (same output)"
        )


if __name__ == "__main__":
    main()
