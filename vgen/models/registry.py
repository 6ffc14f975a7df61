"""Model families by config `family` name. Builders return a Family whose net is declared but
not yet allocated (see layers/init.py)."""
from typing import Callable, Dict

from .family import Family

_BUILDERS: Dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn

    return deco


def _load_builtin():
    from .hunyuan import family as _hunyuan  # noqa: F401  (registers hunyuan)
    from .hunyuan import vae_family as _hunyuan_vae  # noqa: F401  (registers hunyuan_vae)
    from .opensora import family as _opensora  # noqa: F401  (registers opensora_stdit, opensora_stdit2)


def build_family(model_cfg) -> Family:
    _load_builtin()
    name = model_cfg.family
    if name not in _BUILDERS:
        raise KeyError(f"model.family={name!r} is not a known family; known: {sorted(_BUILDERS)}")
    return _BUILDERS[name](model_cfg)


def families():
    _load_builtin()
    return sorted(_BUILDERS)
