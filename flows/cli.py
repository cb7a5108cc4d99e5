"""The ``aiprim`` command line (the public contract of DESIGN.md).

Every command exits 0 on success; on bad input it prints one line,
``aiprim: error: ...``, to stderr and exits non-zero (a traceback only with
``--debug``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  aiprim run                                 whole pipeline on generated telemetry
  aiprim run --source /data/telemetry        bring your own snapshots
  aiprim snapshot balancer --out /tmp/snap   write a snapshot to look at
  aiprim validate balancer data/snapshots/balancer/<id>
  aiprim evaluate balancer --snapshot DIR --json
  aiprim snapshot compiler --tasks tasks.parquet --out DIR    measure your own kernel shapes
  aiprim autotune --task matmul:M=512,N=512,K=512             best schedule after 10 measurements
  aiprim status --json                       champions, metrics, lineage
  aiprim promote balancer --version 3        move the champion alias by hand
  aiprim rollback balancer                   back to the previous champion
  aiprim population balancer --deployments 3 train balancers for 3 drawn deployments
  aiprim transfer balancer --snapshot DIR --deployment eu-west   a ready balancer for a new fleet
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aiprim",
        description="Train, validate, evaluate and ship learned system primitives.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from aiprim import __version__

    p.add_argument("--version", action="version", version=f"aiprim {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="show more: libraries' INFO messages and per-epoch lines (-vv: also the messages known as noise)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the retrain flow: snapshot, validate, tune, train, evaluate, register, promote")
    run.add_argument("--primitives", help="comma-separated subset (default: all in configs/pipeline.yaml)")
    run.add_argument("--source", help="a snapshot directory/URI, or a folder with one per primitive (default: generate)")
    run.add_argument("--profile", help="a named profile of configs/pipeline.yaml (e.g. small)")
    run.add_argument("--rounds", type=int, default=1,
                     help="run the flow this many times back to back (each round new telemetry, trained on the "
                          "experience window) and show the primary metric against the round")
    run.add_argument("--deployment", help="the deployment the snapshots describe and the champions serve (default: default)")

    snap = sub.add_parser("snapshot", help="write a telemetry snapshot (generated, or imported from --source)")
    snap.add_argument("primitive")
    snap.add_argument("--source")
    snap.add_argument("--out", help="root folder (default: data/snapshots); the snapshot goes to OUT/PRIMITIVE/ID")
    snap.add_argument("--to", help="write the snapshot exactly at this path, replacing it (for DVC stages)")
    snap.add_argument("--profile")
    snap.add_argument("--deployment", help="recorded in the manifest (default: default)")
    snapshot_options = snap.add_argument_group("primitive-specific options")
    for prim in _all_primitives():
        before = len(snapshot_options._group_actions)
        prim.add_snapshot_arguments(snapshot_options)
        SNAPSHOT_OPTION_OWNERS.update({a.dest: (prim.name, a.option_strings[0])
                                       for a in snapshot_options._group_actions[before:]})

    val = sub.add_parser("validate", help="validate a snapshot; a bad one is quarantined")
    val.add_argument("primitive")
    val.add_argument("snapshot_dir")
    val.add_argument("--json", action="store_true", help="print the result as JSON")
    val.add_argument("--profile")

    tr = sub.add_parser("train", help="validate, tune, train, evaluate and register a model of a snapshot (challenger)")
    tr.add_argument("primitive")
    tr.add_argument("snapshot_dir")
    tr.add_argument("--trials", type=int, help="Optuna trials before training (default: tune.trials of the config; 0: no tuning)")
    tr.add_argument("--profile")

    ev = sub.add_parser("evaluate", help="score a model and the classical peers on a snapshot")
    ev.add_argument("primitive")
    ev.add_argument("--snapshot", required=True)
    ev.add_argument("--model", default="champion", help="champion | challenger | VERSION | RUN_ID | none (peers only)")
    ev.add_argument("--part", choices=["all", "holdout"], default="all", help="whole snapshot or its held-out part")
    ev.add_argument("--against-champion", action="store_true", help="score the champion beside the model, in the same session")
    ev.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ev.add_argument("--plot", help="also save a comparison chart (PNG) here")
    ev.add_argument("--profile")
    ev.add_argument("--deployment", help="whose champion/challenger --model names (default: default)")

    pr = sub.add_parser("promote", help="promote the challenger through the policy, or --version N by hand")
    pr.add_argument("primitive")
    pr.add_argument("--version")
    pr.add_argument("--profile")
    pr.add_argument("--deployment", help="whose champion moves (default: the version's own deployment)")
    pr.add_argument("--json", action="store_true", help="print the decision as one JSON object")

    rb = sub.add_parser("rollback", help="move the champion alias back to the previous champion")
    rb.add_argument("primitive")
    rb.add_argument("--deployment", help="whose champion moves back (default: default)")
    rb.add_argument("--json", action="store_true", help="print the decision as one JSON object")

    stp = sub.add_parser("step", help="run one declared pipeline step on the values in a folder (what DVC stages call)")
    stp.add_argument("step", choices=[s.name for s in _pipeline().STAGES])
    stp.add_argument("primitive")
    stp.add_argument("--dir", required=True, help="the primitive's pipeline folder (e.g. data/dvc/balancer)")
    stp.add_argument("--profile")

    st = sub.add_parser("status", help="champions, their metrics and lineage")
    st.add_argument("--json", action="store_true", help="print every deployment's champion, challenger, metrics and "
                                                     "lineage as one JSON object")
    st.add_argument("--details", action="store_true", help="every metric and the lineage of each champion")

    sc = sub.add_parser("schedule", help="serve the retrain deployment on a cron schedule (Ctrl-C stops)")
    sc.add_argument("--cron", help='cron expression (default from configs/pipeline.yaml, e.g. "0 3 * * *")')
    sc.add_argument("--profile")
    sc.add_argument("--host", default="127.0.0.1", help="where to start a Prefect server when PREFECT_API_URL is unset")
    sc.add_argument("--port", type=int, default=4200)

    pop = sub.add_parser("population", help="draw N deployments of the primitive's family, train and register each")
    pop.add_argument("primitive")
    pop.add_argument("--deployments", type=int, required=True,
                     help="how many to add; they continue the numbering of those the registry already holds")
    pop.add_argument("--seed", type=int, help="family seed (default: seed of configs/pipeline.yaml)")
    pop.add_argument("--json", action="store_true", help="print one JSON object per deployment")
    pop.add_argument("--profile", help="a named profile of configs/pipeline.yaml (e.g. small)")

    tf = sub.add_parser("transfer", help="decode a primitive for a deployment from its snapshot, register and promote it")
    tf.add_argument("primitive")
    tf.add_argument("--snapshot", required=True, help="the new deployment's telemetry (a snapshot directory or URI)")
    tf.add_argument("--deployment", required=True, help="the deployment the decoded version serves")
    tf.add_argument("--steps", type=int, default=0, help="fine-tuning steps after decoding (default: 0, zero-shot)")
    tf.add_argument("--json", action="store_true", help="print the result as one JSON object")
    tf.add_argument("--profile", help="a named profile of configs/pipeline.yaml (e.g. small)")

    ui = sub.add_parser("ui", help="print (or --launch) the MLflow, Prefect and optuna-dashboard UIs, bound to 127.0.0.1")
    ui.add_argument("--launch", action="store_true", help="start them, wait until each answers, stop all on Ctrl-C/SIGTERM")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.add_argument("--optuna-port", type=int, default=8080)
    ui.add_argument("--profile")
    tn = sub.add_parser("tune", help="tune a primitive on a snapshot, N worker processes sharing one Optuna study")
    tn.add_argument("primitive")
    tn.add_argument("snapshot_dir")
    tn.add_argument("--trials", type=int, help="new trials in all (default: tune.trials of the config)")
    tn.add_argument("--workers", type=int, default=1, help="processes sharing the study (more than 1 needs PostgreSQL storage)")
    tn.add_argument("--json", action="store_true", help="print the study's numbers as one JSON object")
    tn.add_argument("--profile")
    stk = sub.add_parser("stack", help="the production-shaped stack on 127.0.0.1: PostgreSQL, MLflow, Prefect, optuna-dashboard")
    stk.add_argument("action", choices=["up", "down", "status", "run"],
                     help="run: deploy the retrain flow to the stack's work pool and wait for its worker to run it")
    stk.add_argument("--json", action="store_true", help="status: print the services as one JSON object")
    stk.add_argument("--purge", action="store_true", help="down: also delete .stack/ (database, artifacts, credentials)")
    stk.add_argument("--primitives", help="run: comma-separated subset")
    stk.add_argument("--profile", help="run: a named profile of configs/pipeline.yaml")
    stk.add_argument("--source", help="run: a snapshot directory/URI (default: generate)")
    stk.add_argument("--timeout", type=float, default=3600, help="run: seconds to wait for the flow run")
    for prim in _all_primitives():
        EXTRA_COMMANDS.update(prim.add_cli_commands(sub))
    return p


EXTRA_COMMANDS: dict = {}  # verbs the primitives registered through ``Primitive.add_cli_commands``
SNAPSHOT_OPTION_OWNERS: dict = {}  # option dest -> (primitive, flag), from ``Primitive.add_snapshot_arguments``


def _all_primitives():
    from aiprim import primitives

    return [primitives.get(n) for n in primitives.names()]


def _pipeline():
    from . import pipeline

    return pipeline


def _prepare_environment() -> None:
    from .config import home

    # Prefect's local state lives in the project unless the user points elsewhere. Both folders are made
    # here: Prefect creates its home without parents, and a new AIPRIM_HOME (or a PREFECT_HOME under one)
    # would otherwise leave its throwaway API server unable to open its database, found only after the
    # server's start-up timeout.
    os.environ.setdefault("PREFECT_HOME", str(home() / ".prefect"))
    for folder in (home(), Path(os.environ["PREFECT_HOME"]).expanduser()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SystemExit(f"aiprim: error: cannot create {folder}: {error.strerror or error}") from None
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client telemetry, and its first-run notice on terminals
    # Prefect's throwaway API server gets 20 s to start by default; on two cores under load it took more than 90.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "240")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from aiprim._console import setup_logging

    setup_logging(-1 if args.quiet else args.verbose)
    if not args.debug:
        from .errors import hide_library_tracebacks

        hide_library_tracebacks()
    # Inherited by the flow's worker processes (a Dask or Ray task runner), whose branches set up the same console.
    os.environ["AIPRIM_VERBOSITY"] = str(-1 if args.quiet else args.verbose)
    os.environ["AIPRIM_DEBUG"] = "1" if args.debug else ""
    _prepare_environment()
    from ._interrupt import Terminated, sigterm_raises

    try:
        with sigterm_raises():
            if args.command in COMMANDS:
                return COMMANDS[args.command](args) or 0
            from .config import load

            return EXTRA_COMMANDS[args.command](args, load(getattr(args, "profile", None))) or 0
    except (KeyboardInterrupt, Terminated) as stop:
        how, code = ("interrupted", 130) if isinstance(stop, KeyboardInterrupt) else ("terminated", 143)
        branches = " (each branch stopped before its next step; nothing after it was registered or promoted)"
        print(f"aiprim: {how}{branches if args.command == 'run' else ''}", file=sys.stderr)
        return code
    except BrokenPipeError:
        # The reader of stdout left (`aiprim status | head -3`): the rest of the output has nowhere to go, and
        # Python's own flush at exit would fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # noqa: BLE001  (one readable line is the contract)
        if args.debug:
            raise
        print(f"aiprim: error: {_describe(error)}", file=sys.stderr)
        return 1


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    from .errors import AiprimError, describe_failure

    described = describe_failure(error)
    if described != text:  # a cause we can name (an MLflow server that does not answer)
        return described
    known = (AiprimError, ValueError, LookupError, FileNotFoundError, ConnectionError)
    return text if isinstance(error, known) else f"{type(error).__name__}: {text}"


def cmd_run(args) -> int:
    from . import config

    cfg = config.load(args.profile)
    names = args.primitives.split(",") if args.primitives else None
    from aiprim import primitives
    from aiprim.registry._deployments import check_deployment

    check_deployment(args.deployment)

    for name in names or cfg.get("primitives") or primitives.names():
        config.primitive_config(cfg, name)  # an unknown primitive or a misspelt config key fails before anything runs
    from .transfer import check_stage_settings

    check_stage_settings(cfg)
    from .retrain import retrain_with_runner

    if args.rounds < 1:
        raise config.ConfigError(f"--rounds: at least 1, not {args.rounds}")
    per_round: dict[str, list[dict]] = {}
    for number in range(args.rounds):
        if args.rounds > 1:
            from aiprim._console import log

            log(f"round {number + 1} of {args.rounds}")
        results = retrain_with_runner(cfg)(primitives=names, source=args.source, profile=args.profile,
                                           deployment=args.deployment)
        for name, result in results.items():
            per_round.setdefault(name, []).append(result)
        if any(r.get("error") for r in results.values()):
            break
    failed = [r for r in results.values() if r.get("error")]
    try:
        print_summary(results)
    except Exception:
        if not failed:
            raise
        # The summary reads the store that failed the branches (a tracking server that went away): the
        # branches' own errors below say so, once each, instead of this one hiding them.
    if args.rounds > 1:
        from . import rounds

        for name, outcomes in per_round.items():
            curve = rounds.record(name, outcomes, cfg)
            rounds.print_curve(name, curve["points"])
            print(f"  curve: {curve['plot']}")
    if failed:
        for r in failed:
            print(f"aiprim: error: {r['primitive']}: {r['error']}", file=sys.stderr)
        return 1
    return 0


def print_summary(results: dict) -> None:
    """One row per primitive, every number from this run's evaluation: the challenger, the champion it met and
    the best classical peer, all scored on the same held-out part of this run's snapshot."""
    from aiprim import primitives
    from aiprim.primitives import EvaluationReport
    from aiprim.primitives._report import CHAMPION_CANDIDATE
    from aiprim.registry import DEFAULT_DEPLOYMENT

    rows = [("primitive", "primary metric", "challenger", "champion before", "best classical peer", "this run")]
    for name, result in results.items():
        prim = primitives.get(name)
        direction = "higher is better" if prim.higher_is_better else "lower is better"
        challenger = champion = best = "-"
        if result.get("report"):
            report = EvaluationReport.from_dict(result["report"])
            version = (result.get("decision") or {}).get("version")
            if report.primary() is not None:
                challenger = f"{f'v{version} ' if version else ''}{report.primary():.4g}"
            if report.primary(CHAMPION_CANDIDATE) is not None:
                champion = f"v{report.models.get(CHAMPION_CANDIDATE)} {report.primary(CHAMPION_CANDIDATE):.4g}"
            if (peer := report.best_baseline()) is not None:
                best = f"{peer[0]} {peer[1]:.4g}"
        if result.get("error"):
            outcome = "FAILED (see the error below)"
        else:
            d = result["decision"]
            outcome = f"v{d['version']} {'promoted' if d['promoted'] else 'kept challenger'}"
            if d.get("deployment", DEFAULT_DEPLOYMENT) != DEFAULT_DEPLOYMENT:
                outcome += f" (deployment {d['deployment']})"
        rows.append((name, f"{prim.primary_metric} ({direction})", challenger, champion, best, outcome))
    print()
    print("Scored side by side on each snapshot's held-out part (`aiprim status` lists every champion):")
    _print_table(rows)
    print()
    print_ui_commands()


