"""Train, export and evaluate the ``wsi-ln-demo`` two-stage bundle on synthetic slides.

Usage::

    .venv/bin/python models/recipes/wsi_ln_demo/train.py --out models/wsi-ln-demo

Generates synthetic H&E lymph-node slides with ``dicomnode.synth.wsi`` (written as VL WSI
DICOM and read back through wsidicom), trains a small patch classifier (stage 1) and a
small U-Net (stage 2) on CPU, exports both with ``torch.onnx.export`` (dynamic batch),
evaluates them through ``dicomnode.inference.onnx.OnnxModel`` on held-out slides of other
seeds, and writes ``model.yaml`` (with sha256), ``metrics.json`` and ``MODEL_CARD.md``.
Trained on synthetic data only: NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from card import write_card, write_manifest
from data import classifier_samples, make_slide, segmenter_samples, slide_arrays
from evaluate import evaluate_slide, summarise
from nets import PatchClassifier, SmallUNet

from dicomnode.inference.manifest import load_bundle
from dicomnode.inference.onnx import OnnxModel

logger = logging.getLogger("wsi_ln_demo")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CLASSIFIER = {
    "file": "classifier.onnx",
    "input_name": "input",
    "output_name": "prob",
    "mpp": 2.0,
    "patch_size": 64,
    "mean": MEAN,
    "std": STD,
}
SEGMENTER = {
    "file": "segmenter.onnx",
    "input_name": "input",
    "output_name": "prob",
    "mpp": 4.0,
    "patch_size": 128,
    "output_mpp": 4.0,
    "mean": MEAN,
    "std": STD,
}
THRESHOLDS = {
    "gate_probability": 0.3,
    "tumour_probability": 0.5,
    "itc_max_mm": 0.2,
    "micro_max_mm": 2.0,
    "heatmap_bands": [0.5, 0.7, 0.9],
}


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → normalised NCHW float32, exactly as the ONNX adapter does."""
    x = (batch.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """Random rot90/flip (same for the batch; masks follow) and ±6 % brightness per sample."""
    k, flip, spatial = int(rng.integers(4)), bool(rng.integers(2)), y.ndim >= 3
    x = np.rot90(x, k, axes=(1, 2))
    y = np.rot90(y, k, axes=(1, 2)) if spatial else y
    if flip:
        x, y = x[:, :, ::-1], (y[:, :, ::-1] if spatial else y)
    scale = rng.uniform(0.94, 1.06, (len(x), 1, 1, 1))
    return np.clip(x * scale, 0, 255).astype(np.uint8), y


def crop(x: np.ndarray, y: np.ndarray, size: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random ``size``² crop of a batch of tiles and masks (the U-Net is fully convolutional)."""
    if size is None or size >= x.shape[1]:
        return x, y
    r, c = (int(v) for v in rng.integers(0, x.shape[1] - size + 1, 2))
    return x[:, r : r + size, c : c + size], y[:, r : r + size, c : c + size]


def fit(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch: int,
    loss_fn: Any,
    rng: np.random.Generator,
    lr: float,
    crop_size: int | None = None,
) -> float:
    """Train ``model`` with AdamW + cosine LR; return the last epoch's mean loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    for epoch in range(epochs):
        order, losses = rng.permutation(len(x)), []
        for i in range(0, len(x) - batch + 1, batch):
            xb, yb = crop(x[order[i : i + batch]], y[order[i : i + batch]], crop_size, rng)
            xb, yb = augment(xb, yb, rng)
            loss = loss_fn(model.logits(to_tensor(xb)), torch.from_numpy(np.ascontiguousarray(yb)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        logger.info("%s epoch %d/%d loss %.4f", type(model).__name__, epoch + 1, epochs, np.mean(losses))
    model.eval()
    return float(np.mean(losses))


def classifier_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on the patch label."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float())


def segmenter_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft Dice on the tumour mask."""
    t = target.float().unsqueeze(1)
    prob = torch.sigmoid(logits)
    inter = (prob * t).sum()
    soft_dice = 1 - (2 * inter + 1) / (prob.sum() + t.sum() + 1)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, t) + soft_dice


def export(model: torch.nn.Module, size: int, path: Path) -> None:
    """ONNX export, opset 18, dynamic batch axis, input ``input`` / output ``prob``."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (torch.rand(2, 3, size, size),),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["prob"],
        dynamic_shapes=({0: batch},),
    )
    program.save(str(path))


def build_sets(slides: list[Any], rng: np.random.Generator, n_clf: int, n_seg: int) -> dict[str, np.ndarray]:
    """Classifier patches/labels and segmenter tiles/masks from the training slides."""
    parts: dict[str, list[np.ndarray]] = {"cx": [], "cy": [], "sx": [], "sy": []}
    for slide in slides:
        cx, cy = classifier_samples(slide_arrays(slide, CLASSIFIER["mpp"]), CLASSIFIER["patch_size"], n_clf, rng)
        sx, sy = segmenter_samples(slide_arrays(slide, SEGMENTER["mpp"]), SEGMENTER["patch_size"], n_seg, rng)
        for key, val in zip(("cx", "cy", "sx", "sy"), (cx, cy, sx, sy), strict=True):
            parts[key].append(val)
    sets = {k: np.concatenate(v) for k, v in parts.items()}
    logger.info(
        "classifier: %d patches (%d positive); segmenter: %d tiles",
        len(sets["cx"]),
        int(sets["cy"].sum()),
        len(sets["sx"]),
    )
    return sets


def evaluate_bundle(out: Path, slides: list[Any]) -> dict[str, Any]:
    """Load the written bundle like the node does and measure it on held-out slides."""
    bundle = load_bundle(out)
    clf = OnnxModel(bundle.path("classifier.onnx"), bundle.input["classifier"])
    seg = OnnxModel(bundle.path("segmenter.onnx"), bundle.input["segmenter"])
    results = [
        evaluate_slide(clf, seg, slide_arrays(s, clf.mpp), slide_arrays(s, seg.mpp), bundle.thresholds) for s in slides
    ]
    return summarise(results, float(bundle.thresholds["gate_probability"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--work", type=Path, default=Path("/tmp/wsi_ln_work"), help="slide cache")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[1001, 1002, 1003, 1004, 1005])
    p.add_argument("--train-negative-seeds", type=int, nargs="*", default=[1006])
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[2001, 2002, 2003, 2004, 2006])
    p.add_argument("--eval-negative-seeds", type=int, nargs="*", default=[2005, 2007, 2008])
    p.add_argument("--size-mm", type=float, default=3.0, help="slide edge in mm")
    p.add_argument("--epochs", type=int, default=3, help="classifier epochs (segmenter: +2)")
    p.add_argument("--card-only", action="store_true", help="only rewrite MODEL_CARD.md from metrics.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: shared CPUs)")
    return p.parse_args(argv)


def _slides(work: Path, pos: list[int], neg: list[int], size_mm: float) -> list[Any]:
    return [make_slide(work, s, size_mm, False) for s in pos] + [make_slide(work, s, size_mm, True) for s in neg]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if args.card_only:
        write_card(args.out, json.loads((args.out / "metrics.json").read_text()), CLASSIFIER, SEGMENTER, THRESHOLDS)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train = _slides(args.work, args.train_seeds, args.train_negative_seeds, args.size_mm)
    held_out = _slides(args.work, args.eval_seeds, args.eval_negative_seeds, args.size_mm)
    sets = build_sets(train, rng, n_clf=1200, n_seg=240)
    t1 = time.time()
    clf, seg = PatchClassifier(), SmallUNet()
    fit(clf, sets["cx"], sets["cy"], args.epochs, 64, classifier_loss, rng, 3e-3)
    t2 = time.time()
    fit(seg, sets["sx"], sets["sy"], args.epochs + 2, 8, segmenter_loss, rng, 3e-3, crop_size=64)
    t3 = time.time()
    export(clf, CLASSIFIER["patch_size"], args.out / "classifier.onnx")
    export(seg, SEGMENTER["patch_size"], args.out / "segmenter.onnx")
    write_manifest(args.out, CLASSIFIER, SEGMENTER, THRESHOLDS)
    metrics = evaluate_bundle(args.out, held_out)
    metrics["training"] = {
        "train_seeds": args.train_seeds,
        "train_negative_seeds": args.train_negative_seeds,
        "eval_seeds": args.eval_seeds,
        "eval_negative_seeds": args.eval_negative_seeds,
        "slide_size_mm": args.size_mm,
        "epochs": args.epochs,
        "threads": args.threads,
        "classifier_patches": int(len(sets["cx"])),
        "segmenter_tiles": int(len(sets["sx"])),
        "classifier_params": sum(p.numel() for p in clf.parameters()),
        "segmenter_params": sum(p.numel() for p in seg.parameters()),
        "data_s": round(t1 - t0, 1),
        "classifier_train_s": round(t2 - t1, 1),
        "segmenter_train_s": round(t3 - t2, 1),
        "total_s": round(time.time() - t0, 1),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    write_card(args.out, metrics, CLASSIFIER, SEGMENTER, THRESHOLDS)
    logger.info("done: %s", json.dumps({k: v for k, v in metrics.items() if k != "per_slide"}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
