"""Early-exit classification: networks with a classifier after every block (MSDNet).

``task`` trains all exits jointly (EarlyExitClassifier, in TASKS), ``metric`` reports every exit's accuracy
(EarlyExitAccuracy, in METRICS), ``budget`` turns per-exit scores into anytime accuracy and budgeted batch
classification (per-exit confidence thresholds for a range of FLOP budgets). densevision.models and
densevision.evaluation import the first two, so configs can name them.
"""
