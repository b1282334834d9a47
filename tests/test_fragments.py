import json

import numpy as np
import pytest
import torch
from rdkit import Chem
from test_records import assert_same_arrays

from distgfn.chem.blocks import load_blocks
from distgfn.chem.fragment_model import FragmentGNN
from distgfn.envs.fragments import FragmentEnv
from distgfn.learning import with_masks
from distgfn.sampling import sample_trajectories

METHYL = 8  # C_0: methane with one stem, the simplest block to attach anywhere
BENZENE = 0


@pytest.fixture(scope="module")
def blocks(seh_data):
    return load_blocks(seh_data / "blocks_PDB_105.json")


@pytest.fixture(scope="module")
def env(blocks):
    return FragmentEnv(blocks, min_fragments=2, max_fragments=8)


def random_trajectories(env, n, seed):
    """Random-policy rollouts whose lengths vary: each row gets its own bias towards stopping."""
    rng = np.random.default_rng(seed)

    def policy(states):
        logits = np.zeros((len(states), env.n_actions))
        logits[:, 0] = rng.uniform(0, 9, len(states))
        return logits

    return sample_trajectories(env, policy, n, rng)


def visited(trajs):
    """Every state of every trajectory, s_0 included, as (states, step index)."""
    steps = np.arange(trajs.states.shape[1])
    keep = steps[None, :] <= trajs.lengths[:, None]
    return trajs.states[keep], np.nonzero(keep)[1]


def grow(env, *actions):
    """The state reached from s_0 by `actions` (each an int), one state."""
    state = env.initial_states(1)
    for a in actions:
        assert env.masks(state)[0, a], f"action {a} invalid in {state[0]}"
        state = env.step(state, np.array([a]))
    return state[0]


def renumber(env, state, rng):
    """The same tree with its non-root fragments renumbered in a random order (parents first)."""
    blocks, parents, slots = (a[0] for a in env.split(state[None]))
    n = int((blocks >= 0).sum())
    order, ready = [0], [c for c in range(1, n) if parents[c] == 0]
    while ready:
        f = ready.pop(rng.integers(len(ready)))
        order.append(f)
        ready += [c for c in range(1, n) if parents[c] == f]
    new = {old: i for i, old in enumerate(order)}
    out = env.initial_states(1)[0]
    out[0] = state[0]
    m = env.max_fragments
    for old, i in new.items():
        out[1 + i] = blocks[old]
        if old:
            out[1 + m + i], out[1 + 2 * m + i] = new[int(parents[old])], slots[old]
    return out, new


def test_every_terminal_molecule_sanitizes_and_its_smiles_round_trips(env):
    trajs = random_trajectories(env, 500, seed=0)
    assert len(set(trajs.lengths.tolist())) > 3, "rollouts should vary in length"
    for smi in env.smiles(trajs.final):
        mol = Chem.MolFromSmiles(smi)
        assert mol is not None, smi
        assert Chem.MolToSmiles(mol) == smi


@pytest.mark.parametrize("min_fragments,max_fragments", [(1, 4), (2, 8)])
def test_parents_are_consistent_with_step(blocks, min_fragments, max_fragments):
    env = FragmentEnv(blocks, min_fragments, max_fragments)
    trajs = random_trajectories(env, 150, seed=1)
    states, _ = visited(trajs)
    parents, actions, child = env.parents(states)
    assert env.masks(parents)[np.arange(len(parents)), actions].all()
    reached = env.step(parents, actions)
    for i in range(len(parents)):
        assert env.canonical_key(reached[i]) == env.canonical_key(states[child[i]])
    # s_0 has no parents; every other state has at least one.
    counts = np.bincount(child, minlength=len(states))
    assert ((counts == 0) == (env.n_fragments(states) == 0)).all()


def test_parents_include_the_trajectory_step_that_reached_the_state(env):
    trajs = random_trajectories(env, 100, seed=2)
    for b in range(len(trajs.lengths)):
        states = trajs.states[b, : trajs.lengths[b] + 1]
        parents, actions, child = env.parents(states)
        for t in range(1, len(states)):
            mine = child == t
            # The last fragment added is always a removable leaf, so the exact row comes back.
            hit = (parents[mine] == states[t - 1]).all(axis=1) & (actions[mine] == trajs.actions[b, t - 1])
            assert hit.sum() == 1, (states[t - 1], trajs.actions[b, t - 1], states[t])


