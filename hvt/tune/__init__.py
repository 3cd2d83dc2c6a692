"""The accuracy-compute frontier: sweeps with Ray Tune (``hvt.tune.sweep``), the Pareto front and the budget pick
(``hvt.tune.pareto``), and experiment tracking with MLflow (``hvt.tune.tracking``).

Our registry stays the source of truth; MLflow mirrors runs and versions for browsing and comparing them.
"""
