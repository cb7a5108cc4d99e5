"""``aiprim tune PRIMITIVE SNAPSHOT_DIR --workers N``: N processes on one shared Optuna study.

The study lives in a server database (PostgreSQL: the stack's, or any
``AIPRIM_OPTUNA_STORAGE`` / ``optuna.storage`` URL), which serialises trial
numbering, so the processes never hand out one number twice. Each process
runs a fixed share of the requested trials (the shares add up to it), so the
total is exact rather than "at least": a shared stop-at-N count would let
two processes both start the N-th trial. After the workers, the parent logs
one tune run to MLflow through the ordinary tuning step, as ``aiprim run`` does.
"""

from __future__ import annotations

import time
from pathlib import Path

from .errors import AiprimError


def shares(trials: int, workers: int) -> list[int]:
    """``trials`` split over ``workers`` as evenly as it goes (the first ones take the remainder)."""
    return [trials // workers + (index < trials % workers) for index in range(workers)]


def _check_shared_storage(url: str) -> None:
    if url.startswith("sqlite"):
        raise AiprimError("--workers needs a storage that processes can share: optuna.storage is SQLite "
                          "(set AIPRIM_OPTUNA_STORAGE or optuna.storage to a postgresql:// URL; `aiprim stack up` "
                          "writes one into .stack/stack.env)")


def _worker(index: int, name: str, snapshot_dir: str, cfg: dict, trials: int, threads: int, verbosity: int) -> None:
    """One process's share of the trials (run through ``multiprocessing``'s spawn context)."""
    import sys

    import torch

    from aiprim._console import setup_logging

    from . import steps
    from .stack import mask

    setup_logging(verbosity)
    torch.set_num_threads(threads)  # N processes on the machine's cores, not N times all of them
    try:
        steps.tune(name, Path(snapshot_dir), cfg, new_trials=trials, worker=index)
    except Exception as error:  # noqa: BLE001  (one readable line per failed worker, no secret in it)
        print(f"aiprim: error: tune worker {index}: {mask(f'{type(error).__name__}: {error}'.splitlines()[0])}",
              file=sys.stderr)
        sys.exit(1)


def tune_with_workers(name: str, snapshot_dir: Path, cfg: dict, trials: int, workers: int, verbosity: int = 0) -> dict:
    """Run ``trials`` new trials of the primitive's study over ``workers`` processes; the study's numbers after it."""
    import multiprocessing
    import os

    import optuna

    from aiprim.settings import optuna_storage

    from . import config as cfgmod
    from . import steps

    if workers < 1:
        raise AiprimError(f"--workers: at least 1, not {workers}")
    if trials < 1:
        raise AiprimError(f"--trials: at least 1, not {trials}")
    storage_url = optuna_storage(cfg["optuna"]["storage"])
    if workers > 1:
        _check_shared_storage(storage_url)
    if not cfgmod.tune_params(cfg, name).space:
        raise AiprimError(f"{name}: configs/{name}.yaml declares no tune.space: nothing to tune")
    snapshot_dir = Path(snapshot_dir)
    if not snapshot_dir.is_dir():
        raise AiprimError(f"{snapshot_dir}: no such snapshot folder")
    study = steps.study_name(name, snapshot_dir, cfg)
    storage = optuna.storages.RDBStorage(storage_url)
    before = _trial_numbers(storage, study)

    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and open connections
    threads = max(1, (os.cpu_count() or 1) // workers)
    started = time.perf_counter()
    processes = [context.Process(target=_worker, args=(index, name, str(snapshot_dir), cfg, share, threads, verbosity),
                                 name=f"aiprim-tune-{index}")
                 for index, share in enumerate(shares(trials, workers)) if share]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
    seconds = time.perf_counter() - started
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise AiprimError(f"{len(failed)} of {len(processes)} tune workers failed (their lines above)")

    trials_now = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    new = [t for t in trials_now if t.number not in before]
    best = steps.tune(name, snapshot_dir, cfg, trials=len(trials_now))  # nothing left to run: logs the tune run
    states = [t.state.name for t in new]
    return {"primitive": name, "study": study, "workers": len(processes), "new_trials": len(new),
            "numbers": sorted(t.number for t in new), "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "failed": states.count("FAIL"), "seconds": round(seconds, 2),
            "trials_per_minute": round(len(new) / seconds * 60, 2), "best_params": best}


def _trial_numbers(storage, study: str) -> set[int]:
    import optuna

    try:
        return {t.number for t in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)}
    except KeyError:  # no such study yet
        return set()


def command(args) -> int:
    import json

    from aiprim._console import log

    from . import config

    cfg = config.load(args.profile)
    config.primitive_config(cfg, args.primitive)
    trials = args.trials if args.trials is not None else config.tune_params(cfg, args.primitive).trials
    result = tune_with_workers(args.primitive, Path(args.snapshot_dir), cfg, int(trials), args.workers,
                               verbosity=-1 if args.quiet else args.verbose)
    if args.json:
        print(json.dumps(result))
    else:
        log(f"{args.primitive}: {result['new_trials']} trials ({result['complete']} complete, {result['pruned']} pruned, "
            f"{result['failed']} failed) by {result['workers']} workers in {result['seconds']:.1f} s "
            f"({result['trials_per_minute']:.1f}/min); best {result['best_params']}")
    return 0
