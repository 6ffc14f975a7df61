"""Starting msrun workers: the one msrun launcher of vgen-train, vgen-cache, the tests and the
benchmarks. msrun notices a dead worker within a second and kills the others, but then waits
about 30 s for its scheduler to time the node out; we watch msrun's output and end the whole job
as soon as it reports the failure."""
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

FAILURE_MARKS = ("exit with exception", "There's worker exits with exception")
GRACE_S = 3.0


def in_msrun() -> bool:
    return "MS_WORKER_NUM" in os.environ and "MS_ROLE" in os.environ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def msrun_command(parallel, log_dir: Path, script: str, *script_args: str) -> list:
    """msrun starting `script` on this node's share of parallel.workers."""
    port = parallel.master_port or free_port()
    local = parallel.workers // parallel.nodes
    return ["msrun", f"--worker_num={parallel.workers}", f"--local_worker_num={local}",
            f"--master_addr={parallel.master_addr}", f"--master_port={port}", f"--node_rank={parallel.node_rank}",
            f"--log_dir={log_dir}", "--join=True", "--tail_worker_log=0", script, *script_args]


def run_msrun(cmd: list) -> int:
    """Runs an msrun command, echoing its output; returns its exit code, non-zero within seconds
    of a worker's failure."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # msrun runs `python`
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, bufsize=1)
    failed = threading.Event()

    def stop():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    for line in proc.stdout:
        sys.stdout.write(line)
        if any(m in line for m in FAILURE_MARKS) and not failed.is_set():
            failed.set()
            timer = threading.Timer(GRACE_S, stop)
            timer.daemon = True
            timer.start()
    code = proc.wait()
    return 1 if failed.is_set() and code == 0 else (code if code >= 0 else 1)
