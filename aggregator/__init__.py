"""The aggregator's side: the Flower ServerApp, the on-chain strategy, and the launcher."""
