"""``dicomnode evaluate``: a site's own validation of a model bundle on its labelled cases.

The cases run through the node's own pipeline code (the registry of
:mod:`dicomnode.pipelines`, ``Pipeline.run``); this package only reads ground truth,
compares, aggregates and reports:

* :mod:`.metrics` — the studies' metrics as pure functions (ACC/SEN/SPE, weighted F1, ROC
  and AUC, Dice, Cohen's kappa, confusion matrices, Bland–Altman, bootstrap intervals,
  McNemar, paired bootstrap);
* :mod:`.cases` — the cases folder and ``labels.csv``; :mod:`.truth_mr` (SEG, NIfTI/NRRD),
  :mod:`.truth_wsi` (ASAP XML, QuPath GeoJSON, PNG/TIFF masks) and :mod:`.truth_wsi_seg`
  (a slide's tiled DICOM SEG) read ground truth;
* :mod:`.run` — each case through ``Pipeline.run`` (timed, progress bar, outputs kept);
* :mod:`.mri`, :mod:`.wsi` — per-case records and the studies' aggregates, with
  :mod:`.summary` (intervals, mean ± SD) and :mod:`.compare` (``--compare A B``);
* :mod:`.core` — :func:`~dicomnode.evaluate.core.evaluate`, the command's work;
  :mod:`.report`, :mod:`.report_tables`, :mod:`.plots` — ``report.html`` and the PNGs.
"""
