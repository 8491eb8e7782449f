"""Address -> place matching (geo.address): build time, speed and accuracy, against
naive baselines.

On the demo world's gazetteer (``--scale full``: ~69,000 entries, 1,797 villages;
``small``: county 433101) it measures, single-threaded:

* ``AddressMatcher.build`` time (best of 3);
* matching speed, addresses/s in wall-clock and CPU time, on the gazetteer's own
  full texts (clean) and on noisy rewrites of them (:mod:`geo.address.noise`:
  dropped and short forms, full-width digits, typos, reordering, punctuation,
  Chinese numerals, suffix variants, mixtures);
* accuracy on the noisy sample: the share resolved to the entry's village, per kind
  of noise, the precision reached, and the mean confidence of right and wrong
  answers;
* two naive baselines on a small stratified subsample of the same noisy addresses
  (they are slow): ``difflib.get_close_matches`` against all full texts, and a
  pandas substring search (spaces removed; the first entry whose full text
  contains the address), with gridcover on the same subsample.

    .venv/bin/python scripts/bench/address.py [--scale full|small] [--seed 0]
        [--per-kind 1000] [--baseline-per-kind 2]
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geo.address import AddressMatcher
from geo.address.noise import NOISE_KINDS, noisy_addresses
from geo.demo import build_world

TARGET_PER_S = 2000.0
TARGET_BUILD_S = 5.0


def _timed(run: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _difflib_baseline(gazetteer: pd.DataFrame) -> Callable[[str], str | None]:
    texts = gazetteer["full_text"].tolist()
    village_of = dict(zip(texts, gazetteer["village_code"], strict=True))

    def match(text: str) -> str | None:
        found = difflib.get_close_matches(text, texts, n=1, cutoff=0.0)
        return village_of[found[0]] if found else None

    return match


def _substring_baseline(gazetteer: pd.DataFrame) -> Callable[[str], str | None]:
    full_text = gazetteer["full_text"]
    codes = gazetteer["village_code"].to_numpy()

    def match(text: str) -> str | None:
        needle = re.sub(r"\s+", "", text)
        if not needle:
            return None
        hits = np.flatnonzero(full_text.str.contains(needle, regex=False).to_numpy())
        return str(codes[hits[0]]) if len(hits) else None

    return match


def _accuracy(got: Sequence[str | None], sample: pd.DataFrame) -> pd.Series:
    ok = pd.Series(
        [g == want for g, want in zip(got, sample["village_code"], strict=True)],
        index=sample.index,
    )
    return ok


def bench(scale: str, seed: int, per_kind: int, baseline_per_kind: int) -> None:
    print(f"building the demo world ({scale}, seed {seed}) ...", flush=True)
    world = build_world(scale, seed)  # type: ignore[arg-type]
    gazetteer = world.addresses
    divisions = pd.concat([world.counties, world.townships, world.villages], ignore_index=True)
    n_villages = int((divisions["level"] == "village").sum())

    builds = [_timed(lambda: AddressMatcher.build(gazetteer, divisions)) for _ in range(3)]
    matcher: AddressMatcher = builds[0][0]  # type: ignore[assignment]
    build_s = min(wall for _, wall, _ in builds)

    clean = gazetteer["full_text"].sample(min(20_000, len(gazetteer)), random_state=seed).tolist()
    noisy = noisy_addresses(gazetteer, per_kind, seed=seed + 1)
    texts = noisy["text"].tolist()
    # Each text once (match_many would reuse repeats), after one warm-up pass that
    # fills the matcher's bounded caches as a running service would have them.
    matcher.match_many(clean[:2000])
    _, clean_wall, clean_cpu = _timed(lambda: [matcher.match(t) for t in clean])
    results, noisy_wall, noisy_cpu = _timed(lambda: [matcher.match(t) for t in texts])
    noisy["got"] = [r.village_code if r else None for r in results]  # type: ignore[union-attr]
    noisy["precision_got"] = [r.precision if r else "none" for r in results]  # type: ignore[union-attr]
    noisy["confidence"] = [r.confidence if r else 0.0 for r in results]  # type: ignore[union-attr]
    noisy["ok"] = _accuracy(noisy["got"].tolist(), noisy)

    print(
        f"\ngeo.address on the {scale} demo gazetteer: {len(gazetteer):,} entries, "
        f"{n_villages:,} villages, seed {seed}"
    )
    verdict = "ok" if build_s <= TARGET_BUILD_S else "SLOWER THAN TARGET"
    print(f"  build: {build_s:.2f} s (best of 3; target <= {TARGET_BUILD_S:.0f} s: {verdict})")
    print(f"\n  {'speed, single thread':<28}{'addresses':>10}{'wall /s':>10}{'CPU /s':>10}  target")
    for label, n, wall, cpu in (
        ("clean full texts", len(clean), clean_wall, clean_cpu),
        ("noisy (all kinds)", len(texts), noisy_wall, noisy_cpu),
    ):
        verdict = "ok" if n / wall >= TARGET_PER_S else "SLOWER"
        target = f">= {TARGET_PER_S:,.0f}: {verdict}"
        print(f"  {label:<28}{n:>10,}{n / wall:>10,.0f}{n / cpu:>10,.0f}  {target}")

    print(f"\n  {'accuracy (right village)':<28}{'n':>7}{'right':>9}{'conf ok':>9}{'conf bad':>9}")
    for kind in NOISE_KINDS:
        part = noisy[noisy["kind"] == kind]
        good, bad = part[part["ok"]], part[~part["ok"]]
        bad_conf = f"{bad['confidence'].mean():.2f}" if len(bad) else "-"
        print(
            f"  {kind:<28}{len(part):>7,}{part['ok'].mean():>9.1%}"
            f"{good['confidence'].mean():>9.2f}{bad_conf:>9}"
        )
    print(f"  {'all':<28}{len(noisy):>7,}{noisy['ok'].mean():>9.1%}")
    by_class = noisy.groupby("precision")["ok"].mean()
    print("  by entry precision: " + ", ".join(f"{k} {v:.1%}" for k, v in by_class.items()))
    reached = noisy["precision_got"].value_counts(normalize=True)
    print("  precision reached: " + ", ".join(f"{k} {v:.1%}" for k, v in reached.items()))

    # Baselines: a few addresses of every kind (difflib takes seconds per address).
    subsample = noisy.groupby("kind", sort=False).head(baseline_per_kind).reset_index(drop=True)
    sub_texts = subsample["text"].tolist()
    rows = [
        (
            "geo.address AddressMatcher",
            lambda t: m.village_code if (m := matcher.match(t)) else None,
        )
    ]
    rows.append(("difflib.get_close_matches", _difflib_baseline(gazetteer)))
    rows.append(("pandas substring search", _substring_baseline(gazetteer)))
    print(
        f"\n  baselines on {len(subsample)} of the noisy addresses ({baseline_per_kind} per kind)"
    )
    print(f"  {'method':<30}{'right':>8}{'addresses/s':>14}")
    for label, method in rows:
        got, wall, _ = _timed(lambda method=method: [method(t) for t in sub_texts])
        ok = _accuracy(got, subsample)  # type: ignore[arg-type]
        print(f"  {label:<30}{ok.mean():>8.1%}{len(sub_texts) / wall:>14,.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "full"], default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=1000, help="noisy addresses per kind")
    parser.add_argument(
        "--baseline-per-kind", type=int, default=2, help="addresses per kind for the baselines"
    )
    args = parser.parse_args()
    bench(args.scale, args.seed, args.per_kind, args.baseline_per_kind)


if __name__ == "__main__":
    main()
