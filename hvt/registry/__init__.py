"""Model registry kept in the store: immutable, checksummed versions with lineage, aliases, and the promotion
policy that decides when ``champion`` moves.

- :mod:`hvt.registry.versions`: the layout, version numbers claimed once, sha256 records, aliases, verified loads.
- :mod:`hvt.registry.policy`: ``PromotionPolicy`` (minimum top-1 gain, GFLOPs budget), the champion decision on
  two figures from the same evaluation set, and ``promote``.

Callers keep writing ``from hvt import registry`` and ``registry.get_version(...)``: every public name (and the
few private ones ``hvt store check`` reads) is re-exported here. Nothing here imports torch or Ray.
"""

from __future__ import annotations

from hvt import storage
from hvt.registry.policy import (
    ChampionDecision,
    PromotionPolicy,
    Rescore,
    Score,
    beats,
    decide,
    decide_against_champion,
    policy_of,
    promote,
    score_of,
)
from hvt.registry.versions import (
    _VERSION_RE,
    CHAMPION,
    CLAIM,
    RECORD,
    STAGING,
    RegistryError,
    RegistryVersion,
    get_alias,
    get_version,
    list_models,
    list_versions,
    load_checkpoint,
    read_record,
    read_verified,
    register_version,
    registry_root,
    set_alias,
    sha256_bytes,
    verify_version,
)

__all__ = [
    "CHAMPION", "CLAIM", "RECORD", "STAGING", "_VERSION_RE", "ChampionDecision", "PromotionPolicy", "RegistryError",
    "RegistryVersion", "Rescore", "Score", "beats", "decide", "decide_against_champion", "get_alias", "get_version",
    "list_models", "list_versions", "load_checkpoint", "policy_of", "promote", "read_record", "read_verified",
    "register_version", "registry_root", "score_of", "set_alias", "sha256_bytes", "storage", "verify_version",
]
