"""Preflight of a training run: before any model is built or any worker starts, every input the run
will read is set and readable (the CSV and the data it points to, caches, pretrained weights, the
online encoders' weights and tokenizers, the rewards'). Every problem is one line naming the key
and the fix, all of them in one ConfigError. Light: no MindSpore import, nothing is opened but
file system metadata."""
import os
from typing import List

from .models import TEXT_ENCODER_KEYS, seeded
from .validate import ConfigError

UNSET = "???"  # OmegaConf's MISSING, as a plain config keeps it


def unset_keys(node: dict, prefix: str = "") -> List[str]:
    """Dotted keys whose value is still MISSING."""
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if value == UNSET:
            out.append(path)
        elif isinstance(value, dict):
            out += unset_keys(value, path + ".")
    return out


class Inputs:
    """Collects the problems of the paths a run reads."""

    def __init__(self):
        self.problems: List[str] = []

    def need(self, key: str, value, kind: str, what: str, fix: str = "") -> None:
        """`value` (the config's `key`) must name a readable `kind` ("file", "dir" or "any")."""
        if value is None or value == "" or value == UNSET:
            self.problems.append(f"{key} is not set: {what}{'; ' + fix if fix else ''}")
            return
        exists = {"file": os.path.isfile, "dir": os.path.isdir, "any": os.path.exists}[kind](value)
        if not exists:
            found = " (it is a directory)" if kind == "file" and os.path.isdir(value) else ""
            self.problems.append(f"{key}={value}: no such {'path' if kind == 'any' else kind}{found}: {what}"
                                 f"{'; ' + fix if fix else ''}")
        elif not os.access(value, os.R_OK | (os.X_OK if os.path.isdir(value) else 0)):
            self.problems.append(f"{key}={value}: not readable by this user: {what}")

    def maybe(self, key: str, value, kind: str, what: str) -> None:
        if value not in (None, "", UNSET):
            self.need(key, value, kind, what)


def check_encoders(cfg: dict, inputs: Inputs) -> None:
    """The frozen encoders that run online: their weights (unless tiny) and tokenizers."""
    m, d = cfg["model"], cfg["data"]
    if d.get("kind") != "video":
        return
    vae = m.get("vae")
    if vae is not None and d.get("latents", "online") == "online" and not seeded(vae["name"]):
        inputs.need("model.vae.path", vae.get("path"), "any", f"the {vae['name']} weights that encode the clips online",
                    "convert them with tools/convert_weights.py, or cache the latents (vgen-cache latents, "
                    "data.latents=cache)")
    if d.get("text", "online") != "online":
        return
    for key in TEXT_ENCODER_KEYS:
        enc = m.get(key)
        if enc is None:
            continue
        if not seeded(enc["name"]):
            inputs.need(f"model.{key}.path", enc.get("path"), "any", f"the {enc['name']} weights that encode the "
                        "captions online", "convert them with tools/convert_weights.py, or cache the text "
                        "(vgen-cache text, data.text=cache)")
        inputs.need(f"model.{key}.tokenizer", enc.get("tokenizer"), "any", f"the {enc['name']} tokenizer files")


def check_data(cfg: dict, inputs: Inputs) -> None:
    d = cfg["data"]
    kind = d.get("kind")
    if kind in ("video", "cached"):
        inputs.need("data.csv_path", d.get("csv_path"), "file", "the CSV that lists the clips and captions",
                    "set data.csv_path=<file.csv>")
    if kind == "video":
        inputs.maybe("data.root", d.get("root"), "dir", "the directory the CSV's video paths are relative to")
        if d.get("latents") == "cache" or d.get("text") == "cache":
            inputs.need("data.cache_dir", d.get("cache_dir"), "dir", "the caches vgen-cache wrote",
                        "run vgen-cache over the same CSV and set data.cache_dir")
    if kind == "cached":
        inputs.need("data.text_emb_dir", d.get("text_emb_dir"), "dir", "the cached text embeddings")
        inputs.need("data.latent_dir", d.get("latent_dir"), "dir", "the cached latents")


def check_rewards(cfg: dict, inputs: Inputs) -> None:
    d = cfg.get("distill") or {}
    if not d.get("enabled"):
        return
    for key in ("image_reward", "video_reward"):
        r = d.get(key) or {}
        model = r.get("model")
        if not model:
            continue
        if not seeded(model):
            inputs.need(f"distill.{key}.path", r.get("path"), "any", f"the {model} weights",
                        "convert the official file with tools/convert_weights.py")
        default = (cfg["model"].get("text_encoder") or {}).get("tokenizer") if key == "image_reward" else None
        inputs.need(f"distill.{key}.tokenizer", r.get("tokenizer") or default, "any", f"the {model} tokenizer")


def available_memory_gb() -> float:
    """MemAvailable of this machine (0 where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 2 ** 20
    except (OSError, StopIteration):
        return 0.0


def memory_problems(cfg, plan, device: str) -> List[str]:
    """On CPU the ranks of a node share its memory: their planned model states must fit in it."""
    if device != "CPU":
        return []
    p = cfg.parallel
    per_node = max(1, p.workers // max(1, p.nodes))
    need, have = per_node * plan.total / 2 ** 30, available_memory_gb()
    if not have or need <= have:
        return []
    return [f"the memory plan needs {need:.1f} GiB on this node ({per_node} worker(s) x {plan.total / 2 ** 30:.1f} GiB "
            f"of model states, activations not included) and {have:.1f} GiB are available: train with ZeRO-3 over "
            f"more workers (parallel.zero_stage=3), adapters (model.lora.rank), or a smaller model; vgen-plan "
            f"prints the plan of any config"]


def preflight(config, plan=None, device: str = "CPU") -> None:
    """Raise one ConfigError listing every input of this training config that is unset or unreadable
    and, given its memory plan, whether the plan fits (with the plan's lines)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(config, resolve=False, throw_on_missing=False)  # MISSING stays "???"
    inputs = Inputs()
    check_data(cfg, inputs)
    check_encoders(cfg, inputs)
    m = cfg["model"]
    inputs.maybe("model.pretrained", m.get("pretrained"), "any", "the weights the model starts from")
    inputs.maybe("model.lora.pretrained", (m.get("lora") or {}).get("pretrained"), "any",
                 "the adapters the model starts from")
    check_rewards(cfg, inputs)
    inputs.maybe("sample.prompt_file", (cfg.get("sample") or {}).get("prompt_file"), "file", "the validation prompts")
    problems = inputs.problems
    named = {p.split(" ", 1)[0].split("=", 1)[0] for p in problems}
    problems += [f"{key} is not set (???): set {key}=<value>" for key in unset_keys(cfg) if key not in named]
    if plan is not None:
        problems += memory_problems(config, plan, device)
    if problems and plan is not None:
        problems.append("\n    ".join(plan.lines()))
    if problems:
        raise ConfigError(f"the run cannot start ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  - "
                          + "\n  - ".join(problems))
