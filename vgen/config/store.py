"""Registers the schemas in Hydra's ConfigStore, once, before Hydra composes: the train schema,
the data schemas, and every family's model schema (from its FamilySpec)."""
from hydra.core.config_store import ConfigStore

from .schema import CachedDataConfig, SyntheticDataConfig, TrainConfig, VideoDataConfig

DATA_SCHEMAS = {"synthetic_schema": SyntheticDataConfig, "cached_schema": CachedDataConfig,
                "video_schema": VideoDataConfig}

_registered = False


def register_configs() -> None:
    global _registered
    if _registered:
        return
    from ..models.registry import family_specs

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for spec in family_specs().values():
        cs.store(group="model", name=spec.schema_name, node=spec.schema)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="data", name=name, node=node)
    _registered = True
