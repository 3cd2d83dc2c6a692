"""`configs/`: the training configs the project runs, written from the code that defines them.

    python -m pipelines.configs write [DIR]    # (re)write DIR (default: configs/ at the repository root)
    python -m pipelines.configs check [DIR]    # exit 1 and name the files that differ from the code

``demo.json`` is ``pipelines.demo.demo_config`` (what `make demo` trains); ``paper-<variant>.json`` is
``hvt.paper.paper_config(variant)`` for each of the paper's variants. Each is a whole ``TrainConfig`` with
``store: ""`` (the trainer's ``$HVT_STORE``, else ./hvt-store), so ``hvt train --config FILE --store S`` trains
exactly it, and ``--print-config`` prints the same form. tests/test_configs_files.py holds the files equal to
the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hvt.config import TrainConfig

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def config_text(config: TrainConfig) -> str:
    """A config as the file holds it: the whole model dump, indented, one trailing newline."""
    return json.dumps(config.model_dump(mode="json"), indent=2) + "\n"


def generated_configs() -> dict[str, TrainConfig]:
    """File name -> the config the code defines for it."""
    from hvt.model.zoo import PAPER_VARIANTS
    from hvt.paper import paper_config
    from pipelines.demo import demo_config

    configs = {"demo.json": demo_config(store="")}
    configs.update({f"paper-{variant}.json": paper_config(variant) for variant in PAPER_VARIANTS})
    return configs


def stale_files(directory: Path) -> list[str]:
    """Names in ``directory`` that are missing, differ from the code, or are not generated at all."""
    expected = {name: config_text(config) for name, config in generated_configs().items()}
    present = {path.name for path in directory.glob("*.json")} if directory.is_dir() else set()
    stale = [name for name, text in expected.items()
             if name not in present or (directory / name).read_text() != text]
    return sorted(stale + [name for name in present - set(expected)])


def write_configs(directory: Path) -> list[Path]:
    """Write every generated config into ``directory`` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, config in generated_configs().items():
        path = directory / name
        path.write_text(config_text(config))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.configs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["write", "check"], help="write the files, or check them against the code")
    parser.add_argument("directory", nargs="?", type=Path, default=CONFIGS_DIR,
                        help=f"where the configs live (default: {CONFIGS_DIR})")
    args = parser.parse_args(argv)
    if args.action == "write":
        for path in write_configs(args.directory):
            print(f"wrote {path}")
        return 0
    stale = stale_files(args.directory)
    if stale:
        print(f"{args.directory}: {', '.join(stale)} differ from the code; run `python -m pipelines.configs write "
              f"{args.directory}`", file=sys.stderr)
        return 1
    print(f"{args.directory}: every config matches the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
