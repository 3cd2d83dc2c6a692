"""`hvt registry list|show|promote|import`: versions, metrics and aliases in the store's registry."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from hvt.commands import emit_json

if TYPE_CHECKING:
    from hvt.registry import RegistryVersion


_STORE_HELP = "store URL (default: $HVT_STORE or ./hvt-store)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="list, show, promote and import registered model versions")
    sub = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="versions with their metrics and paths")
    listing.add_argument("--store", default=None, help=_STORE_HELP)
    listing.add_argument("--model", default=None, metavar="NAME", help="only this registered model (default: all)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)

    show = sub.add_parser("show", help="one version: metrics, files, lineage")
    show.add_argument("model")
    show.add_argument("ref", nargs="?", default="champion", help="vN, latest or an alias (default champion)")
    show.add_argument("--store", default=None, help=_STORE_HELP)
    show.set_defaults(func=run_show)

    promote = sub.add_parser(
        "promote",
        help="point the champion alias at a version; refused unless it passes the promotion policy against the "
        "champion on the same evaluation set (the champion is re-scored on the version's set when needed)",
    )
    promote.add_argument("model")
    promote.add_argument("version", help="vN")
    promote.add_argument("--store", default=None, help=_STORE_HELP)
    promote.add_argument("--alias", default="champion", help="the alias to move")
    promote.add_argument("--force", action="store_true",
                         help="promote even if it does not pass the policy (nothing is re-scored)")
    from hvt.commands.train import add_promotion_arguments

    add_promotion_arguments(promote, shown="the policy the version was trained under")
    promote.set_defaults(func=run_promote)

    imp = sub.add_parser(
        "import",
        help="register a released HaltingVT checkpoint (or one trained elsewhere) as a version, official mode",
    )
    imp.add_argument("model", help="registry name to register it under")
    imp.add_argument("--weights", required=True, metavar="PATH_OR_URL",
                     help="state dict: released mmaction2 layout (backbone.model.*, cls_head.*) or this project's")
    imp.add_argument("--variant", required=True, help="model variant it was trained as, e.g. haltingvt-s-g05-b20")
    imp.add_argument("--classes", default=None, metavar="FILE",
                     help="class names, one per line, in head order (default: none: 'class N')")
    imp.add_argument("--model-override", action="append", default=[], metavar="KEY=VALUE",
                     help="ModelConfig override (repeatable), e.g. num_frames=16; halted_token_mode=remove warns "
                     "(default: none)")
    imp.add_argument("--sampling", default=None, help="test sampling FRAMESxINTERVALxCLIPS (default FRAMESx32x1)")
    imp.add_argument("--store", default=None, help=_STORE_HELP)
    imp.add_argument("--json", action="store_true", help="machine-readable output")
    imp.set_defaults(func=run_import)


def _row(version: RegistryVersion, aliases: dict[str, str | None]) -> dict:
    from hvt import registry, storage

    row = version.as_dict()
    row["aliases"] = [registry.CHAMPION] if aliases.get(version.model) == version.version else []
    metrics = version.metrics
    row["val_top1"] = metrics.get("val_top1")
    row["val_top5"] = metrics.get("val_top5")
    row["num_classes"] = metrics.get("num_classes")
    row["checkpoint"] = storage.join(version.path, "model.pt")
    row["report"] = storage.join(version.path, "report.md")
    row["promotion"] = metrics.get("promotion")
    return row


def decision_summary(decision: dict | None) -> str:
    """``promote 0.500 vs v1 0.333`` / ``keep 0.333 vs v1 0.500``: the decision made when a version was
    registered, with both figures (from ``metrics["promotion"]``); ``-`` for versions registered before."""
    if not decision:
        return "-"
    verb = "promote" if decision.get("promoted") else "keep"
    challenger, champion = decision.get("challenger") or {}, decision.get("champion")
    if not champion:
        return f"{verb} {challenger.get('top1', 0.0):.3f} (no champion)"
    return f"{verb} {challenger.get('top1', 0.0):.3f} vs {champion.get('version')} {champion.get('top1', 0.0):.3f}"


def run_list(args: argparse.Namespace) -> int:
    from hvt import registry, storage

    store = storage.resolve_store(args.store)
    versions = registry.list_versions(store, args.model)
    aliases = {m: registry.get_alias(store, m) for m in {v.model for v in versions}}
    rows = [_row(v, aliases) for v in versions]
    if args.json:
        emit_json({"store": store, "versions": rows}, indent=2)
        return 0
    if not rows:
        print(f"no registered models in {registry.registry_root(store)}")
        return 0
    print(f"{'model':32} {'version':8} {'top1':>6} {'top5':>6} {'classes':>7}  alias     {'at registration':28} path")
    for row in rows:
        top1 = f"{row['val_top1']:.3f}" if row["val_top1"] is not None else "-"
        top5 = f"{row['val_top5']:.3f}" if row["val_top5"] is not None else "-"
        alias = ",".join(row["aliases"]) or "-"
        print(f"{row['model']:32} {row['version']:8} {top1:>6} {top5:>6} {row['num_classes']!s:>7}  {alias:9} "
              f"{decision_summary(row['promotion']):28} {row['path']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from hvt import registry, storage

    version = registry.get_version(storage.resolve_store(args.store), args.model, args.ref)
    print(json.dumps(version.as_dict(), indent=2))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from hvt import registry, storage
    from hvt.commands.train import promotion_from_args
    from hvt.promotion import promote_version

    store = storage.resolve_store(args.store)
    flags = promotion_from_args(args)
    policy = None
    if flags:  # flags given win over the policy the version was trained under, key by key
        candidate = registry.get_version(store, args.model, args.version)
        policy = registry.PromotionPolicy.model_validate({**registry.policy_of(candidate).model_dump(), **flags})
    reason = promote_version(store, args.model, args.version, alias=args.alias, force=args.force, policy=policy)
    from hvt.tune.tracking import Tracker, resolve_tracking_uri

    # MLflow's alias follows ours ($MLFLOW_TRACKING_URI; a version never mirrored is left alone)
    moved_to = registry.get_alias(store, args.model, args.alias)
    Tracker(resolve_tracking_uri()).mirror_alias(args.model, moved_to or args.version, args.alias)
    print(f"{args.model}: {args.alias} -> {args.version} ({reason})")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from hvt import storage
    from hvt.commands.train import _parse_override
    from hvt.errors import InputError
    from hvt.imports import import_checkpoint

    overrides = dict(_parse_override(item) for item in args.model_override)
    data_config = None
    if args.sampling:
        from hvt.imports import released_data_config
        from hvt.model import get_config

        try:
            cfg = get_config(args.variant, **{k: v for k, v in overrides.items() if k != "halted_token_mode"})
            data_config = released_data_config(cfg.num_frames, cfg.img_size, args.sampling)
        except (ValueError, TypeError) as err:
            raise InputError(f"--variant {args.variant} / --sampling {args.sampling!r}: {err}") from err
    store = storage.resolve_store(args.store)
    version = import_checkpoint(store, args.model, args.weights, args.variant, classes_file=args.classes,
                                overrides=overrides, data_config=data_config)
    if args.json:
        emit_json(version.as_dict(), indent=2)
    else:
        lineage = version.lineage
        print(f"imported {args.weights} as {version.model} {version.version} at {version.path} "
              f"({lineage['halted_token_mode']} mode, sha256 {lineage['source_sha256'][:12]}...)")
    return 0
