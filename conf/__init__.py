"""vgen's Hydra config tree (installed as the ``vgen.conf`` package)."""
