"""Background preparation of step batches: the trainer should never wait for data."""
import queue
import threading
import time


class Prefetcher:
    """Calls produce(step) for step = start, start + 1, ... in a thread, `depth` steps ahead.
    Errors are re-raised in the consumer; `waited_s` totals the time the consumer waited."""

    def __init__(self, produce, start: int, stop: int, depth: int = 2):
        self.produce, self.next_step, self.stop = produce, start, stop
        self.queue = queue.Queue(maxsize=max(1, depth))
        self.waited_s = 0.0
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="vgen-prefetch")
        self.thread.start()

    def _run(self):
        step = self.next_step
        while step < self.stop and not self._halt.is_set():
            try:
                item = (step, self.produce(step), None)
            except BaseException as e:  # surfaced to the consumer
                item = (step, None, e)
            while not self._halt.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def get(self, step: int):
        t0 = time.perf_counter()
        got, value, err = self.queue.get()
        self.waited_s += time.perf_counter() - t0
        if err is not None:
            raise err
        assert got == step, f"prefetcher out of order: wanted step {step}, got {got}"
        return value

    def close(self):
        self._halt.set()
