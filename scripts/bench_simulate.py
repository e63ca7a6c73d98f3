"""Benchmark of the GalSim simulation (jaxrobust.data.simulate); prints one JSON object.

Measures, on one core unless stated:
  candidates     the config's population. Continuous (the default): simulate_population_candidate()
                 timings with every class open (catalogue rendering + G-M20, g, r, i at Y1 and Y10,
                 the stamp's G-M20) and with every class full (catalogue only: what a spare
                 candidate costs). Recipes: per intended class, simulate_candidate() timings
                 (label-band draw, G-M20 labeller, and for kept galaxies g, r, i at Y1 and Y10).
  recipes_candidates  the same for the old quick recipes (data.population="recipes", labelled on
                 the Y10 stamp, r = 17-20.5), timed in this run for comparison (--compare-recipes).
  labeller       morphology.measure() alone on the same label stamps.
  gsparams       draw_expected() with GalSim's default GSParams against the config's looser
                 folding/maxk thresholds, timed in this run, and the pixel differences they make.
  simulate_dataset  the config scaled down (--dataset-fraction), with 1 and --workers processes
                 (and the old recipes with --workers processes, for comparison).

Example:  python scripts/bench_simulate.py --n-per-class 6 --workers 2 --out runs/bench_simulate.json
Takes about 2-3 minutes with the defaults on a 2-core machine.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import galsim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, if not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ helpers

from _bench_json import emit  # noqa: E402
from jaxrobust.config import load_config  # noqa: E402
from jaxrobust.data import morphology, simulate  # noqa: E402

CLASS_ORDER = (simulate.ELLIPTICAL, simulate.SPIRAL, simulate.MERGER)
# The per-class recipes' quick dataset: labelled on the Y10 stamp, r = 17-20.5.
RECIPE_OVERRIDES = ["data.population=recipes", "data.label_by=gini_m20", "data.mag_r_range=(17.0, 20.5)"]
WARM_UP_INDEX = 10**6  # a candidate index far from the timed ones, drawn first and not timed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=6,
                        help="candidates timed per intended class (accepted + rejected)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for the second simulate_dataset run (the first uses 1)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--config", default="quick", help="config name or file (default quick)")
    parser.add_argument("--dataset-fraction", type=float, default=0.1,
                        help="simulate_dataset counts = this x the config's counts")
    parser.add_argument("--repeats", type=int, default=2,
                        help="GSParams timing repeats (the fastest is kept)")
    parser.add_argument("--compare-recipes", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the old recipes (candidates and dataset)")
    return parser.parse_args(argv)


def timed(fn, *args, **kwargs):
    """(result, seconds of wall time) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished worker processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- Candidate throughput ---
def bench_population_candidates(spec: simulate.SimulationSpec, n: int) -> tuple[dict, list]:
    """Continuous population: seconds per candidate with all classes open and with none."""
    simulate.simulate_population_candidate(spec, WARM_UP_INDEX)  # GalSim caches, PSFs, imports
    report, candidates = {}, []
    for name, open_classes in (("all_classes_open", (0, 1, 2)), ("all_classes_full", ())):
        cpu_start = time.process_time()
        batch, seconds = timed(lambda: [simulate.simulate_population_candidate(spec, k, open_classes)
                                        for k in range(n)])
        cpu = time.process_time() - cpu_start
        report[name] = dict(candidates=n, seconds=round(seconds, 3), cpu_seconds=round(cpu, 3),
                            seconds_per_candidate=round(seconds / n, 4),
                            candidates_per_second_per_core=round(n / seconds, 3))
        if open_classes:
            candidates = batch
            report[name]["labels"] = np.bincount([c.label + 1 for c in batch], minlength=4)[[1, 2, 3, 0]].tolist()
    return report, candidates


