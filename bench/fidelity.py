"""How much a released model's outputs change when halted tokens are masked or removed instead of zeroed.

The released HaltingVT weights were trained in ``official`` mode (halted tokens zeroed but still attended). On the
golden cases in ``../shared/fidelity`` (random weights in the released layout, their inputs), this runs each case
in ``official``, ``mask`` and ``remove`` mode and prints, against ``official``: the max |logit diff| and the
top-1 agreement, plus the max |logit diff| of ``official`` against the released code's own logits.

    python bench/fidelity.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hvt.imports import overrides_from_released_config  # noqa: E402
from hvt.model import create_model, load_weights  # noqa: E402

FIDELITY = Path(__file__).resolve().parents[2] / "shared" / "fidelity"


def run_case(path: Path) -> dict:
    case = torch.load(path, map_location="cpu", weights_only=True)
    overrides = overrides_from_released_config(case["config"])
    logits = {}
    for mode in ("official", "mask", "remove"):
        model = create_model("haltingvt-s-g05-b20", halted_token_mode=mode, **overrides)
        load_weights(model, case["state_dict"], kind="released", strict=True)
        with torch.no_grad():
            logits[mode] = model.eval()(case["input"].float()).logits
    ref = logits["official"]
    row = {"case": path.name, "clips": int(ref.shape[0]),
           "official_vs_released_max_abs_logit_diff": float((ref - case["logits"]).abs().max())}
    for mode in ("mask", "remove"):
        row[f"{mode}_max_abs_logit_diff"] = float((logits[mode] - ref).abs().max())
        row[f"{mode}_top1_agreement"] = float((logits[mode].argmax(-1) == ref.argmax(-1)).float().mean())
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = sorted(FIDELITY.glob("*.pt"))
    if not cases:
        print(f"no golden cases in {FIDELITY} (it lives in ../shared beside the checkout)", file=sys.stderr)
        return 2
    rows = [run_case(p) for p in cases]
    total = sum(r["clips"] for r in rows)
    for r in rows:
        print(f"{r['case']:28} official vs released {r['official_vs_released_max_abs_logit_diff']:.2e} | "
              f"mask: max|dlogit| {r['mask_max_abs_logit_diff']:.3f} top-1 agree {r['mask_top1_agreement']:.2f} | "
              f"remove: max|dlogit| {r['remove_max_abs_logit_diff']:.3f} top-1 agree {r['remove_top1_agreement']:.2f}")
    for mode in ("mask", "remove"):
        agree = sum(r[f"{mode}_top1_agreement"] * r["clips"] for r in rows) / total
        worst = max(r[f"{mode}_max_abs_logit_diff"] for r in rows)
        print(f"{mode} vs official over {total} clips: max |logit diff| {worst:.3f}, top-1 agreement {agree:.2f}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
