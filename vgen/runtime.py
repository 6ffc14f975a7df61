"""Device selection and process-wide MindSpore settings, done once per process."""
import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ warnings drown the progress bar

import mindspore as ms  # noqa: E402  (must be imported before decord, see data/video.py)

DEVICES = ("Ascend", "GPU", "CPU")


def resolve_device(requested: str) -> str:
    """`auto` takes MindSpore's own default target (the accelerator its installed plugins find)."""
    if requested != "auto":
        return requested
    target = ms.get_context("device_target")
    return target if target in DEVICES else "CPU"


_DEVICE = None


def setup_device(requested: str) -> str:
    """Selects the device once per process (later calls return the same choice)."""
    global _DEVICE
    if _DEVICE is not None:
        return _DEVICE
    device = resolve_device(requested)
    device_id = int(os.environ.get("DEVICE_ID", os.environ.get("LOCAL_RANK", "0")) or 0)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # the train step itself is compiled with ms.jit
    if device == "CPU":
        ms.set_device("CPU")
    else:
        ms.set_device(device, device_id)
    _DEVICE = device
    return device


def memory_gb(field: str = "VmRSS") -> float:
    """This process's resident memory (GiB) from /proc/self/status: VmRSS now, VmHWM at its peak.
    VmHWM, not ru_maxrss: Linux carries the forking parent's peak into a child's ru_maxrss across exec.
    0.0 where the kernel has no such file."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 2 ** 20
    except (OSError, StopIteration):
        return 0.0
