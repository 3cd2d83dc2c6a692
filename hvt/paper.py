"""The paper's training setting as a ``TrainConfig``: HaltingVT on Mini-Kinetics, fine-tuned from ImageNet DeiT-S.

Wu et al. (arXiv 2401.04975) train every variant the same way: 8x32x1 clips at 224^2, DeiT-S weights as the
initialisation and DeiT's fine-tuning recipe (``OptimConfig.paper_finetune``). The variants are
``hvt.model.zoo.PAPER_VARIANTS``. ``configs/paper-<variant>.json`` are these configs written out
(``python -m pipelines.configs write``); the `cluster` deployment and ``infra/k8s/rayjob.yaml`` run
``paper_config()``.
"""

from __future__ import annotations

from hvt.config import ModelSpec, OptimConfig, ScalingSpec, TrainConfig
from hvt.data.config import DataConfig

PAPER_DATASET = "mini-kinetics"
PAPER_DEFAULT_VARIANT = "haltingvt-s-g05-b20"
# ImageNet-1k DeiT-S (facebookresearch/deit), the backbone every paper variant starts from
DEIT_S_URL = "https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth"


def paper_config(variant: str = PAPER_DEFAULT_VARIANT, *, store: str = "") -> TrainConfig:
    """The paper's recipe for ``variant`` on GPU workers of a Ray cluster.

    ``store`` "" means the training process's ``$HVT_STORE`` (else ./hvt-store). Four GPU workers of 4 CPUs each;
    clips are read and decoded only on nodes with the ``decode`` resource (``infra/``: the CPU decode group, which
    an autoscaler starts for the first decode task)."""
    return TrainConfig(
        store=store,
        dataset_name=PAPER_DATASET,
        model=ModelSpec(name=variant, pretrained=DEIT_S_URL),
        data=DataConfig(num_frames=8, frame_interval=32, num_clips=1, crop_size=224, decode_workers=16,
                        decode_cpus=1.0),
        optim=OptimConfig.paper_finetune(),
        scaling=ScalingSpec(num_workers=4, use_gpu=True, cpus_per_worker=4, max_failures=3,
                            decode_on="decode-nodes"),
    )