def bench_candidates(spec: simulate.SimulationSpec, n: int) -> tuple[dict, list]:
    """Candidates/s and kept galaxies/s on one core, per intended class; returns the candidates."""
    report, candidates = {}, []
    for cls in CLASS_ORDER:
        simulate.simulate_candidate(spec, cls, WARM_UP_INDEX)  # GalSim caches, PSFs, imports
        cpu_start = time.process_time()
        batch, seconds = timed(lambda: [simulate.simulate_candidate(spec, cls, k) for k in range(n)])
        cpu = time.process_time() - cpu_start  # below `seconds` when a neighbour shares the core
        accepted = sum(c.accepted for c in batch)
        report[simulate.CLASS_NAMES[cls]] = dict(
            candidates=n, accepted=accepted, seconds=round(seconds, 3), cpu_seconds=round(cpu, 3),
            seconds_per_candidate=round(seconds / n, 4),
            candidates_per_second_per_core=round(n / seconds, 3),
            kept_galaxies_per_second_per_core=round(accepted / seconds, 3))
        candidates += batch
    return report, candidates


# --- The labeller alone ---
def bench_labeller(spec: simulate.SimulationSpec, candidates: list, candidate_seconds: float) -> dict:
    """morphology.measure() on each candidate's label stamp (the stamp is built untimed)."""
    band = simulate.BANDS.index(spec.label_band)
    psfs = simulate._psfs(spec)
    seconds = []
    if spec.population == "continuous":  # the catalogue's measurement comes on top of the stamp's
        from jaxrobust.data import catalogue, population

        cat_seconds = []
        for c in candidates:
            profile = population.band_profiles(c.galaxy, spec.gsparams, (catalogue.LABEL_BAND,))[0]
            image = catalogue.observe(catalogue.render(profile.withScaledFlux(
                10 ** (-0.4 * spec.catalogue_mag_shift)), spec.gsparams), c.seed)
            try:
                cat_seconds.append(timed(morphology.measure, image, catalogue.sky_sigma_per_pixel())[1])
            except ValueError:
                pass
        seconds_catalogue = dict(stamps=len(cat_seconds), mean_seconds=round(float(np.mean(cat_seconds)), 4))
    for c in candidates:
        expected = simulate.draw_expected(c.galaxy, spec, bands=(band,), psfs=psfs)[0]
        image, sky_sigma = simulate.label_image(expected, c.seed, band, spec)
        try:
            seconds.append(timed(morphology.measure, image, sky_sigma)[1])
        except ValueError:  # nothing detected: left out of the timing
            pass
    mean = float(np.mean(seconds))
    report = dict(stamps=len(seconds), mean_seconds=round(mean, 4), median_seconds=round(float(np.median(seconds)), 4),
                  share_of_candidate_time=round(sum(seconds) / candidate_seconds, 3))
    if spec.population == "continuous":
        report["catalogue"] = seconds_catalogue
        report["share_of_candidate_time"] = round((sum(seconds) + sum(cat_seconds)) / candidate_seconds, 3)
    return report


# --- GSParams: GalSim defaults against the config's thresholds ---
def _draw_all(galaxies: list, spec: simulate.SimulationSpec) -> tuple[list, float]:
    psfs = simulate._psfs(spec)
    return timed(lambda: [simulate.draw_expected(g, spec, psfs=psfs) for g in galaxies])


def _pixel_differences(reference: list, fast: list) -> dict:
    """Largest differences of the fast drawings from the reference ones, over all stamps."""
    peak, bright, flux = [], [], []
    for ref, new in zip(reference, fast):
        for r, f in zip(ref, new):  # per band
            diff = np.abs(f - r)
            peak.append(diff.max() / r.max())
            mask = r > 0.01 * r.max()  # pixels above 1 % of the peak: relative error per pixel
            bright.append((diff[mask] / r[mask]).max())
            flux.append(abs(f.sum() - r.sum()) / r.sum())
    return dict(max_abs_diff_over_stamp_peak=float(max(peak)),
                max_rel_diff_pixels_above_1pct_of_peak=float(max(bright)),
                max_rel_total_flux_diff=float(max(flux)))


