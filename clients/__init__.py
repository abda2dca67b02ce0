"""The participant side: data loading and partitioning, models and local training.

Nothing here imports Flower; the Flower ClientApp is a thin adapter over these functions,
so the same training code serves simulations, deployments and the baselines.
"""
