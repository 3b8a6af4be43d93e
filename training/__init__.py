"""Training of srcube models: datasets, losses, metrics, trainer (issue: training)."""
