"""MRI measurement fidelity (issue 12): what the stored orientation and the minimum node size do.

(a) orientation: held-out phantoms (seeds 9000-, as the demo model's card) stored in the
    eight axis-flip/swap variants of an axial series (:mod:`dicomnode.synth.mr.variants`);
    per variant, nodes whose station and side match the phantom's truth (nearest finding
    within 5 mm) when the array reaches nnU-Net as stored (``NnUNetRunner.predict``, the
    behaviour before the bundle declared ``input.orientation``) and reoriented
    (``predict_volume``, the pipeline's path);
(b) minimum node size: the real T2 series in ../shared/testdata/mr (when present), nodes,
    status and below-size components without a minimum and with the bundle's.

Not a test: no thresholds here. ``--seeds N`` phantoms (default 12), ``--variants all|4``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import save_results  # noqa: E402

BUNDLE = REPO / "models" / "lln-t2-demo"
REAL = REPO.parent / "shared" / "testdata" / "mr"


def orientation(pipeline, scheme, seeds: int, variants) -> list[dict]:
    import numpy as np

    from dicomnode.dicom.volume import load_volume
    from dicomnode.pipelines.mri_lln.findings import compute_findings
    from dicomnode.synth.mr import generate_case
    from dicomnode.synth.mr.variants import stored_as, variant_name

    rows = []
    for seed in range(9000, 9000 + seeds):
        case = generate_case(seed)
        for variant in variants:
            volume = load_volume(stored_as(case.datasets, variant))
            for mode in ("stored", "reoriented"):
                runner = pipeline.runner
                if mode == "stored":
                    labels = runner.predict(volume.array, volume.spacing_zyx)
                else:
                    labels = runner.predict_volume(volume)
                nodes = compute_findings(labels, volume, scheme).nodes
                right = 0
                for truth in case.nodes:
                    dist = [float(np.linalg.norm(np.subtract(n.centroid_lps, truth.center_lps))) for n in nodes]
                    if dist and min(dist) < 5.0:
                        near = nodes[int(np.argmin(dist))]
                        right += (near.station, near.side) == (truth.station, truth.side)
                rows.append({"seed": seed, "variant": variant_name(variant), "mode": mode,
                             "truth_nodes": len(case.nodes), "found": len(nodes), "station_side_right": right})
    return rows


def min_size(pipeline, bundle) -> list[dict]:
    from dicomnode.dicom.volume import load_volume, read_instances
    from dicomnode.pipelines.mri_lln.findings import compute_findings
    from dicomnode.pipelines.mri_lln.labels import LabelScheme

    rows = []
    for name in ("prostate-t2-axial-siemens-verio", "prostate-t2-axial-needle-guidance-siemens"):
        if not (REAL / name).is_dir():
            continue
        volume = load_volume(read_instances(sorted((REAL / name).iterdir())))
        labels = pipeline.runner.predict_volume(volume)
        off = {**bundle.thresholds, "min_node_volume_mm3": 0, "min_node_short_axis_mm": 0}
        for label, thresholds in (("no minimum", off), ("bundle minimum", bundle.thresholds)):
            found = compute_findings(labels, volume, LabelScheme.from_manifest(bundle.labels, thresholds)).to_json()
            rows.append({"series": name, "minimum": label, "nodes": found["n_nodes"], "positive": found["n_positive"],
                         "status": found["lln_status"],
                         "below_size_mm3": [n["volume_mm3"] for n in found["below_size"]]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--variants", choices=["all", "4"], default="all")
    args = parser.parse_args()
    from dicomnode.inference.manifest import load_bundle
    from dicomnode.pipelines import create_pipeline
    from dicomnode.pipelines.mri_lln.labels import LabelScheme
    from dicomnode.synth.mr.variants import VARIANTS

    bundle = load_bundle(BUNDLE)
    pipeline = create_pipeline("mri-lln", bundle, {"device": "cpu", "threads": 1})
    scheme = LabelScheme.from_manifest(bundle.labels, bundle.thresholds)
    variants = VARIANTS if args.variants == "all" else [VARIANTS[i] for i in (0, 1, 4, 6)]
    rows = orientation(pipeline, scheme, args.seeds, variants)
    print(f"{'variant':20s} {'mode':11s} station+side right / truth nodes (found)")
    for name in dict.fromkeys(r["variant"] for r in rows):
        for mode in ("stored", "reoriented"):
            sel = [r for r in rows if r["variant"] == name and r["mode"] == mode]
            right, truth, found = (sum(r[k] for r in sel) for k in ("station_side_right", "truth_nodes", "found"))
            print(f"{name:20s} {mode:11s} {right}/{truth} ({found})")
    sizes = min_size(pipeline, bundle)
    for r in sizes:
        print(f"{r['series']}: {r['minimum']}: {r['nodes']} nodes, {r['positive']} positive, {r['status']}; "
              f"below size {r['below_size_mm3']}")
    print(save_results("mri_fidelity", {"orientation": rows, "min_size": sizes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
