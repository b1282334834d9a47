"""distgfn against torchgfn 2.4.1 on the same HyperGrid flow-matching task, in one run.

Both train HyperGrid ndim 4, height 8 (cells {0..7}^4, every cell may exit), the original
reward R0 = 0.1, R1 = 0.5, R2 = 2.0, with flow matching, batch 16 on-policy trajectories
per update (no epsilon, temperature 1), an MLP with 2 hidden layers of 256 (LeakyReLU) over the
per-coordinate one-hot input, Adam lr 1e-3 at a constant rate, on one CPU thread; distgfn
in its serial runtime. The torchgfn model starts from distgfn's initial weights for the same seed.

Prints, for each framework:
  - trajectories per second sampled and trained (a timed run of --speed-steps updates, no
    evaluation inside the timed part);
  - for each of --seeds seeds, trajectories and training seconds until l1_exact <= 0.05,
    evaluated every 125 updates (evaluation time left out), within --budget trajectories; the
    run stops at the target;
and the ratios distgfn/torchgfn: throughput, and over the seeds the geometric mean of the
per-seed ratios of training time (and trajectories) to the target, with a 95% interval. The
same seed gives both frameworks the same initial weights; one seed's figures move a lot.

l1_exact is distgfn's: sum over the 4096 cells of |P_policy(x) - R(x)/Z|, with P_policy the
learned policy's exact terminal distribution (dynamic programming over the DAG, no sampling).

    pip install -e '.[bench]'     # torchgfn==2.4.1 (it declares numpy<2; it runs with numpy 2 too)
    python benchmarks/peer_torchgfn.py [--budget 150000] [--speed-steps 1500] [--seeds 3] [--skip-quality]

About 1 minute per seed plus 1 for throughput, on one CPU thread (each learning run stops at
the target).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distgfn import evaluation as dg_evaluation  # noqa: E402
from distgfn import serial  # noqa: E402
from distgfn.config import load_config  # noqa: E402
from distgfn.learning import Learner  # noqa: E402
from distgfn.metrics import read_metrics  # noqa: E402
from distgfn.rewards.hypergrid import HyperGridReward  # noqa: E402
from paired import ratio_interval  # noqa: E402  (benchmarks/paired.py)

NDIM, HEIGHT, R0, R1, R2 = 4, 8, 0.1, 0.5, 2.0
BATCH, HIDDEN, LAYERS, LR, SEED = 16, 256, 2, 1e-3, 0
TARGET, EVAL_EVERY = 0.05, 125

# distgfn's FM loss adds eps inside both logs (default 2.5e-5); torchgfn's has none, so it is 0
# here. leaf_coef 1 is torchgfn's alpha 1 (weight of the reward-matching terms).
DISTGFN = ["runtime=serial", "seed=0", "env.name=hypergrid", f"env.options.ndim={NDIM}", f"env.options.height={HEIGHT}",
           "env.options.terminate_at_edge=false", "reward.name=hypergrid", f"reward.options.r0={R0}",
           f"reward.options.r1={R1}", f"reward.options.r2={R2}", "reward.beta=1.0", "objective.name=fm",
           "objective.options.eps=0.0", "objective.options.leaf_coef=1.0", "model.name=mlp",
           f"model.options.hidden={HIDDEN}", f"model.options.layers={LAYERS}", f"sampler.batch_size={BATCH}",
           "sampler.epsilon=0.0", "sampler.temperature=1.0", f"learner.lr={LR}", "learner.lr_schedule=constant",
           "learner.device=cpu"]


def differences(learner: Learner) -> str:
    """What still differs between the two setups (the checks in check_setups pass)."""
    fused = learner.optimizer.defaults.get("fused")
    return ("differences: the task, the MLP (architecture and initial weights), the FM loss terms and their "
            "weighting, the sampling policy (checked above) and Adam's lr are the same. Left: distgfn "
            "runs with objective.options.eps=0 (its default adds 2.5e-5 inside the FM logs; torchgfn has no "
            "eps); distgfn's MLP has a 6th output, log F(s), that FM leaves untrained; distgfn's Adam is "
            f"{'fused' if fused else 'torch default'}, torchgfn's is torch's default (same update, other "
            "rounding); the torchgfn model starts from distgfn's initial weights, not torchgfn's own init; "
            "the two draw from different RNG streams, so their trajectories differ; and the implementations "
            "differ as measured (distgfn samples with a numpy copy of the MLP and runs the network once per "
            "distinct state of a batch; torchgfn samples and evaluates parents and children in torch)")


# ---------------------------------------------------------------- the shared exact evaluation

def cells() -> np.ndarray:
    """Every cell, (H^D, D), in ravel (C) order: row k is np.unravel_index(k)."""
    return np.indices((HEIGHT,) * NDIM).reshape(NDIM, -1).T


def target_distribution() -> np.ndarray:
    """R(x)/Z over the cells in ravel order, with distgfn's reward function."""
    x = cells()
    r = HyperGridReward(HEIGHT, R0, R1, R2)(np.concatenate([x, np.ones((len(x), 1), np.int64)], axis=1))
    return r / r.sum()


