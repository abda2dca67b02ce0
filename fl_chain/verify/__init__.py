"""`flchain verify`: replay and audit a training run from the chain and the content store."""
