"""A randomized consistency check of an environment, run by `distgfn check` and `distgfn train`
before any actor starts.

    problems = check_env(env)        # [] when every check holds; else one line each, with an example

Trajectories of a uniformly random policy are rolled out and every visited state is checked
against the protocol (distgfn.core.Env): shapes and dtypes, masks that the step accepts,
termination within max_steps, parents that invert the step and a backward policy that sums
to 1 over them (when declared), keys that are strings, stable and one per object, featurize
with one shape and dtype, JSON objects.
"""

from __future__ import annotations

import json

import numpy as np

from distgfn.core import BACKWARD_POLICY, PARENTS


def check_env(env, n: int = 64, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    from distgfn.tasks import capabilities

    try:
        steps, visited = random_walks(env, n, rng)
    except EnvViolation as e:
        return [str(e)]
    problems = []
    for check in (check_masks, check_features, check_keys):
        problems += check(env, visited)
    declared = capabilities(env)
    if PARENTS in declared:
        problems += check_parents(env, steps)
    if BACKWARD_POLICY in declared:
        problems += check_backward_policy(env, steps, PARENTS in declared)
    return problems


class EnvViolation(ValueError):
    pass


def random_walks(env, n: int, rng) -> tuple[list, np.ndarray]:
    """Per step t, (states before it, actions taken, states reached); and every state visited."""
    state = env.initial_states(n)
    expect(isinstance(state, np.ndarray) and state.ndim == 2 and len(state) == n
           and np.issubdtype(state.dtype, np.integer),
           f"initial_states({n}) must be an (n, width) integer array; got {describe(state)}")
    steps, seen = [], [state]
    for _ in range(env.max_steps):
        live = ~terminal(env, state)
        if not live.any():
            return steps, np.concatenate(seen)
        current = state[live]
        masks = checked_masks(env, current)
        empty = ~masks.any(axis=1)
        expect(not empty.any(), f"a non-terminal state has no valid action: {example(current[empty])}")
        action = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        try:
            reached = env.step(current, action)
        except Exception as e:  # the check reports whatever the user's step raises
            raise EnvViolation(f"step raised {type(e).__name__}: {e} on valid action {action[0]} of {example(current)}") from None
        expect(isinstance(reached, np.ndarray) and reached.shape == current.shape and reached.dtype == current.dtype,
               f"step must return states of the same shape and dtype ({current.dtype} {current.shape}); "
               f"got {describe(reached)}")
        same = (reached == current).all(axis=1)
        expect(not same.any(), f"step left a state unchanged (a cycle): {example(current[same])} with action "
                               f"{action[same][:1].tolist()}")
        steps.append((current, action, reached))
        state = state.copy()
        state[live] = reached
        seen.append(reached)
    left = ~terminal(env, state)
    expect(not left.any(), f"a uniform random policy did not terminate within max_steps={env.max_steps}: "
                           f"{example(state[left])} is still not terminal")
    return steps, np.concatenate(seen)


def terminal(env, states: np.ndarray) -> np.ndarray:
    done = env.is_terminal(states)
    expect(isinstance(done, np.ndarray) and done.shape == (len(states),) and done.dtype == bool,
           f"is_terminal must return an (n,) bool array; got {describe(done)}")
    return done


def checked_masks(env, states: np.ndarray) -> np.ndarray:
    masks = env.masks(states)
    expect(isinstance(masks, np.ndarray) and masks.shape == (len(states), env.n_actions) and masks.dtype == bool,
           f"masks must return an (n, n_actions={env.n_actions}) bool array; got {describe(masks)}")
    return masks


def check_masks(env, visited: np.ndarray) -> list[str]:
    done = terminal(env, visited)
    masks = checked_masks(env, visited)
    if masks[done].any():
        return [f"masks: a terminal state has valid actions: {example(visited[done][masks[done].any(axis=1)])}"]
    return []


def check_features(env, visited: np.ndarray) -> list[str]:
    whole, one = env.featurize(visited), env.featurize(visited[:1])
    if not isinstance(whole, np.ndarray) or not isinstance(one, np.ndarray):
        return [f"featurize must return a numpy array; got {describe(whole)}"]
    if whole.shape[1:] != one.shape[1:] or whole.dtype != one.dtype or len(whole) != len(visited):
        return [f"featurize must give every batch one row per state of one shape and dtype; got {describe(whole)} "
                f"for {len(visited)} states and {describe(one)} for 1"]
    sizes = getattr(env, "feature_sizes", None)
    if sizes is not None:
        flat = whole.reshape(len(whole), -1)
        if flat.shape[1] != len(sizes):
            return [f"feature_sizes has {len(sizes)} entries but featurize gives {flat.shape[1]} columns"]
        bad = ((flat < 0) | (flat >= np.asarray(sizes))).any(axis=1)
        if bad.any():
            return [f"featurize gives values outside [0, feature_sizes={list(sizes)}): {example(flat[bad])} "
                    f"for state {example(visited[bad])}"]
    return []


def check_keys(env, visited: np.ndarray) -> list[str]:
    ends = visited[terminal(env, visited)]
    keys, again = env.keys(ends), env.keys(ends.copy())
    if len(keys) != len(ends) or not all(isinstance(k, str) for k in keys):
        return [f"keys must return one string per state; got {keys[:3]!r} for {len(ends)} states"]
    if keys != again:
        return [f"keys are not stable: {keys[0]!r} then {again[0]!r} for {example(ends)}"]
    objects = env.objects(ends)
    try:
        texts = [json.dumps(o, sort_keys=True) for o in objects]
    except TypeError as e:
        return [f"objects must be JSON-ready: {e}"]
    by_key: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if by_key.setdefault(key, text) != text:
            return [f"key {key!r} stands for two different objects: {by_key[key]} and {text}"]
    return []


def same_states(env, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row: do a and b stand for the same state (the env's state_keys, else equal rows)."""
    keys = getattr(env, "state_keys", None)
    if keys is None:
        return (a == b).all(axis=1)
    return np.array([x == y for x, y in zip(keys(a), keys(b))], dtype=bool)


def check_parents(env, steps: list) -> list[str]:
    """Each visited state's parents lead to it by their action, include the step it was
    reached by, and are valid there; s0 has no parents."""
    s0 = env.initial_states(1)
    if len(env.parents(s0)[0]):
        return [f"parents: the initial state {example(s0)} has parents"]
    for before, action, after in steps:
        parents, parent_actions, child = env.parents(after)
        if len(parents):
            wrong = ~same_states(env, env.step(parents, parent_actions), after[child])
            if wrong.any():
                k = int(np.argmax(wrong))
                return [f"parents: step({parents[k].tolist()}, {parent_actions[k]}) does not give "
                        f"{after[child[k]].tolist()}, though parents() lists it"]
            valid = checked_masks(env, parents)[np.arange(len(parents)), parent_actions]
            if not valid.all():
                k = int(np.argmin(valid))
                return [f"parents: action {parent_actions[k]} is not valid in listed parent {parents[k].tolist()}"]
        for i in range(len(after)):
            mine = (child == i) & (parent_actions == action[i])
            if not same_states(env, parents[mine], np.repeat(before[i : i + 1], mine.sum(), axis=0)).any():
                return [f"parents: {after[i].tolist()} was reached from {before[i].tolist()} by action {action[i]}, "
                        f"which parents() does not list"]
    return []


def check_backward_policy(env, steps: list, with_parents: bool) -> list[str]:
    """log P_B is finite and <= 0 on the steps taken; with parents, it sums to 1 over them."""
    for before, action, after in steps:
        log_pb = np.asarray(env.backward_log_probs(before, action, after), dtype=np.float64)
        if log_pb.shape != (len(after),) or not (np.isfinite(log_pb) & (log_pb <= 1e-6)).all():
            return [f"backward_log_probs must give one finite log-probability <= 0 per step; got {log_pb[:4].tolist()} "
                    f"for {example(after)}"]
        if with_parents:
            parents, parent_actions, child = env.parents(after)
            total = np.bincount(child, np.exp(env.backward_log_probs(parents, parent_actions, after[child])),
                                minlength=len(after))
            wrong = np.abs(total - 1) > 1e-4
            if wrong.any():
                return [f"backward_log_probs over the parents of {example(after[wrong])} sum to "
                        f"{total[wrong][0]:.4f}, not 1"]
    return []


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise EnvViolation(message)


def example(states: np.ndarray) -> str:
    """The first of `states`, for a message (messages are built whether or not they are raised)."""
    return f"state {np.asarray(states[0]).tolist()}" if len(states) else "(no state)"


def describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
