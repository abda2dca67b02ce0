"""fl-chain: federated learning whose every round is committed, aggregated and attested on chain."""

__version__ = "0.1.0"
