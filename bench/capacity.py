"""Capacity plan for a GPU cluster run: clips/s per GPU, decode cores per GPU, nodes, hours and cost.

Every input is either a figure a project command printed (its source says which command and row) or an
assumption, labelled as such; everything else is derived here, so the table in docs/CLUSTER.md is this script's
output. Formulas (hvt counts one multiply-add as one FLOP, as the paper does; a device's peak counts two):

    training FLOPs per real clip  F = 2 x 3 x G x 1e9 x S      G = forward GFLOPs per clip (`hvt flops`),
                                                              3 = forward + backward, S = 2 with static clips
    clips/s per GPU               R = MFU x peak / F           (hvt/model/mfu.py, the same convention)
    decode cores per GPU          D = R / d                    d = decode clips per CPU-second (bench/data.py)
    decode nodes                  max(ceil(gpus x D / CPUs per decode node),          the CPU bound
                                      ceil(gpus x R x B / network bytes/s per node))   the network bound
                                  B = bytes of one clip's canvas (augment_on device: T x H x W x 3 uint8)
    hours per epoch               clips / (gpus x R) / 3600    (decode keeps up by construction)
    cost per epoch                hours x (GPU nodes x price + decode nodes x price + head price)

    python bench/capacity.py                      # the markdown tables of docs/CLUSTER.md
    python bench/capacity.py --mfu 0.42 --json    # with an MFU measured by bench/gpu.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hvt.config import OptimConfig, TrainConfig  # noqa: E402
from hvt.model import flops_summary  # noqa: E402
from hvt.model.mfu import PEAK_BF16_TFLOPS  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """A number and where it comes from: ``measured: <command, row>`` or ``assumption: <basis>``."""

    value: float
    source: str


@dataclass(frozen=True)
class Instance:
    """A cloud instance type as the plan uses it."""

    name: str
    gpu: str | None  # a name in hvt/model/mfu.py's PEAK_BF16_TFLOPS
    gpus: int
    vcpus: int
    price_per_hour: Figure
    network_gbit: Figure | None = None


# --- measured: decode rate per CPU core (docs/BENCHMARKS.md, printed by bench/data.py) -------------------------
DECODE_RATES: dict[str, Figure] = {
    "ray": Figure(48.1, "measured: `python bench/data.py --quick --json` (2026-11-30 16:50 UTC), docs/BENCHMARKS.md "
                        "row real / s256-k1-c23 / ray-1w / device: 48.1 clips per actor CPU-second (Ray Data path; "
                        "the re-run on main read 76.2: the plan takes the lower)"),
    "bare": Figure(62.6, "measured: `python bench/data.py --quick --json` re-run on main (2026-11-30 17:45 UTC), "
                         "row real / s256-k1-c23 / decode-side / device: 62.6 clips/s/core (one process, no Ray)"),
    "orig": Figure(11.4, "measured: `python bench/data.py --quick --json` (2026-11-30 16:50 UTC), row real / orig / "
                         "decode-side / device: 11.4 clips/s/core (shards not transcoded at shard time)"),
}

# --- assumptions ---------------------------------------------------------------------------------------------
MFU_BAND = (
    Figure(0.15, "assumption: low end for a ViT-S-sized model (hidden 384) in bf16 before tuning"),
    Figure(0.30, "assumption: middle of the band"),
    Figure(0.45, "assumption: high end, compiled and well fed"),
)
_PRICE = "assumption: AWS on-demand list price, us-east-1, Linux, as known to the author in 2025; check the current price"
INSTANCES: dict[str, Instance] = {
    "h100": Instance("p5.48xlarge", "H100", 8, 192, Figure(55.04, _PRICE + " (after AWS's mid-2025 P5 price cut)")),
    "a10g": Instance("g5.12xlarge", "A10G", 4, 48, Figure(5.672, _PRICE)),
}
DECODE_NODE = Instance("c6i.8xlarge", None, 0, 32, Figure(1.36, _PRICE + " (spot is cheaper)"),
                       Figure(12.5, "assumption: AWS's network figure for c6i.8xlarge, 12.5 Gbit/s"))
HEAD_NODE = Instance("m6i.2xlarge", None, 0, 8, Figure(0.384, _PRICE))
DATASETS: dict[str, Figure] = {
    "mini-kinetics": Figure(80_000, "assumption: ~80k training clips (issue 23's figure)"),
    "kinetics-700": Figure(650_000, "assumption: ~650k training clips (issue 23's figure)"),
}
VCPU_PER_CORE = Figure(1.0, "assumption: one instance vCPU decodes like one core of the 2-core machine that "
                            "measured d (both are cloud vCPUs)")
VARIANTS = ("jointvt-s", "haltingvt-s-g03-b20", "haltingvt-s-g05-b20", "haltingvt-s-g07-b20")


def peak_tflops(gpu: str) -> Figure:
    """The dense bf16 peak from hvt/model/mfu.py's table (vendors' data sheets)."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key == gpu:
            return Figure(tflops, f"vendor data sheet, dense bf16, no sparsity (hvt/model/mfu.py, {key})")
    raise KeyError(gpu)