def test_each_parent_reaches_the_state_by_exactly_one_action_and_parents_are_distinct(env):
    trajs = random_trajectories(env, 20, seed=3)
    states, _ = visited(trajs)
    parents, actions, child = env.parents(states)
    for s in np.unique(child):
        keys = [env.canonical_key(p) for p in parents[child == s]]
        assert len(set(keys)) == len(keys)
    target = env.canonical_key(states[child[-1]])
    for p in parents[child == child[-1]]:
        valid = np.nonzero(env.masks(p[None])[0])[0]
        children = env.step(np.repeat(p[None], len(valid), axis=0), valid)
        assert sum(env.canonical_key(c) == target for c in children) == 1


def test_canonical_key_ignores_fragment_numbering_but_not_slots(env):
    rng = np.random.default_rng(4)
    for state in random_trajectories(env, 50, seed=4).final:
        assert env.canonical_key(renumber(env, state, rng)[0]) == env.canonical_key(state)
    at_slot_1 = grow(env, 1 + BENZENE, env.encode(METHYL, 0, 1))
    at_slot_2 = grow(env, 1 + BENZENE, env.encode(METHYL, 0, 2))
    assert env.canonical_key(at_slot_1) != env.canonical_key(at_slot_2)


def test_stop_is_masked_below_min_fragments(blocks):
    env = FragmentEnv(blocks, min_fragments=3, max_fragments=5)
    assert not env.masks(env.initial_states(1))[0, env.stop_action]
    for n in range(1, 6):
        state = grow(env, *([1 + BENZENE] + [env.encode(METHYL, 0, k) for k in range(n - 1)]))
        assert env.masks(state[None])[0, env.stop_action] == (n >= 3)


def test_a_dead_end_below_min_fragments_may_stop(blocks):
    env = FragmentEnv(blocks, min_fragments=3, max_fragments=5)
    single = next(j for j, stems in enumerate(blocks.stems) if len(stems) == 1)  # one stem; none left as a child
    state = grow(env, 1 + single, env.encode(single, 0, 0))
    assert not env.free_slots(state[None]).any(), "the tree has no free slot left"
    masks = env.masks(state[None])
    assert np.nonzero(masks[0])[0].tolist() == [env.stop_action], "stop, though below min_fragments"
    model = FragmentGNN.for_env(env, hidden=8, layers=1)
    assert (model.masks(torch.from_numpy(state[None])).numpy() == masks).all()


def test_only_stop_is_valid_at_max_fragments(blocks):
    env = FragmentEnv(blocks, min_fragments=1, max_fragments=3)
    state = grow(env, 1 + BENZENE, env.encode(METHYL, 0, 0), env.encode(METHYL, 0, 3))
    assert np.nonzero(env.masks(state[None])[0])[0].tolist() == [env.stop_action]


def test_terminal_states_have_no_actions(env):
    final = random_trajectories(env, 50, seed=5).final
    assert env.is_terminal(final).all()
    assert not env.masks(final).any()


def test_empty_state_offers_exactly_the_root_blocks(env):
    mask = env.masks(env.initial_states(1))[0]
    assert np.nonzero(mask)[0].tolist() == list(range(1, 1 + env.n_blocks))
    assert len(env.parents(env.initial_states(1))[0]) == 0


def test_a_used_slot_is_no_longer_offered(env):
    state = grow(env, 1 + BENZENE, env.encode(METHYL, 0, 2))
    mask = env.masks(state[None])[0]
    assert not mask[env.encode(np.arange(env.n_blocks), 0, 2)].any()
    assert mask[env.encode(np.arange(env.n_blocks), 0, 3)].all()
    # The methyl fragment has no stems left once bonded.
    assert not mask[env.encode(np.arange(env.n_blocks), 1, np.arange(env.n_slots)[:, None])].any()


