"""Chain access: backends (embedded py-evm, JSON-RPC nodes), transactions, the Federation ledger."""