def terminal_distribution(pi: np.ndarray) -> np.ndarray:
    """Exact P_policy(x) over the cells (ravel order) from pi (H^D, D+1): the forward policy at each
    cell, actions "+1 on axis i" then exit. Dynamic programming over the DAG, level by level
    (a move raises the coordinate sum by 1), as distgfn's ObjectSpace.distribution does."""
    x = cells()
    reach = np.zeros(len(x))
    reach[0] = 1.0
    level = x.sum(axis=1)
    strides = HEIGHT ** np.arange(NDIM - 1, -1, -1)
    for lv in range(int(level.max())):
        at = np.flatnonzero(level == lv)
        for i in range(NDIM):
            src = at[x[at, i] < HEIGHT - 1]
            reach[src + strides[i]] += reach[src] * pi[src, i]  # distinct children for one axis
    return reach * pi[:, NDIM]


def l1_exact(p: np.ndarray, target: np.ndarray) -> float:
    """distgfn's l1_exact (distgfn.evaluation.l1): the SUM over cells of |p - target| (not a mean)."""
    return float(np.abs(p - target).sum())


# ---------------------------------------------------------------- torchgfn

def torchgfn_setup(init_from: torch.nn.Module):
    """torchgfn's HyperGrid, FMGFlowNet over a KHot (per-coordinate one-hot) MLP, with distgfn's
    initial weights copied in, and Adam."""
    from gfn.estimators import DiscretePolicyEstimator
    from gfn.gflownet import FMGFlowNet
    from gfn.gym import HyperGrid
    from gfn.preprocessors import KHotPreprocessor
    from gfn.utils.modules import MLP

    env = HyperGrid(ndim=NDIM, height=HEIGHT, reward_fn_str="original", reward_fn_kwargs={"R0": R0, "R1": R1, "R2": R2},
                    device="cpu")
    pre = KHotPreprocessor(height=HEIGHT, ndim=NDIM)
    module = MLP(input_dim=pre.output_dim, output_dim=env.n_actions, hidden_dim=HIDDEN, n_hidden_layers=LAYERS,
                 activation_fn="leaky_relu")
    copy_weights(init_from, module, env.n_actions)
    logf = DiscretePolicyEstimator(module=module, n_actions=env.n_actions, preprocessor=pre)
    gflownet = FMGFlowNet(logf, alpha=1.0)
    optimizer = torch.optim.Adam(gflownet.parameters(), lr=LR)
    return env, gflownet, optimizer


