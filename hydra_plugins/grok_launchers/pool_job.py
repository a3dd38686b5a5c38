"""One job of `hydra/launcher=pool` in its own process (started by PoolLauncher):

    python -P -m hydra_plugins.grok_launchers.pool_job SHARED.pkl JOB.json RESULT

SHARED.pkl: what every job of the launch needs (Hydra context, config, task function, Hydra's
global state); JOB.json: this job's number, overrides and the launcher's import path (so the job
imports the same code as the launcher, not whatever the working folder holds). The job's
JobReturn is written to RESULT (atomically) once it has run; a process that ends without one died.
"""

import json
import os
import sys


def portable(ret) -> bytes:
    """The JobReturn pickled so that the launcher can load it: an exception that does not survive
    pickling (say, one whose __init__ wants other arguments) is replaced by its text."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(ret)
        cloudpickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - keep what the error said
        try:
            error = ret.return_value  # a failed job's return_value raises its error
        except Exception as e:  # noqa: BLE001
            error = e
        ret.return_value = RuntimeError(f"{type(error).__name__}: {error}")
        return cloudpickle.dumps(ret)


def main(shared: str, job: str, result: str) -> None:
    with open(job) as f:
        spec = json.load(f)
    sys.path[:] = spec["sys_path"]
    import cloudpickle

    from hydra_plugins.grok_launchers.pool_launcher import execute_job

    with open(shared, "rb") as f:
        context = cloudpickle.load(f)
    data = portable(execute_job(spec["num"], spec["overrides"], **context))
    with open(result + ".tmp", "wb") as f:
        f.write(data)
    os.replace(result + ".tmp", result)


if __name__ == "__main__":
    main(*sys.argv[1:])