def test_stop_gives_the_same_tree_marked_done(env):
    state = grow(env, 1 + BENZENE, env.encode(METHYL, 0, 0))
    done = env.step(state[None], np.array([env.stop_action]))[0]
    assert done[0] == 1 and (done[1:] == state[1:]).all()


@pytest.mark.parametrize("min_fragments,max_fragments", [(0, 3), (4, 3)])
def test_constructor_rejects_bad_fragment_bounds(blocks, min_fragments, max_fragments):
    with pytest.raises(ValueError, match="min_fragments"):
        FragmentEnv(blocks, min_fragments, max_fragments)


def test_load_blocks_names_the_file_on_malformed_content(tmp_path):
    bad = tmp_path / "blocks.json"
    bad.write_text(json.dumps({"block_name": {"0": "x"}, "block_smi": {"0": "CC"}, "block_r": {"0": [5]}}))
    with pytest.raises(ValueError, match="blocks.json.*block_r"):
        load_blocks(bad)
    bad.write_text(json.dumps({"block_name": {"0": "x"}, "block_smi": {"0": "C1CC"}, "block_r": {"0": [0]}}))
    with pytest.raises(ValueError, match="blocks.json.*cannot parse"):
        load_blocks(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="blocks.json"):
        load_blocks(bad)


def test_every_block_bonds_at_every_stem_as_root_and_as_child(env, blocks):
    """Covers the blocks with explicit hydrogens and charges ([NH3+], [PH], [nH], [nH+], [SH2+])."""
    for j in range(env.n_blocks):
        root_slots = np.nonzero(env.slot_exists[1, j])[0]
        child_slots = np.nonzero(env.slot_exists[0, j])[0]
        as_root = [1 + j] + [env.encode(METHYL, 0, k) for k in root_slots]
        as_child = [1 + BENZENE, env.encode(j, 0, 0)] + [env.encode(METHYL, 1, k) for k in child_slots]
        for actions in (as_root, as_child):
            big = FragmentEnv(blocks, 1, len(actions))
            env_mol = big.to_mol(grow(big, *actions))  # raises ValueError if it does not sanitize
            assert Chem.MolFromSmiles(Chem.MolToSmiles(env_mol)) is not None


@pytest.mark.parametrize("smiles", ["C[NH3+]", "O=[PH](O)O", "c1cc[nH]c1", "c1cn[nH]c1", "c1cc[nH+]cc1", "C[SH2+]"])
def test_blocks_with_explicit_hydrogens_keep_valence_and_charge(env, blocks, smiles):
    for j in [j for j, s in enumerate(blocks.smiles) if s == smiles]:
        for k in np.nonzero(env.slot_exists[1, j])[0]:
            mol = env.to_mol(grow(env, 1 + j, env.encode(METHYL, 0, k)))
            atom = mol.GetAtomWithIdx(int(env.root_slot_atoms[j, k]))
            alone = blocks.mols[j].GetAtomWithIdx(int(env.root_slot_atoms[j, k]))
            assert atom.GetTotalNumHs() == alone.GetTotalNumHs() - 1
            assert Chem.GetFormalCharge(mol) == Chem.GetFormalCharge(blocks.mols[j])


def test_to_mol_rejects_a_state_that_is_not_a_molecule(env):
    # No valid action sequence makes a non-molecule from this data, so build one by hand: a second
    # methyl on fluorine's only slot.
    fluorine = env.blocks.smiles.index("F")
    state = grow(env, 1 + fluorine, env.encode(METHYL, 0, 0))
    state[1 + 2] = METHYL
    state[1 + env.max_fragments + 2] = 0
    state[1 + 2 * env.max_fragments + 2] = 0
    with pytest.raises(ValueError, match="not a valid molecule"):
        env.to_mol(state)


def random_states(env, n, seed):
    states, _ = visited(random_trajectories(env, n, seed))
    return states


@pytest.fixture(scope="module")
def model(env):
    torch.manual_seed(0)
    return FragmentGNN.for_env(env, hidden=32, layers=2).eval()


def test_model_output_has_one_column_per_action_plus_state_flow(env, model):
    states = random_states(env, 8, seed=6)
    out = model(torch.from_numpy(states))
    assert out.shape == (len(states), env.n_actions + 1)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("min_fragments", [1, 3])
