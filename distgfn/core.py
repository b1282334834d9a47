"""The parts of distgfn, as small interfaces. Read this page to learn the system.

A task is an environment, a reward and a model; a run is rollout workers and a learner:

    cfg = load_config("configs/hypergrid.yaml")
    task = tasks.build(cfg)                       # env, reward, model factory from the registry
    learner = Learner(cfg)                        # owns the model and the optimizer
    actor = RolloutWorker(cfg, seed=1)            # owns an env, a reward, a policy copy
    table = ReplayTable(capacity=100_000, sampler="fifo")   # every record trained on at least once
    while learner.step < cfg.learner.steps:
        actor.set_weights(*learner.weights())     # VariableSource -> Actor
        rollout = actor.sample()                  # trajectories -> rewards -> batch
        table.insert([parse_record(r) for r in encode_records(rollout, "a.0")])  # msgpack records
        learner.update(training_batch([r.data for r in table.sample(16)]))

`distgfn.serial` runs this loop in one process. The Ray runtime (`distgfn.driver`) puts the
actors (a `distgfn.fleet.Fleet`), the replay table and the learner in separate processes; the
roles and the records stay the same, only the transport and the schedule change. What the
roles say to each other is `distgfn.messages`; both runtimes make their metrics rows with
`distgfn.rows` and their checkpoints with `distgfn.runstate`, so a run resumes in either.

A config names each part of the task by a short built-in name (`distgfn.tasks.ENVS`,
`REWARDS`, `MODELS`: one dict from name to import path) or by an import path
`package.module:NAME`, and passes it `options` as keyword arguments. A built-in and a
user's plugin load the same way. `tasks.build` checks each against the protocols below
and `distgfn check` runs `tasks.check_env` on the environment.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

Weights = dict[str, np.ndarray]

# Optional environment capabilities, declared in `Env.capabilities`.
PARENTS = "parents"  # parents(states): flow matching needs it; TB and DB use it for P_B
ENUMERABLE = "enumerable"  # every state is reachable from s0 in a small set: exact evaluation
BACKWARD_POLICY = "backward_policy"  # backward_log_probs(): TB and DB use it instead of a uniform P_B
CAPABILITIES = (PARENTS, ENUMERABLE, BACKWARD_POLICY)


@runtime_checkable
class Env(Protocol):
    """A deterministic episodic DAG of states, vectorized over a batch.

    States are rows of one integer numpy array (n, width): a batch of states is a plain
    array and nothing on the hot path is a per-state Python object. A terminal state ("done")
    has no valid action; the object it stands for is scored by the reward through its key.

        s = env.initial_states(16)                  # (16, width) int array
        a = pick(env.masks(s))                      # (16, n_actions) bool
        s = env.step(s, a)                          # env.is_terminal(s): (16,) bool
        env.keys(s[done])                           # ["1,6", ...]: what the reward scores

    Declared sizes and capabilities (class or instance attributes):
        n_actions      number of actions of every state
        max_steps      upper bound on the actions of one trajectory
        feature_sizes  for the built-in `mlp` model: featurize() gives one integer column per
                       entry, column i in [0, feature_sizes[i]) (the model embeds each value)
        capabilities   a subset of CAPABILITIES (default: none)
        default_model  the model used when model.name is not set (default "mlp")
        state_keys(states)  a string per state, equal for rows that stand for the same state
                       of the DAG (a tree numbered another way); default: equal rows
        evaluator      import path of a metrics class for non-enumerable envs (default: the
                       empirical one)
    """

    n_actions: int
    max_steps: int

    def initial_states(self, n: int) -> np.ndarray:
        """n copies of the initial state s0."""

    def masks(self, states: np.ndarray) -> np.ndarray:
        """(n, n_actions) bool: the valid actions of each state; all False for terminal ones."""

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The states reached by taking `actions` (which must be valid) in `states`."""

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        """(n,) bool."""

    def featurize(self, states: np.ndarray) -> np.ndarray:
        """The model's input for each state: a fixed shape and dtype per row."""

    def keys(self, states: np.ndarray) -> list[str]:
        """A stable string key per terminal state, equal exactly for equal objects. Replay
        record ids, the reward cache, rewards and `distgfn sample` rely on it."""

    def objects(self, states: np.ndarray) -> list:
        """A JSON-ready description of each terminal object (what `distgfn sample` prints as x)."""


class EnvWithParents(Env, Protocol):
    def parents(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (parent, action) pair with step(parent, action) == state, for non-initial states.

        Returns (parent_states, parent_actions, child_index): parallel arrays with one row per
        pair; child_index[k] is the row of `states` that pair k leads to. Without this
        capability the DAG must be a tree (each state has one parent, P_B = 1): flow matching
        refuses such an env, TB and DB train on it.
        """


class EnvWithBackwardPolicy(Env, Protocol):
    def backward_log_probs(self, parents: np.ndarray, actions: np.ndarray, states: np.ndarray) -> np.ndarray:
        """(n,) log P_B(parent | state) of each transition step(parent, action) == state. Over
        the parents of one state the probabilities sum to 1. Without this capability P_B is
        uniform over the parents (1 in a tree)."""


@runtime_checkable
class Reward(Protocol):
    """Scores objects by their env keys; the same object runs inline in the rollout actors, in
    the reward pool, or behind `distgfn serve-reward` (reward.mode inline, pool, remote).

        raw, errors = reward.score(["1,6", "0,0"])  # (n,) floats; None or why an object failed

    R(x) = to_reward(raw) must be > 0; an object whose score raises, is NaN or infinite, or
    whose R(x) <= 0 fails alone: it is counted and never trained on. Optional declarations:
        scores_env     the env (registry name or import path) it scores; default: any
        to_reward(raw) a static method from the raw output to R(x); default: R = raw
    A constructor parameter named `env` receives the built environment, `data_dir` the
    data.dir setting and `seed` the run's seed.
    """

    def score(self, keys: list[str]) -> tuple[np.ndarray, list]:
        """(raw outputs, errors) for n keys: one float and one None-or-message each."""


class Actor(Protocol):
    def set_weights(self, version: int, weights: Weights) -> None:
        """Adopt a newer policy; later samples are stamped with `version`."""

    def sample(self):
        """Roll out one batch of trajectories, score them, and return a training batch."""


class VariableSource(Protocol):
    def weights(self) -> tuple[int, Weights]:
        """The current policy version and its weights as a flat dict of numpy arrays."""


class Learner(VariableSource, Protocol):
    step: int

    def update(self, batch: dict[str, np.ndarray]) -> float:
        """One gradient step of the objective on a stacked batch; returns the loss."""


class Saveable(Protocol):
    def state(self) -> dict:
        """Everything needed to continue, as arrays and plain values."""

    def restore(self, state: dict) -> None:
        """Continue from `state()`."""
