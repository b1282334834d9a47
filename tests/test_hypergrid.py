import numpy as np
import pytest

from distgfn.envs.hypergrid import HyperGrid
from distgfn.rewards.hypergrid import HyperGridReward


def reachable_states(env):
    """Every state reachable from s0, by breadth-first search over step()."""
    seen = {tuple(env.initial_states(1)[0])}
    frontier = env.initial_states(1)
    while len(frontier):
        masks = env.masks(frontier)
        rows, actions = np.nonzero(masks)
        children = env.step(frontier[rows], actions)
        new = {tuple(c) for c in children} - seen
        seen |= new
        frontier = np.array(sorted(new), dtype=np.int64).reshape(-1, env.width)
    return np.array(sorted(seen), dtype=np.int64)


def brute_force_parents(env, states, candidates):
    """{child: {(parent, action)}} by trying every valid action of every candidate parent."""
    found = {tuple(s): set() for s in states}
    for parent in candidates:
        for a in np.nonzero(env.masks(parent[None])[0])[0]:
            child = tuple(env.step(parent[None], np.array([a]))[0])
            if child in found:
                found[child].add((tuple(parent), int(a)))
    return found


@pytest.mark.parametrize("terminate_at_edge", [False, True])
@pytest.mark.parametrize("ndim,height", [(1, 4), (2, 4), (3, 3)])
def test_parents_match_step_on_every_reachable_state(ndim, height, terminate_at_edge):
    env = HyperGrid(ndim, height, terminate_at_edge)
    states = reachable_states(env)
    expected = brute_force_parents(env, states, states)
    parents, actions, child = env.parents(states)
    got = {tuple(s): set() for s in states}
    for p, a, c in zip(parents, actions, child):
        got[tuple(states[c])].add((tuple(p), int(a)))
    assert got == expected
    assert len(parents) == sum(len(v) for v in expected.values()), "no (parent, action) pair twice"


def test_every_cell_is_an_object_by_default_and_edge_mode_drops_corners():
    assert (HyperGrid(2, 4).is_reachable_object(HyperGrid(2, 4).all_cells())).sum() == 16
    env = HyperGrid(2, 4, terminate_at_edge=True)
    terminal = reachable_states(env)
    terminal = terminal[env.is_terminal(terminal)]
    # (3, 3) needs a parent on the edge, which is already terminal.
    assert len(terminal) == 15 and [3, 3, 1] not in terminal.tolist()
    assert env.is_reachable_object(env.all_cells()).sum() == 15


def test_edge_mode_ends_episode_on_reaching_the_edge():
    env = HyperGrid(2, 4, terminate_at_edge=True)
    s = env.step(np.array([[2, 1, 0]]), np.array([0]))
    assert s.tolist() == [[3, 1, 1]] and env.is_terminal(s)[0]
    assert not env.masks(s).any()


def test_masks_forbid_leaving_the_grid_and_allow_stop():
    env = HyperGrid(2, 4)
    m = env.masks(np.array([[3, 0, 0], [1, 2, 0], [1, 1, 1]]))
    assert m.tolist() == [[False, True, True], [True, True, True], [False, False, False]]


def test_reward_matches_the_paper_formula():
    r = HyperGridReward(height=8)
    cells = np.array([[0, 0, 1], [1, 6, 1], [0, 7, 1], [3, 4, 1], [1, 0, 1]])
    # |x/7 - 0.5|: 0 -> 0.5 (outer), 1 and 6 -> 0.357 (outer and ring), 3, 4 -> 0.07.
    np.testing.assert_allclose(r(cells), [0.6, 2.6, 0.6, 0.1, 0.6])


def test_only_grids_small_enough_to_enumerate_declare_it():
    from distgfn.core import ENUMERABLE, PARENTS

    assert HyperGrid(4, 8).capabilities == {PARENTS, ENUMERABLE}
    assert HyperGrid(8, 20).capabilities == {PARENTS}, "20**8 cells: evaluated empirically, not refused"
