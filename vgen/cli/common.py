"""What every vgen command does first: logging, and the composed config turned into a plain,
validated config with its run directory resolved."""
import dataclasses
import logging
from contextlib import contextmanager
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.rundir import is_neutral, run_name
from ..config.validate import ConfigError, validate

log = logging.getLogger("vgen")
CONF_PATH = "pkg://vgen.conf"


def setup_logging(rank: int = 0) -> None:
    tag = f" r{rank}" if int(os.environ.get("MS_WORKER_NUM", "1") or 1) > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s vgen{tag}] %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)


def plain_config(cfg: DictConfig) -> DictConfig:
    """Resolved, enums as strings, no schema objects: what config.yaml holds."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def compose_config(overrides) -> DictConfig:
    """The plain, validated config of vgen-train's conf tree with these overrides (for tools that
    run outside a Hydra app)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..config.store import register_configs

    register_configs()
    try:
        with initialize_config_module("vgen.conf", version_base=None):
            cfg = compose("train", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"cannot compose the config from {list(overrides)}: {e}") from e
    plain = plain_config(cfg)
    validate(plain)
    return plain


def reject_added_keys(cfg: DictConfig, overrides) -> None:
    """`+key=value` may add entries to dict-typed fields (parallel.recompute_kinds, model.mask_ratios)
    but not keys that a schema does not have: those fail like any unknown key."""
    errors = []
    for override in overrides:
        if not override.startswith("+"):
            continue
        key = override.lstrip("+").split("=", 1)[0]
        parent_path, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_path) if parent_path else cfg
        schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
        if schema is not None and dataclasses.is_dataclass(schema):
            known = {f.name for f in dataclasses.fields(schema)}
            if leaf not in known:
                where = parent_path or "the root config"
                errors.append(f"{override}: {where} has no key {leaf!r} ({schema.__name__}); known: {sorted(known)}")
    if errors:
        raise ConfigError("unknown key(s) added with '+':\n  " + "\n  ".join(errors))


def prepare(cfg: DictConfig) -> DictConfig:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    reject_added_keys(cfg, hc.overrides.task)
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    plain = plain_config(cfg)
    if plain.experiment is None and choices.get("experiment"):
        plain.experiment = choices["experiment"]
    if plain.run_dir is None:
        plain.run_dir = str(Path(plain.runs_root) / run_name(choices, list(hc.overrides.task)))
    validate(plain)
    return plain


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def freeze(cfg: DictConfig, run_dir: Path) -> Path:
    """Write <run_dir>/config.yaml; refuse to continue a run whose training config differs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if path.is_file():
        old = _flat(OmegaConf.to_container(OmegaConf.load(path)))
        new = _flat(OmegaConf.to_container(cfg))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not is_neutral(k)
                         and k not in ("experiment",))
        if changed and cfg.resume != "none":
            diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
            raise ConfigError(f"{run_dir} holds a run with another config ({diff}). Continue it unchanged, pass "
                              f"run_dir=<new dir> for a new run, or resume=none to restart this one.")
    from ..train.checkpoint import write_text_atomic

    write_text_atomic(path, OmegaConf.to_yaml(cfg))
    return path


def fail(e: Exception, code: int = 2):
    log.error("%s", e)
    sys.exit(code)


@contextmanager
def user_errors():
    """vgen's own errors (a bad config, data file or weights file) end the command with their message
    and exit code 2, not a traceback."""
    from ..data.errors import DataError
    from ..models.weights import WeightsError

    try:
        yield
    except (ConfigError, DataError, WeightsError) as e:
        fail(e)


def launch_workers(parallel, log_dir: Path, frozen_config: Path, *job: str) -> None:
    """Runs the job on parallel.workers msrun workers that read only the frozen config (Hydra composed
    once); a worker's failure is this command's exit code, a clean return lets a --multirun sweep go on."""
    from ..parallel.launch import msrun_command, run_msrun
    from . import worker

    code = run_msrun(msrun_command(parallel, log_dir, worker.__file__, str(frozen_config), *job))
    if code:
        raise SystemExit(code)