def test_model_masks_equal_env_masks(blocks, min_fragments):
    env = FragmentEnv(blocks, min_fragments, 6)
    model = FragmentGNN.for_env(env, hidden=8, layers=1)
    states = random_states(env, 100, seed=7)
    assert (model.masks(torch.from_numpy(states)).numpy() == env.masks(states)).all()


def test_model_is_invariant_to_fragment_renumbering(env, model):
    rng = np.random.default_rng(8)
    states = random_states(env, 30, seed=8)
    states = states[env.n_fragments(states) >= 3]
    renumbered, maps = zip(*(renumber(env, s, rng) for s in states))
    assert any(any(k != v for k, v in m.items()) for m in maps), "no state was actually renumbered"
    with torch.no_grad():
        a = model(torch.from_numpy(states))
        b = model(torch.from_numpy(np.stack(renumbered)))
    torch.testing.assert_close(a[:, 0], b[:, 0], atol=1e-5, rtol=1e-5)  # stop
    torch.testing.assert_close(a[:, -1], b[:, -1], atol=1e-5, rtol=1e-5)  # log F
    shape = (len(states), env.max_fragments, env.n_slots, env.n_blocks)
    a_attach, b_attach = a[:, 1:-1].reshape(shape), b[:, 1:-1].reshape(shape)
    for i, mapping in enumerate(maps):
        for old, new in mapping.items():
            torch.testing.assert_close(a_attach[i, old], b_attach[i, new], atol=1e-5, rtol=1e-5)


def test_empty_batches_keep_their_shapes(env, model):
    none = env.initial_states(0)
    assert env.masks(none).shape == (0, env.n_actions)
    assert env.step(none, np.zeros(0, dtype=np.int64)).shape == (0, env.width)
    assert [len(a) for a in env.parents(none)] == [0, 0, 0]
    assert model(torch.from_numpy(none)).shape == (0, env.n_actions + 1)
    assert model.masks(torch.from_numpy(none)).shape == (0, env.n_actions)


def objective_loss(env, objective, via_records):
    from distgfn.batch import build_batch, read_record, split_batch, stack_batches, to_torch, write_record
    from distgfn.objectives import OBJECTIVES

    torch.manual_seed(0)
    model = FragmentGNN.for_env(env, hidden=16, layers=1)
    trajs = random_trajectories(env, 8, seed=9)
    batch = build_batch(env, trajs, np.linspace(-3.0, 0.0, 8), with_parents=OBJECTIVES[objective].NEEDS_PARENTS)
    if via_records:
        batch = stack_batches([read_record(write_record(str(i), 0, 0.0, part))
                               for i, part in enumerate(split_batch(batch))])
    assert "masks" not in batch, "fragment records leave masks out: the learner rebuilds them"
    batch = with_masks(model, to_torch(batch, torch.device("cpu")))
    states = trajs.states[np.arange(trajs.states.shape[1])[None, :] <= trajs.lengths[:, None]]
    assert (batch["masks"].numpy() == env.masks(states)).all()
    loss = OBJECTIVES[objective].loss(model, batch, eps=1e-8)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("objective", ["fm", "tb", "db"])
def test_objectives_train_on_fragment_batches(env, objective):
    objective_loss(env, objective, via_records=False)


def test_fragment_batches_survive_replay_records(env):
    objective_loss(env, "fm", via_records=True)


def test_passes_the_env_consistency_check_that_train_runs(blocks):
    from distgfn.envcheck import check_env

    for min_fragments, max_fragments in ((1, 3), (2, 8)):
        assert check_env(FragmentEnv(blocks, min_fragments, max_fragments)) == []


