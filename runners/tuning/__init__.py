"""Hyperparameter tuning: the Optuna-backed search and the metrics read from trial logs."""
