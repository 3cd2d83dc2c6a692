"""`hvt store check [--repair] [--json]`: verify datasets and registry versions in a store; exit 0 only when
healthy (after ``--repair``, when every finding was repaired).

`hvt store gc [--keep-runs N] [--keep-dataset-versions N] [--dry-run] [--json]`: remove old runs and dataset
versions that nothing needs (``hvt.maintenance.gc``); prints what it removed and the bytes freed."""

from __future__ import annotations

import argparse

from hvt.commands import emit_json
from hvt.commands.defaults import constant_default, show_default

_GRACE = constant_default("hvt.maintenance.store_check:DEFAULT_GRACE_S")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("store", help="check (and repair) a store; remove what nothing needs (gc)")
    sub = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="verify manifests, shard sha256s and counts, registry checksums and aliases; list leftovers",
        description="Exit code 0: healthy. 1: findings remain (listed). 2: the store cannot be read.",
    )
    check.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    check.add_argument("--repair", action="store_true",
                       help="remove leftovers of interrupted writes and rewrite missing dataset commit records; "
                       "never deletes committed data")
    show_default(check.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                                    help="with --repair, leave alone leftovers modified more recently than this "
                                    "(a writer may still be running)"), _GRACE)
    check.add_argument("--json", action="store_true", help="the report as JSON")
    check.set_defaults(func=run_check)
    register_gc(sub)


def register_gc(sub: argparse._SubParsersAction) -> None:
    gc = sub.add_parser(
        "gc",
        help="remove old training runs and dataset versions that nothing needs",
        description="Never removes what a registered version's lineage names, an alias's run, a running run (live "
        "lease, or written within --grace), or the newest versions of a dataset. Exit code 0: done (or nothing to "
        "do). 1: something chosen for removal was kept because a writer touched it while gc ran. 2: bad input or "
        "an unreadable registry: nothing removed.",
    )
    gc.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    show_default(gc.add_argument("--keep-runs", type=int, default=None, metavar="N",
                                 help="keep the N most recently written runs, whatever else"),
                 constant_default("hvt.maintenance.gc:DEFAULT_KEEP_RUNS"))
    show_default(gc.add_argument("--keep-dataset-versions", type=int, default=None, metavar="N",
                                 help="keep the N newest committed versions of each dataset (at least 1)"),
                 constant_default("hvt.maintenance.gc:DEFAULT_KEEP_DATASET_VERSIONS"))
    gc.add_argument("--keep-dataset", action="append", default=[], metavar="NAME@VERSION",
                    help="keep this dataset version as well (e.g. a pinned evaluation set); repeatable (default: "
                    "none)")
    show_default(gc.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                                 help="a run or dataset version written more recently than this is left alone: a "
                                 "writer may still be at work"), _GRACE)
    gc.add_argument("--dry-run", action="store_true", help="remove nothing; report what would be removed")
    gc.add_argument("--json", action="store_true", help="the report as JSON")
    gc.set_defaults(func=run_gc)


def run_check(args: argparse.Namespace) -> int:
    from hvt.maintenance.store_check import DEFAULT_GRACE_S, check_store

    report = check_store(args.store, repair=args.repair,
                         grace_s=DEFAULT_GRACE_S if args.grace is None else args.grace)
    if args.json:
        emit_json(report.as_dict(), indent=2)
        return 0 if report.healthy else 1
    print(f"store {report.store}: {report.datasets} dataset versions ({report.shards} shards), "
          f"{report.versions} registry versions checked")
    for finding in report.findings:
        done = f" -> {finding.repaired}" if finding.repaired else (
            f" (--repair: {finding.repair})" if finding.repair and not args.repair else "")
        print(f"  {finding.kind:<10} {finding.path}: {finding.detail}{done}")
    remaining = sum(1 for f in report.findings if not f.resolved)
    print("healthy" if report.healthy else f"NOT healthy: {remaining} finding(s) remain")
    return 0 if report.healthy else 1


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def run_gc(args: argparse.Namespace) -> int:
    from hvt.maintenance import gc

    report = gc.collect_garbage(
        args.store,
        keep_runs=gc.DEFAULT_KEEP_RUNS if args.keep_runs is None else args.keep_runs,
        keep_dataset_versions=gc.DEFAULT_KEEP_DATASET_VERSIONS if args.keep_dataset_versions is None
        else args.keep_dataset_versions,
        keep_datasets=args.keep_dataset,
        grace_s=gc.DEFAULT_GRACE_S if args.grace is None else args.grace,
        dry_run=args.dry_run,
    )
    interrupted = [item for item in report.kept if item.reason.startswith("written to while gc ran")]
    if args.json:
        emit_json(report.as_dict(), indent=2)
        return 1 if interrupted else 0
    verb = "would remove" if report.dry_run else "removed"
    print(f"store {report.store}: gc (keep {report.keep_runs} newest runs, {report.keep_dataset_versions} newest "
          f"versions per dataset, grace {report.grace_s:.0f}s){' -- dry run, nothing removed' if report.dry_run else ''}")
    for item in report.removed:
        print(f"  {verb:<12} {item.kind:<7} {item.path} ({_size(item.bytes)}, {item.files} files): {item.reason}")
    for item in report.kept:
        print(f"  {'kept':<12} {item.kind:<7} {item.path}: {item.reason}")
    freed = f"{report.bytes_freed} bytes ({_size(report.bytes_freed)})"
    print(f"would remove {len(report.removed)} folder(s), freeing {freed}" if report.dry_run
          else f"removed {len(report.removed)} folder(s), freed {freed}")
    return 1 if interrupted else 0
