"""Policy networks.

A model maps featurized states to `n_actions + 1` numbers per state: the first n_actions are
log edge flows Qlog(s, a) for flow matching, or forward-policy logits for TB/DB (the policy is
softmax over valid actions either way); the last is log F(s), the state flow DB needs. TB's
log Z is the scalar parameter `log_z`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

# Up to this many one-hot inputs in all, the MLP's first layer is a matmul on the multi-hot
# vector: 20% faster updates for HyperGrid (32 inputs) on CPU (benchmarks/learner_device.py).
MULTI_HOT_MAX = 1024


class MLP(nn.Module):
    """MLP over one-hot encoded integer features: column i of the input takes values in
    [0, feature_sizes[i]) (a HyperGrid cell's coordinates; a sequence's letters).

    The first layer is an embedding sum, which is exactly a Linear layer on the concatenated
    one-hot vectors but skips building them.
    """

    def __init__(self, feature_sizes: list[int], n_actions: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        sizes = torch.tensor(list(feature_sizes), dtype=torch.int64)
        self.embed = nn.Embedding(int(sizes.sum()), hidden)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        body: list[nn.Module] = [nn.LeakyReLU()]
        for _ in range(layers - 1):
            body += [nn.Linear(hidden, hidden), nn.LeakyReLU()]
        body.append(nn.Linear(hidden, n_actions + 1))
        self.body = nn.Sequential(*body)
        self.log_z = nn.Parameter(torch.zeros(()))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        index = coords + self.offsets
        vocabulary = self.embed.num_embeddings
        if vocabulary <= MULTI_HOT_MAX:  # a matmul: embedding's backward is a slow scatter on CPU
            weight = self.embed.weight
            multi_hot = weight.new_zeros(len(index), vocabulary).scatter_(1, index, 1.0)
            h = torch.addmm(self.bias, multi_hot, weight)
        else:
            h = self.embed(index).sum(dim=1) + self.bias
        return self.body(h)

    def numpy_policy(self, n_actions: int):
        """forward() in numpy, for sampling on CPU: at batch 16 a step costs ~36 us against
        torch's ~120 us (op dispatch, not arithmetic, dominates such small inputs). A snapshot of
        the weights: after they change (an optimizer step, new weights) make a new policy. The
        snapshot holds each weight transposed and contiguous: numpy's matmul with a transposed
        view ran 2x slower for 6 to 12 rows (docs/benchmarks.md)."""
        embed, bias = self.embed.weight.detach().numpy().copy(), self.bias.detach().numpy().copy()
        offsets = self.offsets.numpy()
        layers = [(transposed_copy(m.weight), m.bias.detach().numpy().copy()) for m in self.body if isinstance(m, nn.Linear)]
        slope = self.body[0].negative_slope

        def policy(coords: np.ndarray) -> np.ndarray:
            h = embed[coords + offsets].sum(axis=1) + bias
            for weight_t, b in layers:
                h = np.maximum(h, slope * h)  # LeakyReLU, 0 <= slope < 1
                h = h @ weight_t + b
            return h[:, :n_actions]

        return policy


def transposed_copy(weight: torch.Tensor) -> np.ndarray:
    """weight.T as a new C-contiguous array; torch copies a transpose about twice as fast as
    numpy (35 against 68 us for 256 x 256)."""
    return weight.detach().t().clone(memory_format=torch.contiguous_format).numpy()


def mlp(env, hidden: int = 256, layers: int = 2) -> MLP:
    """The built-in model `mlp`, over the env's declared feature_sizes."""
    sizes = getattr(env, "feature_sizes", None)
    if not sizes or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in sizes):
        raise ValueError(f"the mlp model needs the env to declare feature_sizes, a list of positive integers "
                         f"(got {sizes!r}); or name another model in model.name")
    if hidden < 1 or layers < 1:
        raise ValueError(f"mlp needs hidden >= 1 and layers >= 1; got hidden={hidden}, layers={layers}")
    return MLP(sizes, env.n_actions, hidden, layers)


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when a GPU is visible, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"learner.device={name!r} but no CUDA device is available")
    return torch.device(name)


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """A flat dict of numpy arrays: the wire format for weights (cheap to put in Ray's store)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Copies weights into the model (load_state_dict semantics: every key must match)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})


def share_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Points the model's tensors at the arrays themselves, without copying: for inference-only
    copies (rollout actors), where the arrays live read-only in Ray's shared-memory object
    store. The model must never be trained afterwards."""
    state = model.state_dict(keep_vars=True)
    if set(state) != set(weights):
        raise KeyError(f"weights do not match the model: missing {sorted(set(state) - set(weights))}, "
                       f"unexpected {sorted(set(weights) - set(state))}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, tensor in state.items():
            array = weights[name]
            if array.shape != tuple(tensor.shape) or array.dtype != tensor.detach().numpy().dtype:
                raise ValueError(f"weights[{name!r}] is {array.dtype} {array.shape}; the model has "
                                 f"{tensor.dtype} {tuple(tensor.shape)}")
            tensor.data = torch.from_numpy(array)