def print_ui_commands(host: str = "127.0.0.1") -> None:
    from .ui import print_commands

    print_commands(host)


def cmd_snapshot(args) -> int:
    from . import config, steps

    from aiprim import primitives

    for dest, (owner, flag) in SNAPSHOT_OPTION_OWNERS.items():
        if owner != args.primitive and getattr(args, dest, None) is not None:
            from .errors import AiprimError

            raise AiprimError(f"{flag} is for the {owner}, not {args.primitive}")
    overrides = primitives.get(args.primitive).source_overrides(args)
    print(steps.snapshot(args.primitive, config.load(args.profile), source=args.source,
                         out=Path(args.out) if args.out else None, exact=Path(args.to) if args.to else None,
                         source_overrides=overrides, deployment=args.deployment))
    return 0


def cmd_validate(args) -> int:
    from . import config, steps

    report = steps.validate(args.primitive, Path(args.snapshot_dir), config.load(args.profile))
    print(json.dumps({"primitive": report.primitive, "snapshot": report.snapshot, "valid": report.ok, "data_docs": report.docs})
          if args.json else report.summary())
    return 0


def cmd_train(args) -> int:
    from . import config, steps

    from .pipeline import run_steps

    cfg = config.load(args.profile)
    if args.trials is not None and args.trials < 0:
        raise config.ConfigError(f"--trials: 0 or more, not {args.trials}")
    # The declared steps between the snapshot (given) and the promotion (the policy's, or yours by hand).
    values = run_steps(args.primitive, cfg, {"snapshot_dir": args.snapshot_dir}, "validate", "register", trials=args.trials)
    print(json.dumps({"run_id": values["run_id"], "version": values["version"], "metrics": values["evaluation"]["metrics"]}, indent=2))
    return 0


