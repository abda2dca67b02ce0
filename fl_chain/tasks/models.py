"""The built-in tasks' default models, and their exchange form: named float32 arrays.

Models are chosen by input shape: flat features get a one-hidden-layer MLP, (C, H, W)
images a small CNN. Initialization is seeded, so every participant and the aggregator
build bit-identical round-zero weights. Tensors are named by `state_dict` key, which is
the schema the codec and the aggregator check updates against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fl_chain.codec import MAX_MODEL_BYTES
from fl_chain.errors import SchemaMismatch, UsageError

HIDDEN_UNITS = 32


class TabularMLP(nn.Module):
    """Features -> 32 ReLU units -> outputs (class logits, or a regression value)."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(features, HIDDEN_UNITS)
        self.output = nn.Linear(HIDDEN_UNITS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.hidden(x)))


class SmallCNN(nn.Module):
    """Two 3x3 conv + 2x2 max-pool blocks (16, 32 channels) and a linear classifier."""

    def __init__(self, channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.output = nn.Linear(32 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.output(torch.flatten(x, 1))


def build_model(input_shape: Sequence[int], outputs: int, seed: int) -> nn.Module:
    """The default network for inputs of `input_shape` with `outputs` outputs (class logits,
    or one for regression), its weights drawn from `seed` (the global RNG left untouched)."""
    shape = tuple(input_shape)
    if outputs < 1:
        raise UsageError(f"a model needs at least 1 output, got {outputs}")
    parameters = _parameters(shape, outputs)
    if parameters * 4 > MAX_MODEL_BYTES:
        raise UsageError(f"the default model for inputs {shape} with {outputs} outputs would hold {parameters:,} "
                         f"parameters ({parameters * 4 / 2**30:.1f} GiB), more than a model may "
                         f"({MAX_MODEL_BYTES / 2**30:g} GiB): choose a smaller task.size or fewer classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if len(shape) == 1:
            return TabularMLP(shape[0], outputs)
        if len(shape) == 3 and shape[1] >= 4 and shape[2] >= 4:
            return SmallCNN(*shape, num_classes=outputs)
    raise UsageError(
        f"no model for input shape {shape}: expected (features,) or (channels, height, width)"
        " with height and width at least 4"
    )


def _parameters(shape: tuple[int, ...], outputs: int) -> int:
    """How many weights `build_model` would allocate, counted before it does."""
    if len(shape) == 1:
        return shape[0] * HIDDEN_UNITS + HIDDEN_UNITS + HIDDEN_UNITS * outputs + outputs
    if len(shape) == 3:
        channels, height, width = shape
        return channels * 16 * 9 + 16 + 16 * 32 * 9 + 32 + 32 * (height // 4) * (width // 4) * outputs + outputs
    return 0  # no model for this shape: build_model says so


def model_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """A float32 copy of every tensor in the model's state, keyed by state_dict name."""
    return {
        name: tensor.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, tensor in model.state_dict().items()
    }


def load_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Overwrite the model's state with `weights`, which must match its names and shapes."""
    state = model.state_dict()
    missing = sorted(set(state) - set(weights))
    extra = sorted(set(weights) - set(state))
    misshapen = [
        f"{name} {tuple(np.shape(weights[name]))} != {tuple(tensor.shape)}"
        for name, tensor in state.items()
        if name in weights and tuple(np.shape(weights[name])) != tuple(tensor.shape)
    ]
    if missing or extra or misshapen:
        raise SchemaMismatch(
            f"weights do not fit the model: missing {missing}, unexpected {extra}, "
            f"wrong shape {misshapen}"
        )
    model.load_state_dict(
        {name: torch.tensor(np.asarray(weights[name]), dtype=state[name].dtype) for name in state}
    )
