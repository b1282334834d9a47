"""The molecule reward `vina_seh`: Vina docking against sEH (PDB 4JNC, the paper's box).

Its own module so that the other molecule rewards do not import Vina and Meeko.
"""

from __future__ import annotations

from distgfn import data
from distgfn.chem.docking import VinaDocker, reward_from_score


class VinaSEH(VinaDocker):
    """`vina_seh`: Vina docking against sEH; exhaustiveness and max_evals set its search effort."""

    scores_env = "fragments"
    cache_size = 100_000

    def __init__(self, data_dir: str | None = None, seed: int = 0, exhaustiveness: int = 1, max_evals: int = 50_000):
        if exhaustiveness < 1 or max_evals < 0:
            raise ValueError(f"vina_seh needs exhaustiveness >= 1 and max_evals >= 0 (0: Vina's own budget); "
                             f"got exhaustiveness={exhaustiveness}, max_evals={max_evals}")
        super().__init__(data.data_dir("seh", data_dir), exhaustiveness=exhaustiveness, max_evals=max_evals, seed=seed)

    to_reward = staticmethod(reward_from_score)
