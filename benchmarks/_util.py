"""Shared by the benchmark scripts: config composition and memory readings."""
import resource
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compose(overrides):
    from hydra import compose as hy_compose
    from hydra import initialize_config_module

    from vgen.cli.common import plain_config
    from vgen.config.store import register_configs

    register_configs()
    with initialize_config_module("vgen.conf", version_base=None):
        return plain_config(hy_compose("train", overrides=list(overrides)))


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
