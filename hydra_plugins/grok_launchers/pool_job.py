"""One job of `hydra/launcher=pool` in its own process (started by PoolLauncher):

    python -m hydra_plugins.grok_launchers.pool_job SHARED.pkl JOB.json RESULT

SHARED.pkl: what every job of the launch needs (Hydra context, config, task function, Hydra's
global state), JOB.json: this job's number and overrides. The job's JobReturn is written to
RESULT (atomically) once it has run; a process that ends without one died.
"""

import json
import os
import sys


def main(shared: str, job: str, result: str) -> None:
    import cloudpickle

    from hydra_plugins.grok_launchers.pool_launcher import execute_job

    with open(shared, "rb") as f:
        context = cloudpickle.load(f)
    with open(job) as f:
        spec = json.load(f)
    ret = execute_job(spec["num"], spec["overrides"], **context)
    try:
        data = cloudpickle.dumps(ret)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: keep its text
        error = ret._return_value
        ret.return_value = RuntimeError(f"{type(error).__name__}: {error}")
        data = cloudpickle.dumps(ret)
    with open(result + ".tmp", "wb") as f:
        f.write(data)
    os.replace(result + ".tmp", result)


if __name__ == "__main__":
    main(*sys.argv[1:])
