"""The rollout actors of a Ray run, keyed by one name each ("actor3").

    fleet = Fleet(make_actor, max_restarts=10, run_s=1.0)
    fleet.scale_to(4)                   # four actors, each with a call in flight
    ready, _ = ray.wait(fleet.refs() + [learner_call], num_returns=1)
    report, lost = fleet.take(ready[0])  # the actor's report (None if it died), and its next call
    fleet.scale_to(2)                   # two leave: they drain (finish and insert), then go
    fleet.end()                         # the run's end: every actor drains, then goes

Every actor has one call in flight: `run` (sample for actors.report_every_s) or, once it is
leaving, `drain`. A call whose actor died is lost (`lost`); Ray restarts the actor
(actors.max_restarts times) and the fleet calls it again after a short pause (`call_due`).
An actor dead past its restarts leaves the fleet and the run goes on with the others.
Errors are told apart by type: a call that raised (RayTaskError, its cause re-raised here) is
about the work, such as a replay table that died under an insert; a RayActorError on its own
is the actor's own death.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import ray

from distgfn.messages import ActorReport
from distgfn.roles import remote_cause

RETRY_PAUSE_S = 0.5  # before calling an actor again that Ray is restarting


@dataclass
class Member:
    handle: object
    ready: object  # ObjectRef of its first __ray_ready__ call: done once Ray placed and built it
    deaths: int = 0
    restarting: bool = False  # its last call found it dead; Ray is restarting it
    leaving: bool = False  # scaled away: its next call is a drain, then it goes
    retry_at: float | None = None  # when to call it again (while restarting)
    unavailable: str | None = None  # why its reward service was down, at its last report
    # Its last call returned a report, or the replay table got records from it since the last
    # look (a first call still sampling counts); else not placed or started yet, or dead.
    running: bool = False
    inserted: int = 0  # records the replay table has taken from it (under this name), at the last look


class Fleet:
    def __init__(self, make_actor: Callable[[str, int], object], max_restarts: int, run_s: float,
                 on_restart: Callable[[object], None] | None = None, departed: dict | None = None):
        """`make_actor(name, index)` creates a RolloutActor; `on_restart(handle)` is told of an
        actor Ray rebuilt; `departed` collects the lifetime totals of each actor that drained and
        went (scaled away, or at the run's end)."""
        self.make_actor, self.max_restarts, self.run_s, self.on_restart = make_actor, max_restarts, run_s, on_restart
        self.members: dict[str, Member] = {}
        self.calls: dict = {}  # ObjectRef of a call in flight -> the actor's name
        self.departed = departed if departed is not None else {}
        self.next_index = 0
        self.failures = 0  # actor deaths seen
        self.ended: tuple[int, int] | None = None  # at the run's end (see end): (target, running) then

    @property
    def target(self) -> int:
        """The actors that stay (leaving ones not counted; at the run's end, those before it)."""
        if self.ended is not None:
            return self.ended[0]
        return sum(not m.leaving for m in self.members.values())

    @property
    def running(self) -> int:
        """The actors that stay and whose last call returned (the others wait for a node, start,
        or are being restarted)."""
        if self.ended is not None:
            return self.ended[1]
        return sum(m.running and not m.leaving for m in self.members.values())

    def saw_inserts(self, inserted_by: dict[str, int]) -> None:
        """The replay table's records by actor name: an actor whose count grew is sampling."""
        for name, member in self.members.items():
            count = inserted_by.get(name, 0)
            if count > member.inserted and not member.restarting:
                member.running = True
            member.inserted = count

    def handles(self) -> list:
        return [m.handle for m in self.members.values()]

    def unavailable(self) -> dict[str, str | None]:
        return {name: m.unavailable for name, m in self.members.items()}

    def refs(self) -> list:
        return list(self.calls)

    def owns(self, ref) -> bool:
        return ref in self.calls

    def scale_to(self, n: int) -> None:
        """New actors start sampling at once; the newest of the others leave: each drains first.
        Once the run has ended (end), no actor starts or leaves."""
        if self.ended is not None:
            return
        staying = [name for name, m in self.members.items() if not m.leaving]
        for _ in range(n - len(staying)):
            name, index = f"actor{self.next_index}", self.next_index
            self.next_index += 1
            handle = self.make_actor(name, index)
            self.members[name] = Member(handle, handle.__ray_ready__.remote())
            self.call(name)
        for name in staying[n:]:
            member = self.members[name]
            member.leaving = True
            if member.retry_at is not None:  # restarting: its next call is the drain
                member.retry_at = None
                self.call(name)

    def end(self) -> int:
        """The run's end: every actor drains after the call it has in flight (finishes and
        inserts every batch it began), then goes. One that Ray is restarting is not called
        again (a retry call already made is waited for): the batches its death lost are counted
        among the actor failures. One that Ray has not placed or built yet (no node had room,
        or its constructor still runs) began nothing: it goes at once, instead of the end
        waiting on a call that may never return. Returns how many went so."""
        self.ended = self.ended or (self.target, self.running)
        refs = [m.ready for m in self.members.values()]
        built = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        unbuilt = [name for name, m in self.members.items() if m.ready not in built]
        for name in unbuilt:
            self.calls = {ref: owner for ref, owner in self.calls.items() if owner != name}
            self.remove(name, None)
        for member in self.members.values():
            member.leaving, member.retry_at = True, None
        return len(unbuilt)

    def call(self, name: str) -> None:
        m = self.members[name]
        ref = m.handle.drain.remote() if m.leaving else m.handle.run.remote(self.run_s)
        self.calls[ref] = name

    def take(self, ref) -> tuple[ActorReport | None, bool]:
        """The report of a finished call (None if its actor died: `lost` says whether that call
        was lost to a new death, not a retry), after which the actor gets its next call, leaves
        (drained), or waits to be called again while Ray restarts it."""
        name = self.calls.pop(ref)
        try:
            report = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the call raised: about its work, not this actor
            raise remote_cause(e) from None
        except ray.exceptions.RayActorError as e:
            return None, self.died(name, e)
        member = self.members[name]
        if member.restarting and self.on_restart is not None:
            self.on_restart(member.handle)
        member.restarting, member.unavailable, member.running = False, report.unavailable, True
        if member.leaving and report.totals is not None:
            self.remove(name, report.totals)
        else:
            self.call(name)
        return report, False

    def died(self, name: str, error: Exception) -> bool:
        """Schedules a retry while Ray restarts the actor, or removes it when it is past its
        restarts; True if this is a new death (its call is lost), not a retry's."""
        member = self.members[name]
        member.running = False
        if member.restarting:  # a retry while Ray restarts it: nothing new was lost
            member.retry_at = time.monotonic() + RETRY_PAUSE_S
            return False
        member.restarting, self.failures, member.deaths = True, self.failures + 1, member.deaths + 1
        print(f"distgfn: rollout actor {name} failed ({type(error).__name__}); failure {member.deaths}", file=sys.stderr)
        if self.max_restarts < 0 or member.deaths <= self.max_restarts:
            member.retry_at = time.monotonic() + RETRY_PAUSE_S
        else:
            self.remove(name, None)
        return True

    def call_due(self) -> None:
        """Calls again each restarting actor whose pause is over."""
        now = time.monotonic()
        for name, m in self.members.items():
            if m.retry_at is not None and m.retry_at <= now:
                m.retry_at = None
                self.call(name)

    def next_retry_s(self) -> float | None:
        """Seconds until the next restarting actor is due, or None when none is."""
        due = [m.retry_at for m in self.members.values() if m.retry_at is not None]
        return max(min(due) - time.monotonic(), 0.0) if due else None

    def remove(self, name: str, totals: dict | None) -> None:
        """Kills a leaving actor whose drain returned (saying what it contributed), one dead
        for good, or one not built by the run's end."""
        member = self.members.pop(name)
        if totals:
            self.departed[name] = totals
        if totals and self.ended is None:
            print(f"distgfn: {name} left: {totals['trajectories']} trajectories sampled, {totals['records']} "
                  f"records made, {totals['in_replay']} in the replay table", file=sys.stderr)
        ray.kill(member.handle)
        if not self.members and self.ended is None:
            raise RuntimeError("every rollout actor died more than actors.max_restarts times")

    def kill(self, wait_s: float = 10.0) -> None:
        """Kills every actor and waits (up to wait_s) until their calls in flight have ended.
        ray.kill returns before the actor is gone: an actor still running when the replay table
        is killed next fails its insert, and Ray prints that call's error on the console as
        unhandled. The ended calls' errors are read here, so none is left unhandled."""
        for member in self.members.values():
            ray.kill(member.handle)
        refs = list(self.calls)
        ended, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s) if refs else ([], [])
        for ref in ended:
            try:
                ray.get(ref)
            except ray.exceptions.RayError:
                pass  # killed: the death it reports is the one asked for
        self.members, self.calls = {}, {}
