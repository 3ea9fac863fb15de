"""File locks in the home folder, so concurrent first runs wait for one another.

Creating the MLflow SQLite store runs ~7 s of schema migrations, and creating
the Dagster instance's SQLite stores stamps their schemas: two processes doing
either at once on a fresh home race, and one dies with a raw SQLAlchemy error.
``first_use`` serializes them with ``fcntl.flock`` on a file next to the store
(released by the kernel if the holder dies); later runs pass through at once.
"""

import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curatornet_pipeline import settings

logger = logging.getLogger(__name__)

#: How long a process waits for another one's store creation before giving up.
DEFAULT_TIMEOUT_S = 600.0


@contextmanager
def first_use(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Path]:
    """Hold ``$CURATORNET_HOME/.locks/<name>.lock`` while creating or migrating a store.

    Waits (saying so once on stderr) while another process holds it; raises
    ``TimeoutError`` with one sentence naming the holder after ``timeout_s``.
    """
    folder = settings.home_dir() / ".locks"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            print(
                f"curatornet: waiting for process {holder} to finish creating the {name} "
                f"store in {settings.home_dir()} (lock {path})",
                file=sys.stderr,
                flush=True,
            )
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"process {_holder(path)} has held {path} for over {timeout_s:.0f} s "
                            f"while creating the {name} store; stop it or remove the "
                            "half-created store and retry"
                        ) from None
                    time.sleep(0.2)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def open_instance():
    """The Dagster instance of ``DAGSTER_HOME``, its stores created under the lock."""
    import dagster as dg

    with first_use("dagster"):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # touches the run store: created and stamped now
        instance.get_latest_materialization_event(dg.AssetKey("__first_use__"))
        instance.all_instigator_state()  # the schedule store
        return instance