def padded_forward(model, states):
    """The model's definition transcribed over padded (N, M) fragment arrays, as it was first
    written: the oracle for the packed implementation (which skips padding and unused slots)."""
    done, blocks, parents, slots = model.split(states)
    n, m = blocks.shape
    is_root = model.is_root
    present, block, to_parent = blocks >= 0, blocks.clamp(min=0), parents.clamp(min=0)
    live, child_live = present[:, :, None].double(), (present & (is_root == 0))[:, :, None].double()
    edge = model.slot_embed(model.slot_index(block.gather(1, to_parent), slots.clamp(min=0), is_root[to_parent]))
    h = (model.block_embed(block) + model.root_embed * is_root[:, None]) * live
    index = to_parent[:, :, None].expand(-1, -1, h.shape[2])
    for down, up, update, norm in zip(model.down, model.up, model.update, model.norm):
        from_parent = torch.relu(down(torch.cat([h.gather(1, index), edge], dim=2))) * child_live
        to_parents = torch.relu(up(torch.cat([h, edge], dim=2))) * child_live
        from_children = torch.zeros_like(h).scatter_add(1, index, to_parents)
        h = norm(h + torch.relu(update(torch.cat([h, from_parent, from_children], dim=2)))) * live
    k = torch.arange(model.n_slots)
    slot = model.slot_embed(model.slot_index(block[:, :, None], k, is_root[None, :, None].expand(n, m, 1)))
    attach = model.slot_head(torch.cat([h[:, :, None].expand(-1, -1, model.n_slots, -1), slot], dim=3))
    empty = ~present[:, 0]
    attach[empty, 0, 0] = model.start_logits
    pooled = (h.sum(dim=1) / present.sum(dim=1, keepdim=True).clamp(min=1)).where(~empty[:, None], model.empty_state)
    stop_flow = model.readout(pooled + done[:, None] * model.done_embed)
    return torch.cat([stop_flow[:, :1], attach.reshape(n, -1), stop_flow[:, 1:]], dim=1)


class DenseOnly(torch.nn.Module):
    """The same model without logits_at: flow matching then takes its dense path."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, states):
        return self.model(states)


def test_packed_model_equals_its_padded_definition_on_valid_actions(env):
    torch.manual_seed(0)
    model = FragmentGNN.for_env(env, hidden=16, layers=2).double()
    states = torch.from_numpy(random_states(env, 40, seed=11))
    valid = torch.cat([model.masks(states), torch.ones(len(states), 1, dtype=torch.bool)], dim=1)
    valid[:, 0] = True  # the stop logit is defined on every state
    with torch.no_grad():
        packed, padded = model(states), padded_forward(model, states)
        rows, actions = torch.nonzero(valid, as_tuple=True)
        asked = model.logits_at(states, rows, actions)
    torch.testing.assert_close(packed[valid], padded[valid], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(asked, packed[rows, actions], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("objective", ["fm", "tb", "db"])
def test_objectives_ask_only_the_logits_they_need_and_get_the_dense_loss(env, objective):
    """The learner's sparse path (logits_at) against the dense one: same loss, same gradients."""
    from distgfn.batch import build_batch, to_torch
    from distgfn.objectives import OBJECTIVES

    torch.manual_seed(0)
    model = FragmentGNN.for_env(env, hidden=16, layers=2).double()
    trajs = random_trajectories(env, 12, seed=12)
    batch = build_batch(env, trajs, np.linspace(-3.0, 1.0, 12), OBJECTIVES[objective].NEEDS_PARENTS)
    batch = with_masks(model, to_torch(batch, torch.device("cpu")))
    batch["log_reward"] = batch["log_reward"].double()
    grads = []
    for net in (model, DenseOnly(model)):
        net.log_z = model.log_z  # TB's log Z
        model.zero_grad()
        loss = OBJECTIVES[objective].loss(net, batch, eps=2.5e-5, leaf_coef=10.0)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (sparse, sparse_grads), (dense, dense_grads) = grads
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=0)
    assert len(sparse_grads) == len(dense_grads) > 10
    for a, b in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_a_fragment_batch_split_into_records_stacks_back_to_the_same_arrays(env):
    """The serial runtime trains on the whole batch, the Ray learner on its records stacked."""
    from distgfn.batch import build_batch, split_batch, training_batch_of

    trajs = random_trajectories(env, 8, seed=4)
    batch = build_batch(env, trajs, np.linspace(-3.0, 0.0, 8), with_parents=True)
    assert_same_arrays(training_batch_of(split_batch(batch)), batch)