def copy_weights(src, dst, n_actions: int) -> None:
    """distgfn's MLP (embedding sum = Linear on the one-hot, LeakyReLU, (layers-1) x [Linear,
    LeakyReLU], Linear to n_actions + 1) into torchgfn's (trunk: Linear, LeakyReLU, ..., last_layer)."""
    linears = [m for m in dst.trunk if isinstance(m, torch.nn.Linear)]
    body = [m for m in src.body if isinstance(m, torch.nn.Linear)]
    assert len(linears) == len(body) == LAYERS, (linears, body)
    assert type(src.body[0]) is type(dst.trunk[1]) is torch.nn.LeakyReLU
    assert src.body[0].negative_slope == dst.trunk[1].negative_slope
    with torch.no_grad():
        linears[0].weight.copy_(src.embed.weight.T)
        linears[0].bias.copy_(src.bias)
        for a, b in zip(linears[1:], body[:-1]):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        dst.last_layer.weight.copy_(body[-1].weight[:n_actions])
        dst.last_layer.bias.copy_(body[-1].bias[:n_actions])


def torchgfn_policy(env, gflownet) -> np.ndarray:
    """The sampler's own forward policy (the estimator's to_probability_distribution, T = 1,
    epsilon 0) at every cell, (H^D, D+1), in ravel order, float64."""
    with torch.no_grad():
        states = env.States(torch.from_numpy(cells()))
        dist = gflownet.logF.to_probability_distribution(states, gflownet.logF(states))
        logits = torch.log_softmax(dist.logits.double(), dim=-1)  # renormalised in float64
    return logits.exp().numpy()


def torchgfn_update(env, gflownet, optimizer) -> float:
    trajectories = gflownet.sample_trajectories(env, n=BATCH, save_logprobs=False)
    samples = gflownet.to_training_samples(trajectories)
    optimizer.zero_grad()
    loss = gflownet.loss(env, samples)
    loss.backward()
    optimizer.step()
    return loss.item()


def torchgfn_run(init_from, updates: int, evaluate: bool, target: np.ndarray, seed: int = SEED) -> dict:
    """Trains `updates` updates (stopping once l1_exact <= TARGET when evaluating); only the
    sample + loss + step loop is timed. Evaluation: terminal_distribution + l1_exact (torchgfn's
    env.validate only estimates l1 from fresh samples, so it is not used)."""
    env, gflownet, optimizer = torchgfn_setup(init_from)
    torch.manual_seed(seed)
    train_s, l1s, reached = 0.0, [], None
    for step in range(1, updates + 1):
        start = time.perf_counter()
        loss = torchgfn_update(env, gflownet, optimizer)
        train_s += time.perf_counter() - start
        if not np.isfinite(loss):
            raise FloatingPointError(f"torchgfn FM loss {loss} at step {step}")
        if evaluate and (step % EVAL_EVERY == 0 or step == updates):  # as distgfn: also at the end
            l1 = l1_exact(terminal_distribution(torchgfn_policy(env, gflownet)), target)
            l1s.append((step, l1))
            if l1 <= TARGET:
                reached = {"trajectories": step * BATCH, "train_s": train_s, "step": step}
                break
    return {"train_s": train_s, "trajectories": step * BATCH, "l1s": l1s, "reached": reached}


# ---------------------------------------------------------------- distgfn

class Reached(Exception):
    pass


def distgfn_config(overrides: list[str]):
    return load_config(None, DISTGFN + overrides)


def distgfn_initial_model(seed: int = SEED):
    """The model serial.train starts from: seed_everything(seed), then Learner(cfg)."""
    cfg = distgfn_config([f"seed={seed}"])
    serial.seed_everything(cfg.seed)
    return Learner(cfg)


