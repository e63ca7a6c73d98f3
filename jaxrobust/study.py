"""`jaxrobust reproduce --seeds N`: N independent seeds of both arms on one dataset, and the findings.

    workdir/data/                  the dataset, simulated once with config.seed (or --data DIR)
    workdir/seed_K/{regular,da}/   seed K's runs: config run_seed = K varies initialisation,
                                   shuffling, dropout and the attack; the data draw stays fixed
    workdir/seed_K/report.md       seed K's own report (analysis of its two runs)
    workdir/findings.json          every metric across seeds, the claims' tests and verdicts (strict
                                   JSON: null with a reason where a value is not finite)
    workdir/report.md              Findings at the top, then links to the per-seed reports

Each seed is a `pipeline.reproduce` into its own folder, so a rerun resumes where it stopped:
finished seeds are skipped stage by stage, an interrupted training resumes from its checkpoint.
"""
from __future__ import annotations

import time
from pathlib import Path

from jaxrobust import config as config_lib
from jaxrobust import findings, io, pipeline, provenance, robustness


def seed_folder(workdir: Path, seed: int) -> Path:
    return Path(workdir) / f"seed_{seed}"


def seed_config(config, seed: int):
    """The config of one seed: same data (config.seed), training and attack seed `seed`."""
    return config_lib.copy_with(config, {"run_seed": int(seed)})


def run_study(config, workdir: Path, seeds: int, data_dir: Path | None = None, log=print) -> dict:
    """Runs seeds 0..seeds-1 of both arms (resumable), then writes findings.json and report.md."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = pipeline.ensure_dataset(config, workdir, data_dir, log)
    seed_dirs = []
    for seed in range(seeds):
        log(f"[study] seed {seed} of {seeds}: {seed_folder(workdir, seed)}")
        pipeline.reproduce(seed_config(config, seed), seed_folder(workdir, seed), data_dir, log)
        seed_dirs.append(seed_folder(workdir, seed))
    for seed_dir in seed_dirs[1:]:  # every seed trained on one dataset and attacked on the same images
        for _, folder in findings.ARMS:
            provenance.check_pair(seed_dirs[0] / folder, seed_dir / folder)
    result = findings.study_findings(seed_dirs, config.model.name, list(range(seeds)))
    result["seconds"] = round(time.perf_counter() - start, 1)
    findings.write_findings(result, workdir)
    io.atomic_write_bytes(workdir / "report.md", render_study_report(result, seed_dirs, workdir).encode())
    log(f"study of {seeds} seeds finished: {workdir / 'report.md'}")
    return result


def render_study_report(result: dict, seed_dirs: list[Path], workdir: Path) -> str:
    """report.md of a study: the Findings section first, then each seed's robustness and report."""
    parts = [f"# jaxrobust study: {result['model']}, regular vs DA, {len(seed_dirs)} seeds\n\n",
             "One simulated dataset; per seed, both arms trained, evaluated and attacked with that seed "
             "(config key `run_seed`). Our data differ from the paper's (TNG100), so levels differ; the "
             "verdicts test the directions.\n\n",
             findings.render_markdown(result), "\n## Per seed\n"]
    for seed, seed_dir in zip(result["seeds"], seed_dirs):
        parts.append(f"\n### Seed {seed}: [report]({Path(seed_dir).relative_to(workdir) / 'report.md'})\n\n")
        summaries = {name: robustness.load_summary(Path(seed_dir) / folder) for name, folder in findings.ARMS}
        if all(s is not None for s in summaries.values()):
            parts.append(robustness.render_markdown(summaries))
    return "".join(parts)
