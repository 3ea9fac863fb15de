"""The stack's PostgreSQL: a cluster of its own (Debian's ``postgresql``) with the databases
``dagster`` and ``mlflow`` and one user with a generated password, on 127.0.0.1 only."""

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

HOST = "127.0.0.1"
PG_USER = "curatornet"


def pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    if shutil.which(name):
        return shutil.which(name)
    raise FileNotFoundError(
        f"PostgreSQL's {name} not found: install Debian's 'postgresql' package "
        "(scripts/install-system-deps.sh does)"
    )


def pg_user() -> dict:
    """PostgreSQL refuses to run as root: as root, run it as the 'postgres' user."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs the 'postgres' system user") from exc
    return {"user": "postgres", "group": "postgres"}


def _pg_run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **pg_user(), **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}")
    return result


def init_cluster(p) -> str:
    """Create the cluster on first use; returns the password of its one user."""
    if p.password_file.exists():
        return p.password_file.read_text().strip()
    user = pg_user()
    if user:
        for parent in [p.root, *p.root.parents]:
            if not os.stat(parent).st_mode & 0o001:
                raise PermissionError(
                    f"PostgreSQL runs as user 'postgres' here and cannot enter {parent}: "
                    "put CURATORNET_HOME under a folder others may traverse (chmod o+x)"
                )
    password = secrets.token_urlsafe(24)
    pwfile = p.root / "initdb.pw"
    pwfile.write_text(password)
    if p.pgdata.exists():
        shutil.rmtree(p.pgdata)  # a half-created cluster from an interrupted first start
    p.pgdata.mkdir(mode=0o700)
    if user:
        shutil.chown(p.pgdata, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        initdb = [
            pg_bin("initdb"), "-D", str(p.pgdata), "-U", PG_USER, "--pwfile", str(pwfile),
            "--auth", "scram-sha-256", "-E", "UTF8", "--no-instructions",
        ]  # fmt: skip
        _pg_run(initdb)
    finally:
        pwfile.unlink()
    conf = p.pgdata / "postgresql.conf"
    with conf.open("a") as f:
        f.write("\ninclude_if_exists = 'curatornet.conf'\n")
    p.password_file.write_text(password)
    p.password_file.chmod(0o600)
    return password


def create_databases(port: int, password: str) -> bool:
    """Create the databases ``dagster`` and ``mlflow`` once PostgreSQL answers; False before."""
    import psycopg2

    try:
        conn = psycopg2.connect(
            host=HOST, port=port, user=PG_USER, password=password, dbname="postgres"
        )
    except psycopg2.OperationalError:
        return False
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in ("dagster", "mlflow"):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()
    return True


def postgres_url(state: dict, db: str) -> str:
    # SQLAlchemy 2.1 picks psycopg 3 for postgresql://; the stack installs psycopg2
    return f"postgresql+psycopg2://{PG_USER}:{state['password']}@{HOST}:{state['ports']['postgres']}/{db}"


def dagster_storage(port: int, password: str) -> str:
    return f"""storage:
  postgres:
    postgres_db:
      username: {PG_USER}
      password: "{password}"
      hostname: {HOST}
      db_name: dagster
      port: {port}
      scheme: postgresql+psycopg2
"""
