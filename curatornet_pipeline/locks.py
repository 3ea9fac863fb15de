"""File locks in the home folder, so concurrent first runs wait for one another.

Creating the MLflow SQLite store runs ~7 s of schema migrations, and creating
the Dagster instance's SQLite stores stamps their schemas: two processes doing
either at once on a fresh home race (two alembic heads in the schedule store,
and the home no longer opens). ``first_use`` serializes them with a
``filelock`` next to the store (released by the kernel if the holder dies);
later runs pass through at once.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from curatornet_pipeline import settings

#: How long a process waits for another one's store creation before giving up.
DEFAULT_TIMEOUT_S = 600.0


@contextmanager
def first_use(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Path]:
    """Hold ``$CURATORNET_HOME/.locks/<name>.lock`` while creating or migrating a store.

    Waits (saying so once on stderr) while another process holds it; raises
    ``TimeoutError`` with one sentence after ``timeout_s``.
    """
    folder = settings.home_dir() / ".locks"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.lock"
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(
            f"curatornet: waiting for another process to finish creating the {name} store in "
            f"{settings.home_dir()} (lock {path})",
            file=sys.stderr,
            flush=True,
        )
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise TimeoutError(
                f"another process has held {path} for over {timeout_s:.0f} s while creating "
                f"the {name} store; stop it or remove the half-created store and retry"
            ) from None
    try:
        yield path
    finally:
        lock.release()


def open_instance():
    """The Dagster instance of ``DAGSTER_HOME``, its stores created under the lock."""
    import dagster as dg

    with first_use("dagster"):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # touches the run store: created and stamped now
        instance.get_latest_materialization_event(dg.AssetKey("__first_use__"))
        instance.all_instigator_state()  # the schedule store
        instance.get_daemon_heartbeats()
        return instance