def distgfn_run(overrides: list[str], stop_at_target: bool) -> tuple[list[dict], list[float]]:
    """serial.train; returns the metrics rows and the training seconds at each (cumulative).
    A row's traj_per_s covers its interval without the row's own evaluation (Rows.make)."""
    cfg = distgfn_config(overrides)

    def progress(row, total):
        if stop_at_target and row.get("l1_exact", 1.0) <= TARGET:
            raise Reached

    with tempfile.TemporaryDirectory() as tmp:
        try:
            serial.train(cfg, Path(tmp), progress=progress)
        except Reached:
            pass
        rows = read_metrics(Path(tmp) / "metrics.jsonl")
    dt = [(r["trajectories"] - (p["trajectories"] if p else 0)) / r["traj_per_s"] for p, r in zip([None] + rows, rows)]
    return rows, list(np.cumsum(dt))


def distgfn_speed(steps: int) -> dict:
    (row,), (seconds,) = distgfn_run([f"learner.steps={steps}", f"log.every={steps}", "eval.every=0"], False)
    return {"traj_per_s": row["trajectories"] / seconds, "trajectories": row["trajectories"], "train_s": seconds}


def distgfn_quality(budget: int, seed: int = SEED) -> dict:
    rows, seconds = distgfn_run([f"seed={seed}", f"learner.steps={budget // BATCH}", f"log.every={EVAL_EVERY}",
                                 f"eval.every={EVAL_EVERY}"], True)
    reached = None
    for row, s in zip(rows, seconds):
        if row.get("l1_exact", 1.0) <= TARGET:
            reached = {"trajectories": row["trajectories"], "train_s": s, "step": row["step"]}
            break
    return {"reached": reached, "l1s": [(r["step"], r["l1_exact"]) for r in rows if "l1_exact" in r],
            "trajectories": rows[-1]["trajectories"], "train_s": seconds[-1]}


# ---------------------------------------------------------------- checks that the setups agree

def check_setups(learner: Learner, target: np.ndarray) -> str:
    """Same reward, grid, masks and initial policy in both, and this script's l1 equals distgfn's."""
    from gfn.gym import HyperGrid

    env, gflownet, _ = torchgfn_setup(learner.model)
    x = torch.from_numpy(cells())
    # Reward over all 4096 cells, and torchgfn's own R/Z (its true_dist).
    ref = HyperGrid(ndim=NDIM, height=HEIGHT, reward_fn_kwargs={"R0": R0, "R1": R1, "R2": R2}, store_all_states=True)
    assert torch.equal(ref.all_states.tensor, x), "torchgfn's state order is not ravel order"
    r_tg = env.reward(env.States(x)).double().numpy()
    r_dg = HyperGridReward(HEIGHT, R0, R1, R2)(np.concatenate([cells(), np.ones((len(x), 1), np.int64)], axis=1))
    assert np.allclose(r_tg, r_dg, rtol=1e-6, atol=0), "the rewards differ"
    assert np.allclose(ref.true_dist().double().numpy(), target, atol=1e-7)
    # Actions and masks: +1 on axis i (i < ndim), exit last; exit allowed everywhere.
    dg_env = learner.env
    dg_states = np.concatenate([cells(), np.zeros((len(x), 1), np.int64)], axis=1)
    assert dg_env.n_actions == env.n_actions and dg_env.stop_action == env.n_actions - 1
    assert np.array_equal(env.States(x).forward_masks.numpy(), dg_env.masks(dg_states))
    child_tg = env.step(env.States(x[:1].repeat(NDIM, 1)), env.actions_from_tensor(torch.arange(NDIM)[:, None])).tensor
    child_dg = dg_env.step(dg_states[:1].repeat(NDIM, 0), np.arange(NDIM))[:, :-1]
    assert np.array_equal(child_tg.numpy(), child_dg)
    # Same initial policy (weights copied) and same exact l1: distgfn's own evaluator on its
    # model vs this script's DP on torchgfn's model.
    pi_tg = torchgfn_policy(env, gflownet)
    logp_dg = learner.log_policy(dg_states)
    assert np.allclose(pi_tg, np.exp(logp_dg), atol=1e-5), np.abs(pi_tg - np.exp(logp_dg)).max()
    space = dg_evaluation.ObjectSpace(dg_env)
    dg_target = space.target(_dg_reward(learner.cfg, dg_env), 1.0)
    assert np.allclose(dg_target, target[dg_env.cell_index(space.objects)], atol=1e-12)
    ours = l1_exact(terminal_distribution(pi_tg), target)
    theirs = dg_evaluation.l1(space.distribution(learner.log_policy), dg_target)
    # The same DP fed distgfn's policy: this script's evaluator equals distgfn's to rounding.
    same = l1_exact(terminal_distribution(np.exp(logp_dg)), target)
    assert abs(same - theirs) < 1e-9, (same, theirs)
    assert abs(ours - theirs) < 1e-4, (ours, theirs)
    loss_tg, loss_dg = same_batch_losses(env, gflownet, learner)
    assert abs(loss_tg - loss_dg) <= 1e-4 * abs(loss_dg), (loss_tg, loss_dg)
    return (f"checked: same reward on all 4096 cells, masks, moves and initial policy; initial l1_exact {ours:.4f} "
            f"(this script, torchgfn model) vs {theirs:.4f} (distgfn's evaluator, distgfn model); FM loss on one "
            f"torchgfn batch of {BATCH}: torchgfn {loss_tg:.6f}, distgfn {loss_dg:.6f}")


