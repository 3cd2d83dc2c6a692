"""`hvt store check [--repair] [--json]`: verify datasets and registry versions in a store; exit 0 only when
healthy (after ``--repair``, when every finding was repaired)."""

from __future__ import annotations

import argparse

from hvt.commands import emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("store", help="check (and repair) the datasets and registry in a store")
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
    check.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                       help="with --repair, leave alone leftovers modified more recently than this "
                       "(a writer may still be running; default 3600)")
    check.add_argument("--json", action="store_true", help="the report as JSON")
    check.set_defaults(func=run_check)


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
