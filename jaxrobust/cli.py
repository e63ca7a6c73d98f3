"""The `jaxrobust` command line. Each subcommand is a thin shell over a library function.

    jaxrobust simulate  --config configs/quick.py --out data/quick
    jaxrobust train     --config configs/quick.py --data data/quick --workdir runs/reg [--da]
    jaxrobust evaluate  --workdir runs/reg
    jaxrobust attack    --workdir runs/reg
    jaxrobust scan      --workdir runs/reg [--colours corners|minmax|grid:K|FILE] [--images N]
    jaxrobust certify   --workdir runs/reg [--images N] [--budget BOXES] [--bounds linear|interval]
    jaxrobust analyze   --workdir runs/reg --compare runs/da
    jaxrobust reproduce --config configs/quick.py --workdir runs/quick
    jaxrobust bench     attack --quick

Config overrides go after the options as dotted key=value pairs, e.g.
`jaxrobust train ... train.epochs=5 train.learning_rate=1e-4`.

The package is imported inside the commands, not at the top: `hostmem.keep_freed_memory()` must
run before JAX starts its threads, and `jaxrobust --help` then answers without loading JAX.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """How robust is my galaxy classifier? jaxrobust re-creates the DeepAdversaries study
(Ciprijanovic et al. 2022) in JAX: simulated LSST-like galaxy images at two noise levels (Y10,
Y1), ConvNet/ResNet18 classifiers trained with and without domain adaptation, one-pixel attacks,
and the latent-space robustness analysis. Start with `jaxrobust reproduce` (the whole study on
a small simulated dataset, minutes on a laptop)."""

DATA_HELP = ("dataset folder, recognised by content: one written by `jaxrobust simulate`, the paper's "
             "Zenodo .npy files (images_Y10_train.npy ...), or a TFDS dataset from jaxrobust.data.tfds")
OVERRIDES_HELP = "config overrides as dotted key=value pairs, e.g. train.epochs=5 attack.population=100"


def _add_run_and_data(p) -> None:
    """--workdir (a trained run), --data (default: the run's own dataset) and --force."""
    p.add_argument("--workdir", required=True, type=Path, help="a training run folder")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: the one the run trained on)")
    p.add_argument("--force", action="store_true",
                   help="use --data even though it is not the dataset the run was trained on")


