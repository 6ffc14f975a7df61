"""Bucket tables by name: conf/buckets/<name>.yaml (shipped with vgen) or a path to a YAML file of
the same form, {resolution: {pixel frames: [keep probability, batch size per rank]}}."""
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from .errors import DataError


def bucket_table_names():
    return sorted(p.name[:-5] for p in resources.files("vgen.conf").joinpath("buckets").iterdir()
                  if p.name.endswith(".yaml"))


def load_bucket_table(name: str) -> dict:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"data.buckets={name}: no such file")
        text = path.read_text()
    else:
        entry = resources.files("vgen.conf").joinpath("buckets", f"{name}.yaml")
        if not entry.is_file():
            raise DataError(f"data.buckets={name!r} is not a known bucket table; known: {bucket_table_names()} "
                            "(or give a YAML path)")
        text = entry.read_text()
    table = OmegaConf.to_container(OmegaConf.create(text))
    return {str(res): {int(frames): list(v) for frames, v in entries.items()} for res, entries in table.items()}
