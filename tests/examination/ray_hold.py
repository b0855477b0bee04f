"""Installed in every Ray worker of the tests (a `worker_process_setup_hook`): a checkup whose id has a
`<id>.hold` file in $DOCTOR_TEST_HOLD_DIR writes `<id>.<pid>.pid` and waits for `<id>.go`, so a test can kill
the worker mid-checkup. Other checkups run untouched."""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_DIR_ENV = "DOCTOR_TEST_HOLD_DIR"


def install() -> None:
    from doctor.examination import ray_executor

    folder = Path(os.environ[HOLD_DIR_ENV])
    real = ray_executor.run_checkup

    def held(session, checkup):
        if (folder / f"{checkup.id}.hold").exists():
            (folder / f"{checkup.id}.{os.getpid()}.pid").write_text(str(os.getpid()))
            while not (folder / f"{checkup.id}.go").exists():
                time.sleep(0.05)
        return real(session, checkup)

    ray_executor.run_checkup = held
