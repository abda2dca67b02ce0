"""Sub-commands of `flchain`: each module exposes `register(subparsers)`."""
