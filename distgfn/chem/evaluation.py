"""The molecule task's evaluator: every generated molecule goes to RUN_DIR/molecules.jsonl, and
the metrics rows get unique molecules, top-k rewards, modes and top-100 similarity.

It keeps no checkpoint state beyond a counter: on resume it drops the molecules logged after
the checkpoint's step (they are generated again) and rebuilds its tracker from the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distgfn.chem.tracking import MOLECULES_FILE, MoleculeLog, MoleculeTracker, drop_molecules_after, read_molecules


class MoleculeEvaluator:
    """The evaluator the fragment env declares (`FragmentEnv.evaluator`)."""

    exact = False  # no exact distribution over molecules

    def __init__(self, cfg, env, run_dir: Path):
        self.env, self.beta = env, cfg.reward.beta
        self.path = Path(run_dir) / MOLECULES_FILE
        self.mode_reward, self.mode_similarity = cfg.eval.mode_reward, cfg.eval.mode_similarity
        self.tracker = MoleculeTracker(self.mode_reward, self.mode_similarity)
        self.log = MoleculeLog(self.path)
        self.failures = 0

    def observe(self, sampled, step: int) -> None:
        smiles = sampled.keys_of(self.env)  # FragmentEnv's keys are its objects: canonical SMILES
        ok = np.isfinite(sampled.log_reward)
        reward = np.exp(sampled.log_reward[ok] / self.beta)  # R(x), before the beta exponent
        scored = [s for s, good in zip(smiles, ok) if good]
        self.log.write(scored, reward, sampled.raw[ok], step, sampled.versions[ok].tolist())
        failed = np.flatnonzero(~ok)
        self.log.write_errors([smiles[i] for i in failed], [sampled.errors[i] for i in failed], step,
                              sampled.versions[failed].tolist())
        self.tracker.add(scored, reward, sampled.raw[ok])
        self.failures += len(failed)

    def sampled_metrics(self) -> dict:
        return {**self.tracker.metrics(), "reward_failures": self.failures}

    def exact_metrics(self, log_policy) -> dict:
        return {}

    def state(self) -> dict:
        return {}  # molecules.jsonl is the state

    def restore(self, state: dict, step: int) -> None:
        self.log.close()
        drop_molecules_after(self.path, step)
        rows = read_molecules(self.path)
        self.tracker = MoleculeTracker.from_log(rows, self.mode_reward, self.mode_similarity)
        self.failures = sum("error" in row for row in rows)
        self.log = MoleculeLog(self.path)

    def close(self) -> None:
        self.log.close()

    @staticmethod
    def report(cfg, run_dir: Path) -> str:
        """The PNG of the best molecules, the progress plot and the summary of a molecule run."""
        from distgfn.chem.report import write_report

        report = write_report(run_dir, cfg.eval.mode_reward, cfg.eval.mode_similarity)
        return (f"best molecules in {report.top_molecules}, progress in {report.progress}, "
                f"summary in {report.summary}")
