"""Registers the schemas in Hydra's ConfigStore, once, before Hydra composes."""
from hydra.core.config_store import ConfigStore

from .models import HunyuanConfig, HunyuanVAEConfig, STDiT2Config, STDiTConfig
from .schema import CachedDataConfig, SyntheticDataConfig, TrainConfig, VideoDataConfig

MODEL_SCHEMAS = {"stdit_schema": STDiTConfig, "stdit2_schema": STDiT2Config, "hunyuan_schema": HunyuanConfig,
                 "hunyuan_vae_schema": HunyuanVAEConfig}
DATA_SCHEMAS = {"synthetic_schema": SyntheticDataConfig, "cached_schema": CachedDataConfig,
                "video_schema": VideoDataConfig}

_registered = False


def register_configs() -> None:
    global _registered
    if _registered:
        return
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, node in MODEL_SCHEMAS.items():
        cs.store(group="model", name=name, node=node)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="data", name=name, node=node)
    _registered = True
