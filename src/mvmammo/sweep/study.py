"""A sweep's study: its spec file, trial slots, counts for progress, and the stale-trial check.

Exactly N trials: the launcher enqueues N empty WAITING trials, one per *slot* (user attribute ``slot``,
0..N-1); workers only ever claim WAITING trials (never create one), so no race can add an (N+1)-th. The
sampler fills an enqueued trial's values when the worker suggests them. A trial whose worker died (its
heartbeat is older than the grace period) is marked FAIL and re-enqueued with the same params and slot by
Optuna's RetryHeartbeatStaleTrialCallback; the slot names the run folder, so the retry resumes from last.pt.
"""
from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mvmammo.atomic import write_text
from mvmammo.errors import MvError, UsageError

SPEC_NAME = "sweep.json"
HEARTBEAT = "mvmammo:heartbeat"  # trial system attribute: unix time of the worker's last heartbeat
FAIL_REASON = "mvmammo:fail_reason"


@dataclass
class SweepSpec:
    experiment: str
    trials: int
    storage: str
    out: str
    study_name: str = ""
    sampler: str = "random"  # random | tpe
    seed: int = 0  # sampler seed; a slot's values depend only on (seed, slot) with the random sampler
    preset: str = "default"
    overrides: list[str] = field(default_factory=list)
    trial_seeds: list[int] = field(default_factory=lambda: [0])  # runs per trial; its value = their mean
    final_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # seed runs at the best set
    heartbeat_s: float = 60.0
    grace_s: float = 600.0  # a RUNNING trial silent this long is failed and retried
    max_retry: int = 3
    torchrun_gpus: int = 0  # > 1: each trial run is `torchrun --nproc_per_node G -m mvmammo train ...`


def save_spec(spec: SweepSpec) -> Path:
    path = Path(spec.out) / SPEC_NAME
    write_text(path, json.dumps(asdict(spec), indent=2) + "\n")
    return path


def load_spec(sweep_dir: str | Path) -> SweepSpec:
    path = Path(sweep_dir) / SPEC_NAME
    if not path.exists():
        raise MvError(f"{path}: not found; is {sweep_dir} a sweep folder (made by `mvmammo sweep`)?")
    try:
        return SweepSpec(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise MvError(f"{path}: unreadable sweep spec ({exc}); delete the folder to start the sweep again") from None


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(spec: SweepSpec, create: bool = False):
    """(study, storage) for the spec; create=True makes the study if it is new."""
    import optuna

    from mvmammo.sweep.storage import open_storage

    _quiet_optuna()
    storage = open_storage(spec.storage)
    if create:
        study = optuna.create_study(study_name=spec.study_name, storage=storage, direction="maximize",
                                    load_if_exists=True)
    else:
        try:
            study = optuna.load_study(study_name=spec.study_name, storage=storage)
        except KeyError:
            raise MvError(f"study {spec.study_name!r} not found in {spec.storage}; run `mvmammo sweep` first") from None
    return study, storage


def sampler_for(spec: SweepSpec, slot: int):
    """A sampler seeded by (sweep seed, slot): a slot's random values do not depend on which worker ran it."""
    import optuna

    seed = spec.seed * 1_000_003 + slot
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise UsageError(f"--sampler {spec.sampler!r}: one of random, tpe")


def slot_of(trial) -> int:
    return int(trial.user_attrs.get("slot", -1))


def enqueue_slots(study, n: int) -> int:
    """Enqueue the slots 0..n-1 that the study does not have yet; returns how many were added."""
    have = {slot_of(t) for t in study.get_trials(deepcopy=False)}
    added = 0
    for slot in range(n):
        if slot not in have:
            study.enqueue_trial({}, user_attrs={"slot": slot})
            added += 1
    return added


def latest_by_slot(trials) -> dict[int, object]:
    """The latest attempt (highest trial number) of each slot."""
    out: dict[int, object] = {}
    for t in sorted(trials, key=lambda t: t.number):
        s = slot_of(t)
        if s >= 0:
            out[s] = t
    return out


@dataclass(frozen=True)
class Counts:
    done: int
    running: int
    waiting: int
    failed: int  # slots whose latest attempt failed (not retried)
    retried: int  # attempts failed by the heartbeat check and queued again
    best: float | None
    best_slot: int | None

    def line(self, total: int) -> str:
        best = f"best {self.best:.4f} (slot {self.best_slot})" if self.best is not None else "best -"
        return (f"{self.done}/{total} done, {self.running} running, {self.waiting} waiting, {self.failed} failed, "
                f"{self.retried} retried; {best}")

    @property
    def finished(self) -> bool:
        return self.running == 0 and self.waiting == 0


def counts(study) -> Counts:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    latest = latest_by_slot(trials)
    states = [t.state for t in latest.values()]
    retried = sum(1 for t in trials if t.state == TrialState.FAIL and slot_of(t) in latest
                  and t.number != latest[slot_of(t)].number)
    done = [t for t in latest.values() if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(done, key=lambda t: t.value) if done else None
    return Counts(done=len(done), running=states.count(TrialState.RUNNING), waiting=states.count(TrialState.WAITING),
                  failed=states.count(TrialState.FAIL), retried=retried,
                  best=float(best.value) if best else None, best_slot=slot_of(best) if best else None)


def retry_callback(max_retry: int):
    """Optuna's callback that re-enqueues a failed trial (same params and user attrs, so the same slot)."""
    import optuna

    # RetryFailedTrialCallback before optuna 4.9 (deprecated since, removed in 6).
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=max_retry)


def fail_stale(study, storage, grace_s: float, max_retry: int, now: float | None = None) -> list[int]:
    """Fail RUNNING trials whose heartbeat is older than grace_s and re-enqueue them; returns their numbers.

    Several workers may run this at once: the storage lets only one of them move a trial to FAIL (the others
    get UpdateFinishedTrialError or False), and only that one enqueues the retry.
    """
    import optuna
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    retry = retry_callback(max_retry)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(HEARTBEAT)
        if beat is None:  # claimed but no heartbeat written yet: count from its start
            beat = t.datetime_start.timestamp() if t.datetime_start else now
        if now - float(beat) <= grace_s:
            continue
        try:
            storage.set_trial_system_attr(t._trial_id, FAIL_REASON, f"no heartbeat for {now - float(beat):.0f} s")
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first (or it just finished)
        retry(study, storage.get_trial(t._trial_id))
        failed.append(t.number)
    return failed


class Heartbeat:
    """A daemon thread writing the trial's heartbeat attribute every interval_s while the trial runs."""

    def __init__(self, storage, trial_id: int, interval_s: float):
        self._storage, self._id, self._interval = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        import optuna

        while True:
            try:
                self._storage.set_trial_system_attr(self._id, HEARTBEAT, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # failed by another worker's check: nothing to keep alive
            except Exception:  # a transient storage error: the next beat tries again
                pass
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._storage.set_trial_system_attr(self._id, HEARTBEAT, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