def _add_config(p, default="quick"):
    p.add_argument("--config", default=default,
                   help="config file (configs/*.py) or bundled name: quick, medium, paper_convnet, paper_resnet18 "
                        f"(default: {default})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxrobust", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one-line explanation")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() first (multi-host runs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("simulate", help="simulate an LSST-like Y10/Y1 dataset with GalSim",
                       description="Draw galaxies with GalSim in g, r, i (electrons), observe each at Y10 "
                                   "and Y1 depth, label by Gini-M20, augment mergers, split 70:10:20 and "
                                   "write the paper's Zenodo layout plus metadata and preview figures.")
    _add_config(p)
    p.add_argument("--out", required=True, type=Path, help="output folder for the dataset")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a complete dataset already in --out (runs trained on it then refuse it)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: config data.workers, 0 = all cores)")

    p = sub.add_parser("train", help="train a model (regular, or with domain adaptation via --da)",
                       description="Train config.model on the Y10 training split; with --da (or "
                                   "train.da_loss=mmd) add the MMD between Y10 and Y1 latents, with "
                                   "--da-loss coral the CORAL loss. "
                                   "Writes config.json, metrics.jsonl, checkpoints/ and figures/.")
    _add_config(p)
    p.add_argument("--data", required=True, type=Path, help=DATA_HELP)
    p.add_argument("--workdir", required=True, type=Path, help="run folder to write")
    da = p.add_mutually_exclusive_group()
    da.add_argument("--da", action="store_true", help="domain adaptation with the paper's MMD (same as train.da_loss=mmd)")
    da.add_argument("--da-loss", metavar="NAME", default=None,
                    help="the domain-adaptation loss: none, mmd or coral (same as train.da_loss=NAME)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --workdir, removing its checkpoints, evaluation, attack and report")

    p = sub.add_parser("evaluate", help="test-set metrics (paper Tables 2/4), predictions and latents",
                       description="Restore the best checkpoint of a run, predict the Y10 and Y1 test sets, "
                                   "write evaluation.json, predictions.npz, latents.npz and confusion matrices.")
    _add_run_and_data(p)

    p = sub.add_parser("attack", help="one-pixel attack on the test subsample (paper protocol)",
                       description="Differential-evolution one-pixel attack of every correctly classified "
                                   "Y10 image of the seeded test subsample, towards each other class in turn. "
                                   "Writes attack.npz and attack.json into the run folder.")
    _add_run_and_data(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="attack overrides, e.g. attack.population=100 attack.n_images=10 attack.evaluator=full")

    p = sub.add_parser("scan", help="exhaustive one-pixel scan: every pixel x a colour set, the DE attack's ground truth",
                       description="Score every pixel position x every colour of a set with the run's best model, "
                                   "exactly (the attack's evaluators), on the images `attack` uses (the first "
                                   "scan.n_images of them), and write per-image vulnerability maps to scan.npz and "
                                   "the counts to scan.json. An interrupted scan resumes where it stopped.")
    _add_run_and_data(p)
    p.add_argument("--colours", default=None,
                   help="corners (the 8 RGB-cube corners), minmax (each image's per-band min/max, 8 colours), "
                        "grid:K (K^3 colours, K >= 2) or a .npy/.txt file of N x 3 colours in [0, 1] "
                        "(default: config scan.colours, corners)")
    p.add_argument("--images", type=int, default=None,
                   help="scan the first N images of the attack subsample (default: scan.n_images; at most "
                        "attack.n_images)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="attack/scan overrides, e.g. attack.evaluator=full attack.chunk_candidates=800")

    p = sub.add_parser("certify", help="one-pixel certificates: prove no pixel, at any colour, flips an image",
                       description="For each of the first certify.n_images images of the attack subsample and "
                                   "each pixel, decide over the whole colour box [0, 1]^3 (stretched units) by "
                                   "branch and bound: certified (a proof that no colour changes the class), "
                                   "flippable (a colour that does, confirmed by a full forward pass) or undecided "
                                   "(the budget ran out); then the certified one-pixel radius of each image. "
                                   "Writes certify.npz and certify.json; an interrupted run resumes. ConvNet only.")
    _add_run_and_data(p)
    p.add_argument("--images", type=int, default=None,
                   help="certify the first N images of the attack subsample (default: certify.n_images; at most "
                        "attack.n_images)")
    p.add_argument("--budget", type=int, default=None,
                   help="boxes bounded per pixel before it is undecided (default: certify.max_boxes)")
    p.add_argument("--bounds", choices=("linear", "interval"), default=None,
                   help="linear relaxations (default) or interval bounds (certify.bounds)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="certify overrides, e.g. certify.radius=False certify.radius_tolerance=0.01")

    p = sub.add_parser("analyze", help="latent distances, JS distance, church windows, isomaps, report.md",
                       description="Analyse one run, or a regular run against a DA run (--compare), and "
                                   "write analysis.json, figures/ and report.md.")
    p.add_argument("--workdir", required=True, type=Path, help="a run folder (evaluated and attacked)")
    p.add_argument("--compare", type=Path, default=None, help="the other run (regular vs DA) to compare with")
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default: --workdir)")

    p = sub.add_parser("reproduce", help="the whole study: simulate, train reg + DA, evaluate, attack, analyze",
                       description="Run every stage into --workdir; stages whose outputs exist and are "
                                   "current are skipped, so a rerun resumes after an interruption.")
    _add_config(p)
    p.add_argument("--workdir", required=True, type=Path, help="output folder of the study")
    p.add_argument("--data", type=Path, default=None, help=f"use this dataset instead of simulating one: {DATA_HELP}")
    p.add_argument("--seeds", type=int, default=None,
                   help="run N seeds of both arms on one dataset (workdir/seed_K, config run_seed=K) and write "
                        "findings.json and a report.md whose Findings section gives each claim a verdict")

    p = sub.add_parser("bench", help="benchmarks (JSON): simulate, train, attack, scan, certify",
                       description="Run scripts/bench_<what>.py from a source checkout; extra arguments "
                                   "are passed through (e.g. --quick).")
    p.add_argument("what", choices=("simulate", "train", "attack", "scan", "certify"))
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark script")
    return parser


def _data_dir(args, config) -> Path:
    if args.data is not None:
        return args.data
    source = config.data.source
    if source in ("", "simulate"):
        raise SystemExit("error: the run does not record its dataset; pass --data DIR")
    return Path(source)


COMPILATION_CACHE_ENV = "JAXROBUST_COMPILATION_CACHE"


def enable_compilation_cache() -> Path | None:
    """JAX's persistent compilation cache for command-line runs: a second run does not recompile.

    The folder is $JAXROBUST_COMPILATION_CACHE when it names one, else
    $XDG_CACHE_HOME/jaxrobust/jax (~/.cache/jaxrobust/jax); JAXROBUST_COMPILATION_CACHE=0 turns
    it off. JAX keeps programs that took at least a second to compile (its default), keyed by
    the program, the JAX/XLA version and the device, so a stale entry is never used.
    """
    import os

    setting = os.environ.get(COMPILATION_CACHE_ENV, "").strip()
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = Path(setting).expanduser() if setting not in ("", "1") else home_cache / "jaxrobust" / "jax"
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from jaxrobust import hostmem

    hostmem.keep_freed_memory()  # before JAX starts its threads: see jaxrobust/hostmem.py
    enable_compilation_cache()
    from jaxrobust import config as config_lib
    from jaxrobust.data import DataError

    if args.distributed:
        from jaxrobust import parallel

        parallel.initialize_distributed()
        if not parallel.is_main_process():  # one lock per command: process 0 holds the folders
            from jaxrobust import provenance

            provenance.FOLLOWER = True
    try:
        return _dispatch(args, config_lib)
    except KeyboardInterrupt:  # a sentence, not a traceback: what was kept and how to go on
        print(f"error: interrupted (Ctrl-C); {_interrupted_note(args)}", file=sys.stderr)
        return 130
    except Exception as err:  # the one place failures become sentences (jaxrobust/errors.py)
        from jaxrobust import errors

        message = None if args.debug else errors.describe(err)
        if message is None:  # a bug, or --debug: the traceback
            raise
        print(f"error: {message}", file=sys.stderr)
        # orbax's background threads and finalizers may still report the same failure as
        # "Exception ignored in ... Traceback" lines at exit: the sentence above already said it
        sys.unraisablehook = lambda unraisable: None
        return 2
    finally:
        from jaxrobust import provenance

        provenance.release_all()  # the folders this command took (provenance.lock_folder)


def _interrupted_note(args) -> str:
    """What an interrupted command left, and how to go on (every file is written atomically)."""
    if args.command == "train":
        return (f"{args.workdir} keeps its epochs up to the last checkpoint; continue with `jaxrobust train "
                f"--workdir {args.workdir} --data {args.data} --resume` and the same config and overrides")
    if args.command == "reproduce":
        return "rerun the same `jaxrobust reproduce` command: finished stages are skipped, training resumes"
    if args.command == "scan":
        return f"rerun `jaxrobust scan --workdir {args.workdir}`: it resumes from the images already scanned"
    if args.command == "certify":
        return f"rerun `jaxrobust certify --workdir {args.workdir}`: it resumes from the images already decided"
    if args.command == "simulate":
        return f"the dataset in {args.out} is incomplete; rerun `jaxrobust simulate` with the same config to redo it"
    return "nothing was half written; rerun the command"


def _dispatch(args, config_lib) -> int:
    from jaxrobust import provenance

    if args.command == "simulate":
        from jaxrobust import pipeline
        from jaxrobust.data import simulate

        config = config_lib.load_config(args.config, args.overrides)
        if args.workers is not None and args.workers < 0:
            raise config_lib.ConfigError(f"--workers must be >= 0 (0 = all cores), got {args.workers}")
        provenance.claim_dataset_dir(args.out, overwrite=args.overwrite)
        info = simulate.simulate_dataset(config, args.out, workers=args.workers)
        if config.data.preview:
            pipeline.write_dataset_figures(args.out)
        print(f"wrote {args.out}: {info['images_per_split']} images per split (spiral, elliptical, merger); "
              f"{info['simulation_seconds']:.0f} s; rejection rate {info['rejection_rate']}")
    elif args.command == "train":
        from jaxrobust import report, train
        from jaxrobust.data import load_prepared

        da_loss = "mmd" if args.da else args.da_loss
        overrides = list(args.overrides) + ([f"train.da_loss={da_loss}"] if da_loss is not None else [])
        overrides.append(f"data.source='{args.data.resolve()}'")
        config = config_lib.load_config(args.config, overrides)
        provenance.claim_run_dir(args.workdir, resume=args.resume, overwrite=args.overwrite)
        summary = train.train_and_evaluate(config, args.workdir, load_prepared(args.data, config), resume=args.resume)
        report.write_run_figures(args.workdir)
        print(f"best validation accuracy {summary.get('best_val_acc_y10', float('nan')):.3f} "
              f"at epoch {summary.get('best_epoch', -1) + 1}; run in {args.workdir}")
    elif args.command == "evaluate":
        from jaxrobust import evaluate, report
        from jaxrobust.data import load_prepared

        config = config_lib.read_run_config(args.workdir)
        provenance.check_writable(args.workdir, "--workdir")
        provenance.lock_folder(args.workdir, "evaluate")  # one writer at a time
        data = load_prepared(_data_dir(args, config), config)
        provenance.check_data(args.workdir, data, force=args.force)
        results = evaluate.evaluate_run(args.workdir, data)
        report.write_run_figures(args.workdir)
        print(evaluate.metrics_table({"run": results}))
    elif args.command == "attack":
        from jaxrobust import attack
        from jaxrobust.data import load_prepared

        config = config_lib.run_overrides(config_lib.read_run_config(args.workdir), args.overrides, ("attack",), "attack")
        provenance.check_writable(args.workdir, "--workdir")  # before the attack, not after it
        provenance.lock_folder(args.workdir, "attack")
        data = load_prepared(_data_dir(args, config), config)
        provenance.check_data(args.workdir, data, force=args.force)
        attack.attack_run(args.workdir, data, config)
    elif args.command == "scan":
        from jaxrobust import scan
        from jaxrobust.data import load_prepared

        config = config_lib.run_overrides(config_lib.read_run_config(args.workdir), args.overrides,
                                          ("attack", "scan"), "scan")
        provenance.check_writable(args.workdir, "--workdir")
        provenance.lock_folder(args.workdir, "scan")
        data = load_prepared(_data_dir(args, config), config)
        provenance.check_data(args.workdir, data, force=args.force)
        scan.scan_run(args.workdir, data, config, colours=args.colours, n_images=args.images)
    elif args.command == "certify":
        from jaxrobust import certify
        from jaxrobust.data import load_prepared

        overrides = list(args.overrides)
        overrides += [f"certify.max_boxes={args.budget}"] if args.budget is not None else []
        overrides += [f"certify.bounds={args.bounds}"] if args.bounds is not None else []
        config = config_lib.run_overrides(config_lib.read_run_config(args.workdir), overrides, ("certify",), "certify")
        provenance.check_writable(args.workdir, "--workdir")
        provenance.lock_folder(args.workdir, "certify")
        data = load_prepared(_data_dir(args, config), config)
        provenance.check_data(args.workdir, data, force=args.force)
        certify.certify_run(args.workdir, data, config, n_images=args.images)
    elif args.command == "analyze":
        from jaxrobust import checkpoint, report

        runs = [args.workdir] + ([args.compare] if args.compare else [])
        for run in runs:  # every derived file from the run's current best checkpoint
            source = provenance.checkpoint_source(run, checkpoint.read_meta(run, "best"))
            provenance.check_outputs(run, source, required=("evaluate", "attack"))
        if args.out is not None:
            provenance.check_folder(args.out, "--out")
        provenance.lock_folder(args.out or args.workdir, "analyze")
        report.analyze(runs, out_dir=args.out)
    elif args.command == "reproduce":
        from jaxrobust import pipeline

        config = config_lib.load_config(args.config, args.overrides)
        provenance.check_folder(args.workdir, "--workdir")
        provenance.lock_folder(args.workdir, "reproduce")  # and each run folder as it is worked on
        if args.seeds is not None:
            from jaxrobust import study

            study.run_study(config, args.workdir, args.seeds, args.data)
        else:
            pipeline.reproduce(config, args.workdir, args.data)
    elif args.command == "bench":
        return _bench(args)
    return 0


def _bench(args) -> int:
    import runpy

    script = Path(__file__).resolve().parent.parent / "scripts" / f"bench_{args.what}.py"
    if not script.exists():
        raise SystemExit(f"error: {script} not found; benchmarks run from a source checkout")
    sys.argv = [str(script)] + list(args.args)
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
