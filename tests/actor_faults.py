"""Killing a rollout actor so that the driver is sure to see the death.

Importable as `actor_faults` because pytest puts tests/ on sys.path.

A kill only shows as a lost call when it lands while one of the actor's calls is in flight. A
call that had already returned succeeds, and a later call may reach the restarted actor and
succeed too, so the driver never learns of the death. Calling the actor (even `version`) waits
behind its `run` call, so nothing here calls it.
"""

from __future__ import annotations


def kill_during_a_call(ray, fleet, restart: bool = True, timeout_s: float = 60.0) -> tuple[str, bool] | None:
    """Kills the first actor whose call is still in flight (Ray restarts it when `restart` and
    it has restarts left) and waits (bounded) for that call. Returns the actor's name and
    whether the call was lost to the death (False: it had returned before the kill landed),
    or None when every call had returned and nothing was killed (try at the next row)."""
    pending = [(ref, name) for ref, name in fleet.calls.items() if not ray.wait([ref], timeout=0)[0]]
    if not pending:
        return None
    ref, name = pending[0]
    ray.kill(fleet.members[name].handle, no_restart=not restart)
    try:
        ray.get(ref, timeout=timeout_s)
    except ray.exceptions.RayActorError:
        return name, True
    return name, False
