"""`lightning-ft tune`: hyperparameter search with Optuna over `fit` runs (the `tune` extra)."""