def same_batch_losses(env, gflownet, learner: Learner) -> tuple[float, float]:
    """One batch sampled by torchgfn, its FM loss in torchgfn and, converted to distgfn's
    trajectories (+ the terminal state [x, done=1] after the exit), in distgfn (both models
    holding the same weights)."""
    from distgfn.batch import build_batch, to_torch
    from distgfn.objectives import OBJECTIVES
    from distgfn.sampling import Trajectories

    torch.manual_seed(SEED + 1)
    trajectories = gflownet.sample_trajectories(env, n=BATCH, save_logprobs=False)
    with torch.no_grad():
        loss_tg = gflownet.loss(env, gflownet.to_training_samples(trajectories)).item()
    s = trajectories.states.tensor.numpy()  # (T + 1, B, ndim), s_f = -1 after the end
    a = trajectories.actions.tensor.numpy()[..., 0]  # (T, B), exit = ndim
    n = trajectories.terminating_idx.numpy()  # actions taken, the exit included
    width, steps = NDIM + 1, int(n.max())
    states = np.zeros((BATCH, steps + 1, width), np.int64)
    actions = np.full((BATCH, steps), -1, np.int64)
    for b in range(BATCH):
        states[b, : n[b], :NDIM] = s[: n[b], b]
        states[b, n[b]:, :NDIM] = s[n[b] - 1, b]
        states[b, n[b]:, NDIM] = 1
        actions[b, : n[b]] = a[: n[b], b]
        assert actions[b, n[b] - 1] == NDIM and (actions[b, : n[b] - 1] < NDIM).all()
    batch = build_batch(learner.env, Trajectories(states, actions, n), trajectories.log_rewards.numpy(), True)
    with torch.no_grad():
        loss_dg = OBJECTIVES["fm"].loss(learner.model, to_torch(batch, torch.device("cpu")), eps=0.0).item()
    return loss_tg, loss_dg


def _dg_reward(cfg, env):
    from distgfn.rewards import make_reward

    return make_reward(cfg, env)


# ---------------------------------------------------------------- time to quality over seeds

