"""Search over training configs: Ray Tune runs trials, Optuna proposes, ASHA stops early."""
