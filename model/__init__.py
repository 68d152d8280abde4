"""JEPA with a VQ bottleneck on ARC grids: data, model, losses, health metrics, trainer."""