def cmd_step(args) -> int:
    from . import config
    from .pipeline import run_stage

    chosen = os.environ.get("AIPRIM_PROFILE")
    if chosen and not args.profile and chosen != config.file_profile():
        # DVC decides what to rerun from dvc.yaml's params; an environment variable is invisible to it, so
        # dvc.lock would record the file's settings for outputs made with another profile's.
        raise ValueError(f"AIPRIM_PROFILE={chosen}: a DVC stage runs with the profile in configs/pipeline.yaml, which "
                         f"dvc.lock records; run `dvc exp run -S configs/pipeline.yaml:profile={chosen}` instead")
    run_stage(args.step, args.primitive, config.load(args.profile), Path(args.dir))
    return 0


def cmd_evaluate(args) -> int:
    from . import config, steps

    model = None if args.model == "none" else args.model
    if model is not None and args.deployment:
        from aiprim.registry import resolve_model

        model = resolve_model(args.primitive, model, args.deployment)[0]
    report = steps.evaluate(args.primitive, Path(args.snapshot), config.load(args.profile), model=model, part=args.part,
                            against_champion=args.against_champion)
    if args.plot:
        fig = steps.comparison_plot(report)
        if fig is not None:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.plot, dpi=110)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        _print_report(report)
    return 0


def _print_report(report) -> None:
    """One row per metric, one column per model and peer: metric names stay whole however many there are."""
    columns = {**report.candidates, **report.baselines}
    keys = sorted({k for m in columns.values() for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    first = max([len("metric")] + [len(k) + 2 for k in keys])  # "* " marks the primary metric
    widths = [max(len(name), 10) + 2 for name in columns]
    print(f"{'metric':<{first}}" + "".join(f"{name:>{w}}" for name, w in zip(columns, widths)))
    for key in keys:
        label = f"* {key}" if key == report.primary_metric else f"  {key}"
        cells = [columns[name].get(key) for name in columns]
        print(f"{label:<{first}}" + "".join(f"{'-' if v is None else format(v, '.4g'):>{w}}" for v, w in zip(cells, widths)))


def cmd_promote(args) -> int:
    from aiprim.registry import promote_version

    from . import config, steps

    if args.version:
        decision = promote_version(args.primitive, args.version, args.deployment)
    else:
        from aiprim.registry._promotion import CHALLENGER, alias_version
        from aiprim.registry._store import configure

        cfg = config.load(args.profile)
        version = alias_version(configure(), args.primitive, CHALLENGER, args.deployment)
        if version is None:
            from .errors import AiprimError

            where = f" for deployment {args.deployment!r}" if args.deployment else ""
            raise AiprimError(f"{args.primitive} has no challenger{where} to promote")
        snapshot_dir = steps.newest_accepted(args.primitive, cfg, args.deployment)
        report = steps.evaluate(args.primitive, snapshot_dir, cfg, model=version, part="holdout", against_champion=True)
        decision = steps.promote(args.primitive, version, snapshot_dir, cfg, report)
    _print_decision(decision, args.json)
    return 0  # "not promoted" is a decision, not an error


def cmd_rollback(args) -> int:
    from aiprim.registry import rollback

    _print_decision(rollback(args.primitive, args.deployment), args.json)
    return 0


def _print_decision(decision, as_json: bool) -> None:
    if as_json:
        print(json.dumps(decision.to_dict()))
        return
    outcome = "champion" if decision.promoted else "not promoted"
    was = f" (was v{decision.previous_champion})" if decision.promoted and decision.previous_champion else ""
    print(f"{decision.primitive} [{decision.deployment}]: v{decision.version} {outcome}{was}: {decision.reason}")


def _trained_elsewhere(entry: dict) -> str:
    """' (trained for NAME)' where the deployment's champion was trained for another deployment, else ''."""
    trained_for = entry.get("trained_for")
    return f" (trained for {trained_for})" if trained_for and trained_for != entry["deployment"] else ""


def cmd_status(args) -> int:
    from . import config, steps

    status = steps.status(config.load())
    if args.json:
        print(json.dumps(status))
        return 0
    entries = [(name, e) for name, entry in status.items() for e in (entry, *entry.get("deployments", {}).values())]
    if args.details:
        for name, entry in entries:
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(entry["metrics"].items()))
            print(f"{name} [{entry['deployment']}]: champion {entry['version'] or '-'}{_trained_elsewhere(entry)} "
                  f"(challenger {entry['challenger'] or '-'}) {metrics}")
            if entry["lineage"]:
                # The descriptor is 37 numbers: `status --json` has it, the line says only that it is there.
                lineage = {k: (f"<{v.count(',') + 1} numbers>" if k == "descriptor" else v)
                           for k, v in entry["lineage"].items()}
                print("  lineage: " + ", ".join(f"{k}={v}" for k, v in sorted(lineage.items())))
        return 0
    from aiprim import primitives

    rows = [("primitive", "deployment", "champion", "challenger", "primary metric", "value", "snapshot")]
    for name, entry in entries:
        metric = primitives.get(name).primary_metric
        value = entry["metrics"].get(metric)
        rows.append((name, entry["deployment"], f"v{entry['version']}{_trained_elsewhere(entry)}" if entry["version"] else "-",
                     f"v{entry['challenger']}" if entry["challenger"] else "-", metric,
                     "-" if value is None else f"{value:.4g}", entry["lineage"].get("snapshot_id", "-")))
    _print_table(rows)
    print("(every metric and the lineage: aiprim status --details; as JSON: --json)")
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings (the first a header) as aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_schedule(args) -> int:
    from . import config

    cfg = config.load(args.profile)
    cron = args.cron or cfg["prefect"].get("cron", "0 3 * * *")
    from cronsim import CronSim, CronSimError

    try:
        CronSim(cron, __import__("datetime").datetime.now())
    except CronSimError as error:
        raise ValueError(f"--cron {cron!r}: not a cron expression ({error})") from None
    from .ui import RunningServers, prefect_server

    # Prefect's ephemeral API cannot run schedules: without PREFECT_API_URL a local server runs while we serve.
    server = prefect_server(args.host, args.port)
    with RunningServers([server]):
        if not server.external:
            os.environ["PREFECT_API_URL"] = server.url + "/api"
            print(f"started a Prefect server at {server.url} (its UI shows the deployment and runs)")
        from .retrain import retrain_with_runner  # Prefect reads PREFECT_API_URL when first imported

        print(f"serving deployment 'retrain' on cron {cron!r} (Ctrl-C stops)", flush=True)
        retrain_with_runner(cfg).serve(name="retrain", cron=cron, parameters={"profile": args.profile})
    return 0


def cmd_population(args) -> int:
    from . import config
    from .transfer import population

    records = population(args.primitive, config.load(args.profile), args.deployments, seed=args.seed)
    if args.json:
        for record in records:
            print(json.dumps(record))
        return 0
    from aiprim import primitives

    metric = primitives.get(args.primitive).primary_metric
    rows = [("deployment", "version", "rows", metric, "promoted", "seconds")]
    for r in records:
        rows.append((r["deployment"], f"v{r['version']}", ", ".join(f"{k}={v:,}" for k, v in r["rows"].items()),
                     "-" if r[metric] is None else f"{r[metric]:.4g}", "yes" if r["promoted"] else "no", f"{r['seconds']:.1f}"))
    _print_table(rows)
    return 0


def cmd_transfer(args) -> int:
    from . import config
    from .transfer import transfer

    result = transfer(args.primitive, args.snapshot, args.deployment, config.load(args.profile), steps_n=args.steps)
    if args.json:
        print(json.dumps(result))
    else:
        d = result["decision"]
        peer = result["best_peer"] or {}
        print(f"{result['primitive']} [{result['deployment']}]: version {result['version']} decoded in "
              f"{result['decode_seconds']:.2f}s from {result['members']} deployments; "
              f"{'promoted' if d['promoted'] else 'not promoted'}: {d['reason']}"
              + (f" (best peer {peer['name']})" if peer.get("name") and peer["name"] not in d["reason"] else ""))
    return 0


def cmd_ui(args) -> int:
    from . import config, ui

    cfg = config.load(args.profile)  # points MLflow at the configured store
    if not args.launch:
        ui.print_commands(args.host)
        return 0
    ports = {"mlflow": args.mlflow_port, "prefect": args.prefect_port, "optuna": args.optuna_port}
    return ui.serve(ui.project_servers(cfg, args.host, ports))


def cmd_tune(args) -> int:
    from . import tune_workers

    return tune_workers.command(args)


def cmd_stack(args) -> int:
    from . import stack

    return stack.command(args)


COMMANDS = {
    "run": cmd_run,
    "step": cmd_step,
    "snapshot": cmd_snapshot,
    "validate": cmd_validate,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "status": cmd_status,
    "schedule": cmd_schedule,
    "ui": cmd_ui,
    "population": cmd_population,
    "transfer": cmd_transfer,
    "tune": cmd_tune,
    "stack": cmd_stack,
}

if __name__ == "__main__":
    sys.exit(main())