def compare_quality(seeds: int, budget: int, target: np.ndarray) -> None:
    """Both frameworks to l1_exact <= TARGET for each seed (same initial weights per seed), then
    the geometric mean over seeds of distgfn/torchgfn training time and trajectories."""
    reached = {"distgfn": [], "torchgfn": []}
    for seed in range(seeds):
        init = distgfn_initial_model(seed).model
        quality = {"distgfn": distgfn_quality(budget, seed),
                   "torchgfn": torchgfn_run(init, budget // BATCH, True, target, seed)}
        for name, q in quality.items():
            print(f"seed {seed}: {quality_line(name, q)}", flush=True)
            reached[name].append(q["reached"])
    if not all(all(runs) for runs in reached.values()):
        print(f"distgfn/torchgfn training time to l1_exact <= {TARGET}: n/a (a run did not reach it)")
        return
    for name, runs in reached.items():
        print(f"{name}: median {statistics.median(r['trajectories'] for r in runs):,.0f} trajectories, "
              f"{statistics.median(r['train_s'] for r in runs):.1f} s of training to l1_exact <= {TARGET}")
    for what, less in (("train_s", "less training time"), ("trajectories", "fewer trajectories")):
        d, t = [r[what] for r in reached["distgfn"]], [r[what] for r in reached["torchgfn"]]
        interval = ratio_interval(t, d)
        spread = f" (95% interval {interval[1]:.2f}-{interval[2]:.2f})" if interval else ""
        mean = interval[0] if interval else t[0] / d[0]
        print(f"to l1_exact <= {TARGET}, distgfn needs {mean:.2f}x {less} than torchgfn{spread}: "
              f"torchgfn/distgfn per seed, geometric mean over {len(d)} seeds")


def quality_line(name: str, q: dict) -> str:
    every = max(1, len(q["l1s"]) // 8)
    curve = f"l1_exact every {every * EVAL_EVERY} updates: " + " ".join(f"{l1:.3f}" for _, l1 in q["l1s"][::every])
    if q["reached"]:
        hit = q["reached"]
        return (f"{name}: l1_exact <= {TARGET} after {hit['trajectories']} trajectories (step {hit['step']}), "
                f"{hit['train_s']:.1f} s of training; {curve}")
    return (f"{name}: l1_exact <= {TARGET} not reached within {q['trajectories']} trajectories "
            f"({q['train_s']:.1f} s of training; last l1_exact {q['l1s'][-1][1]:.4f}); {curve}")


# ---------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=int, default=150_000, help="trajectories per learning run (each framework)")
    p.add_argument("--speed-steps", type=int, default=1500, help="updates in the timed throughput runs")
    p.add_argument("--skip-quality", action="store_true", help="only the throughput runs")
    p.add_argument("--seeds", type=int, default=3, help="learning runs per framework (seeds 0 .. N-1)")
    args = p.parse_args()
    torch.set_num_threads(1)
    import gfn

    began = time.perf_counter()
    print(f"HyperGrid ndim {NDIM} height {HEIGHT}, R0 {R0} R1 {R1} R2 {R2}, flow matching, batch {BATCH} on-policy "
          f"(eps 0, T 1), MLP {LAYERS}x{HIDDEN} LeakyReLU on one-hot coordinates, Adam lr {LR} constant, torch threads 1; "
          f"distgfn serial runtime vs torchgfn {gfn.__version__}; torch {torch.__version__}, numpy {np.__version__}")
    target = target_distribution()
    learner = distgfn_initial_model()
    print(check_setups(learner, target))
    print(differences(learner))

    speed = {"distgfn": distgfn_speed(args.speed_steps)}
    t = torchgfn_run(learner.model, args.speed_steps, False, target)
    speed["torchgfn"] = {"traj_per_s": t["trajectories"] / t["train_s"], "trajectories": t["trajectories"],
                         "train_s": t["train_s"]}
    for name, s in speed.items():
        print(f"{name}: {s['traj_per_s']:.0f} trajectories/s sampled and trained "
              f"({s['trajectories']} trajectories in {s['train_s']:.1f} s)")

    ratio = speed["distgfn"]["traj_per_s"] / speed["torchgfn"]["traj_per_s"]
    print(f"distgfn/torchgfn throughput: {ratio:.2f}x", flush=True)
    if not args.skip_quality:
        compare_quality(args.seeds, args.budget, target)
    print(f"total wall time {time.perf_counter() - began:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
