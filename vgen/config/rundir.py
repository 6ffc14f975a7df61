"""The default run directory, derived from the experiment and the command-line overrides, so the
same command run again continues the same run."""
import hashlib
import re
from typing import Dict, Sequence

# overrides that do not change what is trained: changing them continues the same run
NEUTRAL_KEYS = {
    "run_dir", "runs_root", "resume", "progress", "jit", "device",
    "schedule.max_steps", "schedule.log_every", "schedule.ckpt_every", "schedule.keep_last",
    "parallel.master_addr", "parallel.master_port", "parallel.node_rank", "data.prefetch",
}
NEUTRAL_GROUPS = ("sample.",)  # what vgen-sample and validation draw: not what is trained
MAX_TAG = 96


def is_neutral(key: str) -> bool:
    return key in NEUTRAL_KEYS or key.startswith(NEUTRAL_GROUPS)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_name(choices: Dict[str, str], overrides: Sequence[str]) -> str:
    """'<experiment>/<tag>' or '<model>-<data>/<tag>'; tag lists the remaining overrides."""
    exp = choices.get("experiment")
    if exp:
        name, named = exp.replace("/", "-"), {"experiment"}
    else:
        name, named = f"{choices.get('model', 'model')}-{choices.get('data', 'data')}", {"model", "data"}
    kept = sorted(o for o in overrides
                  if not is_neutral(_key(o)) and _key(o) not in named and not _key(o).startswith("hydra"))
    tag = ",".join(kept) or "default"
    tag = re.sub(r"[^A-Za-z0-9._,=+@-]", "_", tag)
    if len(tag) > MAX_TAG:
        tag = tag[:MAX_TAG - 9] + "-" + hashlib.sha1(tag.encode()).hexdigest()[:8]
    return f"{name}/{tag}"
