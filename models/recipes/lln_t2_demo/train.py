"""Train the synthetic lateral-lymph-node demo model and write the ``lln-t2-demo`` bundle.

Usage (from the repository root)::

    .venv/bin/python models/recipes/lln_t2_demo/train.py --out models/lln-t2-demo

Steps: synthetic cases → nnU-Net raw dataset (temp dir) → plan + preprocess → tiny plan →
short training (``nnUNetTrainer_LLNDemo``, CPU) → slim checkpoint → bundle with
``model.yaml`` (sha256 of every file) → held-out evaluation through
``dicomnode.inference.nnunet.NnUNetRunner`` → ``MODEL_CARD.md``. Synthetic, NOT FOR
CLINICAL USE.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

logger = logging.getLogger("lln_t2_demo.train")

TRAIN_SEEDS = range(1000, 1024)
VAL_SEEDS = range(2000, 2004)
TEST_SEEDS = range(9000, 9012)
#: Validation cases of each fold; a fold trains on the other 24 of the 28 cases. Fold 0 keeps
#: the split the bundle was first trained with; later folds hold out other training seeds,
#: as nnU-Net's cross-validation does, so their ensemble is a (small) 5-fold-style ensemble.
FOLD_VAL_SEEDS = {0: VAL_SEEDS, 1: range(1020, 1024)}
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlansTiny"


def _set_env(work: Path) -> None:
    """nnU-Net reads its folders at import: set them before importing it."""
    for name in ("raw", "preprocessed", "results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        os.environ[f"nnUNet_{name}"] = str(work / name)
    os.environ.update(nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1", nnUNet_compile="f")


def _plan_and_preprocess(dataset_id: int) -> None:
    exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    cmd = [str(exe), "-d", str(dataset_id), "-c", CONFIGURATION, "-np", "1", "-npfp", "1"]
    logger.info("running %s", " ".join(cmd))
    # The planner calls torch.set_num_threads(nnUNet_n_proc_DA): 0 (right for training) fails.
    env = dict(os.environ, nnUNet_n_proc_DA="1")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)


def _tiny_plans(pp: Path, patch: list[int], bundle_plans: Path | None = None) -> dict:
    """CPU-sized 4-stage U-Net (features 8/16/32/64) reusing the preprocessed data.

    ``bundle_plans``: the plans of folds already in the bundle. Another fold must be trained
    with exactly these (same network, same preprocessing) or the folds cannot be ensembled.
    """
    if bundle_plans is not None and bundle_plans.is_file():
        plans = json.loads(bundle_plans.read_text())
        (pp / f"{PLANS}.json").write_text(json.dumps(plans, indent=1))
        return plans
    plans = json.loads((pp / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    conf = plans["configurations"][CONFIGURATION]  # keeps data_identifier → same data
    conf["patch_size"] = patch
    conf["batch_size"] = 2
    arch = conf["architecture"]["arch_kwargs"]
    arch.update(
        n_stages=4,
        features_per_stage=[8, 16, 32, 64],
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        n_conv_per_stage=[2, 2, 2, 2],
        n_conv_per_stage_decoder=[2, 2, 2],
    )
    plans["configurations"] = {CONFIGURATION: conf}
    (pp / f"{PLANS}.json").write_text(json.dumps(plans, indent=1))
    return plans


def _splits() -> list[dict[str, list[str]]]:
    """nnU-Net ``splits_final.json``: one train/val split per fold of ``FOLD_VAL_SEEDS``."""
    every = [*TRAIN_SEEDS, *VAL_SEEDS]
    ids = lambda seeds: [f"lln_{s:05d}" for s in seeds]  # noqa: E731
    return [
        {"train": ids(s for s in every if s not in FOLD_VAL_SEEDS[f]), "val": ids(FOLD_VAL_SEEDS[f])}
        for f in sorted(FOLD_VAL_SEEDS)
    ]


def _train(pp: Path, plans: dict, threads: int, fold: int) -> tuple[Path, dict[str, float]]:
    import torch
    from trainer import nnUNetTrainer_LLNDemo

    (pp / "splits_final.json").write_text(json.dumps(_splits(), indent=1))
    torch.set_num_threads(threads)
    torch.manual_seed(fold)
    plans = dict(plans, continue_training=False)  # nnU-Net 2.8 pops this key
    dataset_json = json.loads((pp / "dataset.json").read_text())
    trainer = nnUNetTrainer_LLNDemo(
        plans=plans, configuration=CONFIGURATION, fold=fold, dataset_json=dataset_json,
        device=torch.device("cpu"),
    )  # fmt: skip
    trainer.run_training()
    log = {k: trainer.logger.get_value(k, step=None) for k in ("train_losses", "val_losses")}
    log["epochs_run"] = trainer.current_epoch
    log["dice"] = trainer.logger.get_value("dice_per_class_or_region", step=None)
    final = {
        "epochs_run": log["epochs_run"],
        "final_train_loss": round(float(log["train_losses"][-1]), 4),
        "final_val_loss": round(float(log["val_losses"][-1]), 4),
        "final_val_pseudo_dice_per_label": [round(float(v), 3) for v in log["dice"][-1]],
    }
    return Path(trainer.output_folder_base), final


def _slim(results: Path, dest: Path, fold: int) -> None:
    """Copy dataset/plans and keep only what nnUNetPredictor needs from the checkpoint.

    Raises
    ------
    SystemExit
        ``dest`` already holds other folds whose dataset.json/plans.json differ.
    """
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "plans.json"):
        new = json.loads((results / name).read_text())
        if (dest / name).is_file() and json.loads((dest / name).read_text()) != new:
            raise SystemExit(f"{results / name} differs from {dest / name}: folds could not be ensembled")
        if not (dest / name).is_file():
            shutil.copy(results / name, dest / name)
    full = torch.load(results / f"fold_{fold}" / "checkpoint_final.pth", weights_only=False)
    keep = ("network_weights", "init_args", "trainer_name", "inference_allowed_mirroring_axes")
    slim = {k: full[k] for k in keep}
    # Same network builder as the registered ancestor, so stock nnU-Net finds it by name.
    slim["trainer_name"] = "nnUNetTrainerNoMirroring"
    slim["init_args"] = dict(slim["init_args"], device="cpu")
    target = dest / f"fold_{fold}" / "checkpoint_final.pth"
    target.parent.mkdir(exist_ok=True)
    torch.save(slim, target)
    torch.load(target, weights_only=True)  # must pass


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--work", type=Path, help="nnU-Net work folder (default: temp)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iters", type=int, default=50, help="iterations per epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fold", type=int, default=0, choices=sorted(FOLD_VAL_SEEDS),
                        help="fold to train; written beside the folds already in --out")
    parser.add_argument("--max-minutes", type=float, help="stop training after this budget")
    parser.add_argument("--reuse-preprocessed", action="store_true", help="skip data + planning (same --work)")
    parser.add_argument("--patch", type=int, nargs=3, default=[24, 64, 64])
    parser.add_argument("--evaluate-only", action="store_true", help="re-evaluate the bundle in --out, no training")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the whole recipe; returns a process exit code."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = args.work or Path(tempfile.mkdtemp(prefix="lln-t2-demo-"))
    _set_env(work)
    os.environ.update(LLN_DEMO_EPOCHS=str(args.epochs), LLN_DEMO_ITERS=str(args.iters))
    if args.max_minutes:
        os.environ["LLN_DEMO_MAX_MINUTES"] = str(args.max_minutes)
    from data import DATASET_ID, DATASET_NAME, write_raw_dataset

    if args.evaluate_only:
        return _evaluate(args, _read_runs(args.out))
    t0 = time.perf_counter()
    if not args.reuse_preprocessed:
        write_raw_dataset(work / "raw", list(TRAIN_SEEDS) + list(VAL_SEEDS))
        _plan_and_preprocess(DATASET_ID)
    pp = work / "preprocessed" / DATASET_NAME
    plans = _tiny_plans(pp, list(args.patch), args.out / "nnunet" / "plans.json" if args.fold else None)
    t1 = time.perf_counter()
    prep = "reused" if args.reuse_preprocessed else round(t1 - t0, 1)
    results, final = _train(pp, plans, args.threads, args.fold)
    t2 = time.perf_counter()
    _slim(results, args.out / "nnunet", args.fold)
    fold_val = FOLD_VAL_SEEDS[args.fold]
    run = {
        "epochs": args.epochs, "iterations_per_epoch": args.iters, "patch_size": args.patch,
        "train_cases": len(TRAIN_SEEDS) + len(VAL_SEEDS) - len(fold_val), "val_cases": len(fold_val),
        "data_and_preprocessing_s": prep, "training_s": round(t2 - t1, 1),
        "train_seeds": _seed_text(s for s in [*TRAIN_SEEDS, *VAL_SEEDS] if s not in fold_val),
        "val_seeds": _seed_text(fold_val),
        "test_seeds": f"{TEST_SEEDS.start}-{TEST_SEEDS.stop - 1}",
        **final,
    }  # fmt: skip
    runs = _read_runs(args.out)
    runs[f"fold_{args.fold}"] = run
    (args.out / "training_run.json").write_text(json.dumps(runs, indent=1))
    return _evaluate(args, runs)


def _seed_text(seeds: Iterable[int]) -> str:
    """``1000-1019, 2000-2003``: runs of consecutive seeds."""
    runs: list[list[int]] = []
    for seed in sorted(seeds):
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _read_runs(out: Path) -> dict[str, dict]:
    """``training_run.json`` by fold (a file from a one-fold recipe counts as fold 0)."""
    path = out / "training_run.json"
    if not path.is_file():
        return {}
    runs = json.loads(path.read_text())
    return runs if all(k.startswith("fold_") for k in runs) else {"fold_0": runs}


def _evaluate(args: argparse.Namespace, runs: dict[str, dict]) -> int:
    from bundle import write_bundle, write_card
    from evaluate import evaluate, metrics

    from dicomnode.inference.nnunet import NnUNetRunner

    bundle = write_bundle(args.out)
    tally = evaluate(NnUNetRunner(bundle, device="cpu", threads=args.threads), list(TEST_SEEDS))
    write_card(args.out, metrics(tally), runs)
    (args.out / "evaluation.json").write_text(json.dumps(metrics(tally), indent=1))
    logger.info("bundle written to %s; metrics %s", args.out, metrics(tally))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