def forward_gflops(variant: str) -> Figure:
    """What `hvt flops VARIANT` prints: the no-halting bound (every token kept by the Glimpser goes through every
    block). Training in `remove` mode spends less once tokens halt; the bound is the conservative figure."""
    summary = flops_summary(variant)
    return Figure(summary["no_halting_gflops"], f"`hvt flops {variant}`: no-halting bound at "
                                                f"{summary['num_frames']}x{summary['img_size']}^2")


def cluster_deployment() -> TrainConfig:
    """The `cluster` deployment's TrainConfig (prefect.yaml): trainer CPUs, static clips, the model it trains."""
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    (cluster,) = [d for d in deployments if d["name"] == "cluster"]
    return TrainConfig.model_validate(cluster["parameters"]["config"])


def clips_per_s(mfu: float, peak: float, gflops: float, static_factor: int) -> float:
    """R = MFU x peak / (6 x G x 1e9 x S): training clips per second on one GPU."""
    return mfu * peak * 1e12 / (6.0 * gflops * 1e9 * static_factor)


def plan_row(instance: Instance, variant: str, mfu: Figure, decode_rate: Figure, clips: float, epochs: int,
             static_factor: int, cpus_per_trainer: float, clip_bytes: float) -> dict[str, object]:
    """One cluster of one GPU node: throughput, decode nodes, hours and cost per epoch and per schedule."""
    assert instance.gpu is not None and DECODE_NODE.network_gbit is not None
    rate = clips_per_s(mfu.value, peak_tflops(instance.gpu).value, forward_gflops(variant).value, static_factor)
    decode_cores_per_gpu = rate / (decode_rate.value * VCPU_PER_CORE.value)
    decode_cores = decode_cores_per_gpu * instance.gpus
    by_cpu = math.ceil(decode_cores / DECODE_NODE.vcpus)
    by_network = math.ceil(instance.gpus * rate * clip_bytes / (DECODE_NODE.network_gbit.value * 1e9 / 8))
    decode_nodes = max(by_cpu, by_network)
    spare_vcpus = instance.vcpus - instance.gpus * cpus_per_trainer
    epoch_h = clips / (instance.gpus * rate) / 3600
    price = instance.price_per_hour.value + decode_nodes * DECODE_NODE.price_per_hour.value + HEAD_NODE.price_per_hour.value
    # decode_on "any" with no decode nodes: possible when the GPU node's spare vCPUs keep up
    self_decode = spare_vcpus * decode_rate.value * VCPU_PER_CORE.value >= rate * instance.gpus
    self_price = instance.price_per_hour.value + HEAD_NODE.price_per_hour.value
    return {
        "gpu_node": f"1 x {instance.name} ({instance.gpus} x {instance.gpu})", "variant": variant, "mfu": mfu.value,
        "clips_per_s_per_gpu": rate, "decode_cores_per_gpu": decode_cores_per_gpu,
        "decode_nodes": decode_nodes, "decode_nodes_by_cpu": by_cpu, "decode_nodes_by_network": by_network,
        "spare_vcpus_on_gpu_node": spare_vcpus,
        "spare_vcpus_decode_clips_per_s": spare_vcpus * decode_rate.value * VCPU_PER_CORE.value,
        "node_clips_per_s": rate * instance.gpus,
        "hours_per_epoch": epoch_h, "cost_per_epoch": epoch_h * price,
        "hours_per_schedule": epoch_h * epochs, "cost_per_schedule": epoch_h * epochs * price,
        "cluster_price_per_hour": price, "decode_cores_per_node": decode_cores,
        "cost_per_schedule_decoding_on_gpu_node": epoch_h * epochs * self_price if self_decode else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mfu", type=float, nargs="*", help="MFU values (default: the assumed band)")
    parser.add_argument("--decode", choices=sorted(DECODE_RATES), default="ray", help="which decode rate to plan on")
    parser.add_argument("--json", action="store_true", help="inputs and rows as JSON")
    args = parser.parse_args(argv)
    band = tuple(Figure(m, "given on the command line") for m in args.mfu) if args.mfu else MFU_BAND
    decode_rate = DECODE_RATES[args.decode]
    config = cluster_deployment()
    static_factor = 2 if config.data.static_clips else 1
    cpus_per_trainer = config.scaling.cpus_per_worker
    epochs = OptimConfig.paper_finetune().epochs
    height, width = config.data.transfer_size
    clip_bytes = config.data.num_frames * height * width * 3
    inputs = {
        "decode_rate": asdict(decode_rate), "mfu_band": [asdict(m) for m in band],
        "peaks": {k: asdict(peak_tflops(i.gpu)) for k, i in INSTANCES.items() if i.gpu},
        "gflops": {v: asdict(forward_gflops(v)) for v in VARIANTS},
        "static_factor": Figure(static_factor, "prefect.yaml `cluster` config: DataConfig.static_clips "
                                               f"{config.data.static_clips} (a static clip per real clip)").__dict__,
        "cpus_per_trainer": Figure(cpus_per_trainer, "prefect.yaml `cluster` config: ScalingSpec.cpus_per_worker").__dict__,
        "clip_bytes": Figure(clip_bytes, f"prefect.yaml `cluster` config: {config.data.num_frames} frames x "
                                         f"{height}x{width} canvas (DataConfig.transfer_size) x 3 bytes").__dict__,
        "epochs": Figure(epochs, "OptimConfig.paper_finetune().epochs (the paper's fine-tuning schedule)").__dict__,
        "instances": {k: asdict(i) for k, i in {**INSTANCES, "decode": DECODE_NODE, "head": HEAD_NODE}.items()},
        "datasets": {k: asdict(f) for k, f in DATASETS.items()},
        "vcpu_per_core": asdict(VCPU_PER_CORE),
    }
    per_gpu = [
        plan_row(inst, variant, mfu, decode_rate, 1, epochs, static_factor, cpus_per_trainer, clip_bytes)
        for inst in INSTANCES.values() for variant in VARIANTS for mfu in band
    ]
    plans = [
        {"dataset": name, **plan_row(inst, config.model.name, mfu, decode_rate, clips.value, epochs, static_factor,
                                     cpus_per_trainer, clip_bytes)}
        for name, clips in DATASETS.items() for inst in INSTANCES.values() for mfu in band
    ]
    if args.json:
        print(json.dumps({"inputs": inputs, "per_gpu": per_gpu, "plans": plans}, indent=2))
        return 0
    print(f"Inputs: d = {decode_rate.value} clips per CPU-second ({args.decode}); S = {static_factor}; "
          f"B = {clip_bytes / 1e6:.2f} MB per clip; {cpus_per_trainer:g} CPUs per trainer; "
          f"{epochs} epochs (OptimConfig.paper_finetune()); sources: --json.\n")
    print("| GPU | variant | G (GFLOPs) | MFU | clips/s per GPU | decode cores per GPU | canvas MB/s per GPU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in per_gpu:
        rate = float(row["clips_per_s_per_gpu"])
        gpu = str(row["gpu_node"]).split(" x ")[-1].rstrip(")")
        print(f"| {gpu} | {row['variant']} | {forward_gflops(str(row['variant'])).value:.2f} | {row['mfu']:.2f} | "
              f"{rate:.0f} | {row['decode_cores_per_gpu']:.1f} | {rate * clip_bytes / 1e6:.0f} |")
    decode_cpus = config.data.decode_workers * config.data.decode_cpus
    print(f"\nThe `cluster` config decodes with decode_workers x decode_cpus = {decode_cpus:g} CPUs: "
          f"{decode_cpus * decode_rate.value:.0f} clips/s at d = {decode_rate.value}.")
    print(f"\nPlans for `{config.model.name}` (the `cluster` deployment's model): one GPU node, decode nodes "
          f"{DECODE_NODE.name} ({DECODE_NODE.vcpus} vCPUs), a {HEAD_NODE.name} head. Decode nodes = the larger "
          "of the CPU and the network bound. Last two columns: what the GPU node's vCPUs beyond its trainers' "
          "decode, and the schedule's cost without decode nodes (decode_on any) where they keep up.\n")
    print("| dataset | GPU node | MFU | clips/s | decode cores | decode nodes (CPU / net) | $/h | h/epoch | $/epoch | "
          f"h/{epochs} ep | $/{epochs} ep | spare vCPUs decode | $/{epochs} ep decoding on the GPU node |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in plans:
        own = row["cost_per_schedule_decoding_on_gpu_node"]
        print(f"| {row['dataset']} | {row['gpu_node']} | {row['mfu']:.2f} | {row['node_clips_per_s']:.0f} | "
              f"{row['decode_cores_per_node']:.0f} | "
              f"{row['decode_nodes']} ({row['decode_nodes_by_cpu']} / {row['decode_nodes_by_network']}) | "
              f"{row['cluster_price_per_hour']:.2f} | {row['hours_per_epoch']:.3f} | {row['cost_per_epoch']:.2f} | "
              f"{row['hours_per_schedule']:.2f} | {row['cost_per_schedule']:.0f} | "
              f"{row['spare_vcpus_decode_clips_per_s']:.0f} clips/s | {'-' if own is None else f'{own:.0f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
