"""The model families: one line each, 'module:attribute' of its FamilySpec (loaded with
import_module; the declarations are light, their build functions are imported only when a run
builds the family). Everything that differs between families is read from these specs."""
from functools import lru_cache
from typing import Dict

from .family import Family, FamilySpec, resolve

FAMILIES = (
    "vgen.models.opensora.spec:STDIT",
    "vgen.models.opensora.spec:STDIT2",
    "vgen.models.hunyuan.spec:DIT",
    "vgen.models.hunyuan.spec:VAE",
    "vgen.models.stepvideo.spec:FAMILY",
    "vgen.models.videocrafter.spec:FAMILY",
    "vgen.models.modelscope.spec:FAMILY",
)


@lru_cache(maxsize=1)
def family_specs() -> Dict[str, FamilySpec]:
    """{model.family: FamilySpec}; two families may not share a name or a schema name."""
    specs: Dict[str, FamilySpec] = {}
    for target in FAMILIES:
        spec = resolve(target)
        if not isinstance(spec, FamilySpec):
            raise TypeError(f"{target} is not a FamilySpec")
        clash = [s.name for s in specs.values() if spec.schema_name == s.schema_name or spec.name == s.name]
        if clash:
            raise ValueError(f"{target}: family {spec.name!r} / schema {spec.schema_name!r} clashes with {clash}")
        specs[spec.name] = spec
    return specs


def family_spec(name: str) -> FamilySpec:
    specs = family_specs()
    if name not in specs:
        raise KeyError(f"model.family={name!r} is not a known family; known: {sorted(specs)}")
    return specs[name]


def build_family(model_cfg) -> Family:
    """The family of model_cfg.family, its denoiser declared but not yet allocated (layers/init.py)."""
    spec = family_spec(model_cfg.family)
    family = resolve(spec.build)(model_cfg)
    if family.spec is not spec:
        raise TypeError(f"{spec.build} must return a Family whose spec is {spec.name}'s FamilySpec")
    return family


def families():
    return sorted(family_specs())
