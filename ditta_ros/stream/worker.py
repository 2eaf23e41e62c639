"""Background work of the DiTTA streams: one adaptation thread per accelerator, and a teacher
wrapper that a restart or reset can stop between propagator calls."""
import logging
import queue
import threading
from typing import Callable, Optional

from ditta_ros.adapt.ditta import AdaptationCancelled
from ditta_ros.runtime import job_memory
from ditta_ros.teacher.targets import Propagator

LOG = logging.getLogger('ditta_ros.stream')


class AdaptationWorker:
    """One background thread that runs adaptation jobs one after another (one accelerator)."""

    def __init__(self, name: str = 'ditta-adaptation'):
        self._jobs: 'queue.Queue[Optional[Callable[[], None]]]' = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            # each job on a thread of its own that ends with it: a thread that has run PyTorch
            # keeps an OpenMP team, and an idle one left behind slowed the inference threads by
            # about 10 % (fused 1024x512 frames 282 -> 310-324 ms on 2 cores)
            runner = threading.Thread(target=self._run_job, args=(job,), daemon=True,
                                      name=f'{self._thread.name}-job')
            runner.start()
            runner.join()

    @staticmethod
    def _run_job(job: Callable[[], None]) -> None:
        # the job's teacher features, targets and training tensors are freed when it ends: their
        # heap pages go back then, and the frames' large blocks stay in the heap (job_memory)
        with job_memory():
            try:
                job()
            except Exception:  # a job reports its own failures; never let the thread die
                LOG.exception('adaptation job raised')

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to finish after the current job; True if it ended in time."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class CancellablePropagator(Propagator):
    """Checks for cancellation before every propagator call (stage B can take minutes)."""

    def __init__(self, inner: Propagator, should_stop: Callable[[], bool]):
        self.inner = inner
        self.should_stop = should_stop

    def _check(self):
        if self.should_stop():
            raise AdaptationCancelled('target building cancelled')

    def start(self, frames, labels):
        self.inner.start(frames, labels)

    def reset(self):
        self._check()
        self.inner.reset()

    def add_point(self, frame, obj_id, xy):
        self._check()
        return self.inner.add_point(frame, obj_id, xy)

    def add_mask(self, frame, obj_id, mask):
        self._check()
        return self.inner.add_mask(frame, obj_id, mask)

    def step(self, frame, reverse):
        self._check()
        return self.inner.step(frame, reverse)

    def close(self):
        self.inner.close()