def bench_gsparams(spec: simulate.SimulationSpec, galaxies: list, repeats: int) -> dict:
    """Draw time of g, r, i noiseless stamps with both GSParams, interleaved, fastest of repeats."""
    default = galsim.GSParams()
    reference_spec = simulate.SimulationSpec(folding_threshold=default.folding_threshold,
                                             maxk_threshold=default.maxk_threshold)
    for s in (reference_spec, spec):  # build PSFs and profile caches before timing
        _draw_all(galaxies[:1], s)
    best = {"default": math.inf, "config": math.inf}
    for _ in range(repeats):  # interleave so a busy neighbour slows both alike
        reference, t_ref = _draw_all(galaxies, reference_spec)
        fast, t_fast = _draw_all(galaxies, spec)
        best["default"], best["config"] = min(best["default"], t_ref), min(best["config"], t_fast)
    n = len(galaxies)
    return dict(
        galaxies=n,
        default=dict(folding_threshold=default.folding_threshold, maxk_threshold=default.maxk_threshold,
                     seconds_per_galaxy=round(best["default"] / n, 4)),
        config=dict(folding_threshold=spec.folding_threshold, maxk_threshold=spec.maxk_threshold,
                    seconds_per_galaxy=round(best["config"] / n, 4)),
        draw_time_ratio_default_over_config=round(best["default"] / best["config"], 3),
        **_pixel_differences(reference, fast))


# --- The whole dataset pipeline at 1 and N workers ---
def scaled_config(name: str, fraction: float, overrides=()):
    base = load_config(name, list(overrides))
    counts = {key: max(3, int(round(fraction * base.data[key]))) for key in ("n_spiral", "n_elliptical", "n_merger")}
    return load_config(name, list(overrides) + [f"data.{k}={v}" for k, v in counts.items()] + ["data.preview=False"]), counts


def bench_dataset(name: str, fraction: float, workers: int, overrides=(), worker_counts=None) -> dict:
    config, counts = scaled_config(name, fraction, overrides)
    runs = {}
    for n_workers in worker_counts or sorted({1, workers}):
        with tempfile.TemporaryDirectory(prefix="bench_simulate_") as out:
            cpu_start = cpu_seconds()
            info, seconds = timed(simulate.simulate_dataset, config, out, workers=n_workers, progress=False)
            cpu = cpu_seconds() - cpu_start
        galaxies = sum(info["unique_galaxies"].values())
        # CPU time / (wall time x workers) below 1: the workers waited (for a busy CPU or the pool).
        runs[f"workers_{n_workers}"] = dict(
            seconds=round(seconds, 2), simulation_seconds=info["simulation_seconds"],
            cpu_seconds=round(cpu, 2), cpu_utilisation=round(cpu / (seconds * n_workers), 3),
            galaxies_per_second=round(galaxies / seconds, 3),
            galaxies_per_second_per_core=round(galaxies / seconds / n_workers, 3),
            candidates_tried=info["candidates_tried"])
    report = dict(counts=counts, images=sum(map(sum, info["images_per_split"].values())), **runs)
    if workers > 1 and "workers_1" in runs:
        report["speedup_workers_%d_over_1" % workers] = round(
            runs["workers_1"]["seconds"] / runs[f"workers_{workers}"]["seconds"], 3)
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = load_config(args.config)
    spec = simulate.SimulationSpec.from_config(config)
    start = time.perf_counter()
    result = dict(machine=dict(cpu_count=os.cpu_count(), load_average_at_start=os.getloadavg(),
                               galsim=galsim.__version__, numpy=np.__version__),
                  config=args.config, sky_area_per_pixel_arcsec2=spec.sky_area_per_pixel_arcsec2,
                  label=f"{spec.label_band} band, {spec.label_depth}")
    result["population"] = spec.population
    if spec.population == "continuous":
        result["candidates"], candidates = bench_population_candidates(spec, 3 * args.n_per_class)
        candidate_seconds = result["candidates"]["all_classes_open"]["seconds"]
        if args.compare_recipes:
            old_spec = simulate.SimulationSpec.from_config(load_config(args.config, RECIPE_OVERRIDES))
            result["recipes_candidates"], _ = bench_candidates(old_spec, args.n_per_class)
    else:
        result["candidates"], candidates = bench_candidates(spec, args.n_per_class)
        candidate_seconds = sum(r["seconds"] for r in result["candidates"].values())
    result["labeller"] = bench_labeller(spec, candidates, candidate_seconds)
    result["gsparams"] = bench_gsparams(spec, [c.galaxy for c in candidates], args.repeats)
    result["simulate_dataset"] = bench_dataset(args.config, args.dataset_fraction, args.workers)
    if args.compare_recipes and spec.population == "continuous":
        result["simulate_dataset_recipes"] = bench_dataset(args.config, args.dataset_fraction, args.workers,
                                                           RECIPE_OVERRIDES, [args.workers])
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    return emit(result, args.out)


if __name__ == "__main__":
    main()
