"""``dicomnode evaluate``: a site's own validation of a model bundle on its labelled cases.

The cases run through the node's own pipeline code (the registry of
:mod:`dicomnode.pipelines`, ``Pipeline.run``); this package only reads ground truth,
compares, aggregates and reports:

* :mod:`.metrics` — the studies' metrics as pure functions (ACC/SEN/SPE, weighted F1, ROC
  and AUC, Dice, Cohen's kappa, confusion matrices, Bland–Altman, bootstrap intervals,
  McNemar, paired bootstrap).
"""
