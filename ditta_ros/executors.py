"""Where independent jobs run: in this process, in worker processes on this machine, or as tasks
on a Ray cluster. One place decides; the evaluation tools hand it a job function and a list of
jobs and get the results back in the order of the jobs, whatever ran them, so a merge of those
results equals a serial run's exactly.

* `jobs <= 1` and no Ray: in this process, one job after the other.
* `jobs > 1`: a pool of that many worker processes (each calls `initializer(*initargs)` once).
* `ray`: one Ray task per job. `local` starts a Ray instance on this machine that listens and
  connects on 127.0.0.1 only (tested); `auto` joins the cluster that
  RAY_ADDRESS or a running `ray start` names; any other value is a cluster address
  (`ray://head:10001`). A task asks for one GPU where `gpus_per_job` says so. The workers import
  this package, so it must be installed on every node (`pip install ditta_ros[ray]`).
"""
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, List, Optional, Sequence

LOCAL_RAY = 'local'

_INITIALISED: set = set()   # initializers a Ray worker process has run (by qualified name)


def run_jobs(function: Callable, jobs: Sequence, workers: int = 1, ray: Optional[str] = None,
             initializer: Optional[Callable] = None, initargs: tuple = (),
             gpus_per_job: float = 0.0, progress: Optional[Callable[[Iterable], Iterable]] = None
             ) -> List:
    """`function(job)` for every job, results in the order of `jobs`. `progress` wraps the
    iterator of results (e.g. a progress bar)."""
    progress = progress or (lambda results: results)
    if ray:
        return list(progress(_ray_results(function, jobs, ray, initializer, initargs,
                                          gpus_per_job, workers)))
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        return list(progress(function(job) for job in jobs))
    with ProcessPoolExecutor(workers, initializer=initializer, initargs=initargs) as pool:
        return list(progress(pool.map(function, jobs)))


def _in_ray_worker(function, initializer, initargs, job):
    """A job on a Ray worker: the initializer once per worker process, then the job."""
    if initializer is not None:
        key = f'{initializer.__module__}.{initializer.__qualname__}'
        if key not in _INITIALISED:
            initializer(*initargs)
            _INITIALISED.add(key)
    return function(job)


def connect_ray(address: str, cpus: int):
    """ray.init for `address` (see the module docstring); returns the ray module."""
    if address == LOCAL_RAY:
        # Ray resolves even an explicit 127.0.0.1 to the machine's outward address (and binds
        # and connects there) while it thinks of itself as a possible cluster; for a one-machine
        # instance it keeps to loopback. Read when ray is imported, and by its processes.
        os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'
    try:
        import ray
        from ray._private import ray_constants
    except ImportError as exc:
        raise RuntimeError(f'--ray needs the ray package ({exc}); install it with '
                           'pip install "ditta_ros[ray]"') from exc
    if not ray.is_initialized():
        if address == LOCAL_RAY:
            ray_constants.ENABLE_RAY_CLUSTER = False   # ray was imported before this call
            ray.init(_node_ip_address='127.0.0.1', include_dashboard=False,
                     num_cpus=max(1, cpus), log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    return ray


def _ray_results(function, jobs, address, initializer, initargs, gpus_per_job, workers):
    ray = connect_ray(address, workers)
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_job)(_in_ray_worker)
    refs = [task.remote(function, initializer, initargs, job) for job in jobs]
    try:
        for ref in refs:            # in the jobs' order; the tasks run as the cluster allows
            yield ray.get(ref)
    finally:
        if address == LOCAL_RAY:
            ray.shutdown()
