"""Time ``geo.demo.build_world`` stage by stage and count what it builds.

Stages are timed from the progress callback (each call starts a stage; per-county
stages are summed over counties), in wall-clock and in process CPU seconds (the
latter barely moves when other jobs share the machine). Prints, per scale, a table
of stage timings, the total against the target (small <= 4 s, full <= 40 s, wall)
and the row count of every layer.

    .venv/bin/python scripts/bench/demo_build.py [--scale small|full|both] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geo.demo import build_world

TARGET_S = {"small": 4.0, "full": 40.0}


def bench(scale: str, seed: int) -> None:
    marks: list[tuple[str, float, float]] = []

    def mark(stage: str, _fraction: float) -> None:
        marks.append((stage, time.perf_counter(), time.process_time()))

    mark("start", 0.0)
    world = build_world(scale, seed, progress=mark)
    wall = marks[-1][1] - marks[0][1]
    cpu = marks[-1][2] - marks[0][2]
    per_stage: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (stage, wall0, cpu0), (_, wall1, cpu1) in itertools.pairwise(marks[1:]):
        # "吉首市: tiling" -> "tiling": one row per stage, summed over counties.
        row = per_stage[stage.split(": ", 1)[-1]]
        row[0] += wall1 - wall0
        row[1] += cpu1 - cpu0
    verdict = "ok" if wall <= TARGET_S[scale] else "SLOWER THAN TARGET"
    target = f"target <= {TARGET_S[scale]:.0f} s: {verdict}"
    print(f"\nbuild_world({scale!r}, seed={seed}): {wall:.2f} s wall, {cpu:.2f} s CPU ({target})")
    print(f"  {'stage':<36}{'wall s':>9}{'CPU s':>9}{'share':>8}")
    for stage, (stage_wall, stage_cpu) in per_stage.items():
        print(f"  {stage:<36}{stage_wall:>9.2f}{stage_cpu:>9.2f}{stage_wall / wall:>8.0%}")
    print(f"  {'layer':<36}{'rows':>9}")
    for name, frame in world.layers().items():
        print(f"  {name:<36}{len(frame):>9,}")
    cams = world.cameras
    print(f"  {'cameras not online':<36}{(cams['status'] != 'online').mean():>9.1%}")
    print(f"  {'disputes':<36}{(world.incidents['category'] == 'dispute').sum():>9,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "full", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for scale in ("small", "full") if args.scale == "both" else (args.scale,):
        bench(scale, args.seed)


if __name__ == "__main__":
    main()
