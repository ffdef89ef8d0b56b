"""Write the bundle's ``model.yaml`` and ``MODEL_CARD.md`` (measured numbers only)."""

# ruff: noqa: E501  (the card template holds Markdown table rows that cannot be wrapped)

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dicomnode.inference.manifest import sha256_file

INTENDED_USE = (
    "Demonstration of the dicomnode wsi-two-stage pipeline (patch classifier gating a "
    "segmenter) on synthetic H&E lymph-node slides. Trained on synthetic data only. "
    "NOT FOR CLINICAL USE."
)


def write_manifest(out: Path, clf: Mapping[str, Any], seg: Mapping[str, Any], thresholds: Mapping[str, Any]) -> None:
    """``model.yaml`` in the fixed ``wsi-two-stage`` schema, hashes of the ONNX files."""
    manifest = {
        "id": "wsi-ln-demo",
        "version": "0.1.0",
        "task": "wsi-two-stage",
        "backend": "onnx",
        "not_for_clinical_use": True,
        "intended_use": INTENDED_USE,
        "model_card": "MODEL_CARD.md",
        "files": [{"path": name, "sha256": sha256_file(out / name)} for name in (clf["file"], seg["file"])],
        "input": {"classifier": dict(clf), "segmenter": dict(seg)},
        "labels": {"tumour": {"code": "14799000", "scheme": "SCT", "meaning": "Neoplasm, Secondary"}},
        "thresholds": dict(thresholds),
        "requirements": {"modality": "SM", "illumination": "brightfield", "base_mpp": [0.1, 2.04],
                         "photometric": ["RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"],
                         "min_tissue_mm2": 0.25},
    }
    header = (
        "# wsi-ln-demo: written by models/recipes/wsi_ln_demo/train.py. "
        "Synthetic training data, NOT FOR CLINICAL USE.\n"
    )
    manifest = json.loads(json.dumps(manifest))  # no shared lists, so no YAML anchors
    text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=100)
    (out / "model.yaml").write_text(header + text)


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _per_slide(metrics: Mapping[str, Any]) -> str:
    rows = [
        "| seed | tumour | deposits (class, mm, detected) | Dice two-stage | Dice full | "
        "predicted positive | FP components (all / ≥ 0.001 mm²) | segmenter tiles run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in metrics["per_slide"]:
        deps = (
            ", ".join(
                f"{d['category']} {d['diameter_mm']:.2f} {'yes' if d['detected'] else 'NO'}" for d in r["deposits"]
            )
            or "none"
        )
        rows.append(
            f"| {r['seed']} | {r['tumour']} | {deps} | {_fmt(r['dice_two_stage'])} | "
            f"{_fmt(r['dice_full'])} | {r['predicted_positive']} | "
            f"{r['false_positive_components']} / {r['false_positive_components_large']} | {r['tiles_run']}/{r['tiles_total']} |"
        )
    return "\n".join(rows)


_SITE_MODELS = """
## Using a site's own models (no code change)

The pipeline reads everything it needs from `model.yaml`: file names, input/output names,
µm/px, patch size, normalisation and thresholds. To run a site's ResNet50 classifier
(e.g. trained like the breast SLN study: 90×90 px at 0.5 µm/px) and its own segmenter:

```python
import torch, torchvision

clf = torchvision.models.resnet50(num_classes=1)
clf.load_state_dict(torch.load("resnet50_sln.pth", weights_only=True))
# probabilities inside the graph: the manifest promises `prob` in [0, 1]
clf = torch.nn.Sequential(clf, torch.nn.Sigmoid(), torch.nn.Flatten(0)).eval()
batch = torch.export.Dim("batch", min=1, max=4096)
torch.onnx.export(clf, (torch.rand(2, 3, 90, 90),), dynamo=True, opset_version=18,
                  input_names=["input"], output_names=["prob"],
                  dynamic_shapes=({0: batch},)).save("models/site-ln/classifier.onnx")
# segmenter: any network mapping (N, 3, S, S) RGB to (N, 1, S', S') probabilities,
# exported the same way to models/site-ln/segmenter.onnx
```

Then copy this folder's `model.yaml` to `models/site-ln/`, change `id`, `version`,
`intended_use`, the `input.classifier` / `input.segmenter` numbers (`mpp: 0.5`,
`patch_size: 90`, the `mean`/`std` the network was trained with, the segmenter's
`output_mpp`), the thresholds, and each file's `sha256` (`sha256sum *.onnx`), write a
`MODEL_CARD.md`, and point the route's `model` at the new id. The node checks the hashes
and that each graph's input name, `NCHW` shape (`3 × patch_size × patch_size`) and float32
dtype match the manifest at start-up, and refuses the bundle with a message naming the
file and the mismatch otherwise. Inputs are RGB scaled to 0..1, then `(x − mean) / std`.
"""


def write_card(
    out: Path,
    m: Mapping[str, Any],
    clf: Mapping[str, Any],
    seg: Mapping[str, Any],
    th: Mapping[str, Any],
) -> None:
    """``MODEL_CARD.md`` with the measured held-out numbers from ``metrics.json``."""
    t = m["training"]
    g, h = m["patch_at_gate"], m["patch_at_0.5"]
    text = f"""# wsi-ln-demo 0.1.0 — model card

**NOT FOR CLINICAL USE.** Demonstration models for the `wsi-two-stage` pipeline, trained
and evaluated **only on synthetic slides** from `dicomnode.synth.wsi`. The numbers below
say the pipeline's plumbing works end to end; they say nothing about real tissue.

## Models

| stage | file | network | input | output | params |
| --- | --- | --- | --- | --- | --- |
| 1 classifier (gate) | `{clf["file"]}` | strided stem + 3 conv/pool stages, GAP, sigmoid | RGB {clf["patch_size"]}² px at {clf["mpp"]} µm/px | `prob` (N,) | {t["classifier_params"]:,} |
| 2 segmenter | `{seg["file"]}` | 3-level U-Net, sigmoid | RGB {seg["patch_size"]}² px at {seg["mpp"]} µm/px | `prob` (N,1,{seg["patch_size"]},{seg["patch_size"]}) at {seg["output_mpp"]} µm/px | {t["segmenter_params"]:,} |

Normalisation: RGB/255, then `(x − mean) / std` with mean {clf["mean"]}, std {clf["std"]}.
ONNX opset 18, dynamic batch axis, exported with `torch.onnx.export(dynamo=True)`.
Thresholds: gate {th["gate_probability"]} (tuned for recall), tumour mask
{th["tumour_probability"]}, ITC ≤ {th["itc_max_mm"]} mm < micro ≤ {th["micro_max_mm"]} mm.

## Training data and procedure

Synthetic H&E lymph-node slides ({t["slide_size_mm"]} × {t["slide_size_mm"]} mm at 0.5 µm/px,
written as VL WSI DICOM with JPEG tiles and read back at the models' µm/px from the
pyramid): seeds {t["train_seeds"]} with a seeded set of deposits (one ITC-sized
0.10–0.19 mm, one or two micro-sized 0.25–1.2 mm) and node-negative seeds
{t["train_negative_seeds"]}. A patch is positive when > 20 % of it is tumour (as in the
breast SLN study). {t["classifier_patches"]} classifier patches (about half positive,
random positions) and {t["segmenter_tiles"]} segmenter tiles (60 % containing tumour);
rot90/flip and ±6 % brightness augmentation; AdamW, cosine LR from 3e-3; classifier
{t["epochs"]} epochs, segmenter {t["epochs"] + 2} epochs on random 64² crops of its tiles
(fully convolutional, run on full tiles at inference); CPU, {t["threads"]} torch
thread(s) on a shared 2-core machine.
Time (wall clock, shared 2-core machine): slide reading and patch sampling {t["data_s"]} s
(slides are cached in `--work`; generating one 3 × 3 mm slide takes 25–70 s here),
classifier training {t["classifier_train_s"]} s, segmenter training {t["segmenter_train_s"]} s,
whole recipe incl. export and evaluation {t["total_s"]} s.

## Held-out evaluation (other seeds)

Slides: seeds {t["eval_seeds"]} (tumour) and {t["eval_negative_seeds"]} (node-negative),
same generator, {m["slides"]} slides. Measured by `evaluate.py` through
`dicomnode.inference.onnx.OnnxModel` on the bundle as loaded by `load_bundle`, mirroring the
pipeline: classifier on the non-overlapping grid of tissue patches; segmenter only on
tiles touching a gated patch (plus a one-patch halo); deposits = connected components.

| metric | value |
| --- | --- |
| tissue patches (positive) | {m["patches"]} ({m["positive_patches"]}) |
| classifier patch ROC AUC | {_fmt(m["patch_auc"])} |
| sensitivity / specificity at gate {g["threshold"]} | {_fmt(g["sensitivity"])} / {_fmt(g["specificity"])} |
| sensitivity / specificity at 0.5 | {_fmt(h["sensitivity"])} / {_fmt(h["specificity"])} |
| segmenter Dice, two-stage (mean ± sd over tumour slides) | {_fmt(m["dice_two_stage_mean"])} ± {_fmt(m["dice_two_stage_sd"])} |
| segmenter Dice, whole slide without gate | {_fmt(m["dice_full_mean"])} ± {_fmt(m["dice_full_sd"])} |
| slide-level sensitivity / specificity | {_fmt(m["slide_sensitivity"])} / {_fmt(m["slide_specificity"])} |
| deposits detected (any predicted pixel inside), by class | {", ".join(f"{k}: {v}" for k, v in m["deposits_detected"].items())} |
| false-positive components, all / ≥ 0.001 mm² (all slides) | {m["false_positive_components"]} / {m["false_positive_components_large"]} |
| segmenter tiles run (gated / all) | {m["segmenter_tiles_run"]} |

Per slide:

{_per_slide(m)}

## Limitations

Synthetic appearance only (one colour scheme, round deposits, no artefacts, no real
histology such as sinus histiocytosis); tiny networks; a handful of slides. The generator
makes tumour deliberately distinct (paler, larger vesicular nuclei), so near-perfect
held-out numbers mean the task is easy, not that the models are good: they are not
evidence of performance on any real slide. Deposits > 2 mm (macro) were not in the
training slides. Use the bundle to test the node, never to read a slide.
{_SITE_MODELS}
Reproduce: `.venv/bin/python models/recipes/wsi_ln_demo/train.py --out models/wsi-ln-demo`
(raw numbers in `metrics.json`).
"""
    (out / "MODEL_CARD.md").write_text(text)
