"""The commands that launch things: ``curatornet run`` (the whole graph through the home's
Dagster daemon), ``curatornet ui`` (both UIs) and ``curatornet stack`` (the service stack).
The parser is in :mod:`curatornet_pipeline.cli`."""

import argparse
import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from curatornet_pipeline import settings

BANNER = "=" * 78


def _cached_imagenet_weights(backbone: str) -> bool:
    """Whether torchvision's published weights for ``backbone`` are in the torch cache."""
    import torch
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(backbone).DEFAULT
    except (ValueError, KeyError):
        return False
    filename = weights.url.rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).exists()


def resolve_weights(choice: str, backbone: str) -> str:
    """``auto``: ImageNet weights if cached, else random weights, announced loudly."""
    if choice != "auto":
        return choice
    if _cached_imagenet_weights(backbone):
        return "imagenet"
    print(
        f"{BANNER}\nWARNING: no ImageNet weights for {backbone} in the torch cache and "
        "'--weights auto':\nembeddings use RANDOM weights. Results are for demonstrating the "
        "pipeline only.\nUse --weights imagenet (with network) or --weights /path/to/"
        f"state_dict.pth.\n{BANNER}",
        file=sys.stderr,
    )
    return "none"


def _ensure_dataset(data_root: Path, scale: str, seed: int) -> None:
    if (data_root / "purchases.csv").exists():
        return
    from curatornet_pipeline.core.data.synth import SynthConfig, generate

    print(f"no dataset in {data_root}: generating the synthetic '{scale}' dataset (seed {seed})")
    generate(SynthConfig(scale=scale, seed=seed), data_root)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so this invocation's runs are canceled."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate_as_interrupt(signum, frame) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # one stop is enough: the cleanup runs undisturbed
    raise Stopped(signum)


def cmd_run(args: argparse.Namespace) -> int:
    from curatornet_pipeline.daemon import dagster_home

    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    signal.signal(signal.SIGHUP, _terminate_as_interrupt)
    dagster_home()
    data_root = Path(args.data or settings.data_dir()).resolve()
    os.environ["CURATORNET_DATA"] = str(data_root)
    os.environ["CURATORNET_PROFILE"] = args.profile
    for name in (
        "on_unknown_items",
        "on_missing_images",
        "on_unreadable_images",
        "on_missing_vectors",
    ):
        if getattr(args, name):
            os.environ[f"CURATORNET_{name.upper()}"] = getattr(args, name)
    scale = args.scale or {"paper": "ugallery"}.get(args.profile, args.profile)
    _ensure_dataset(data_root, scale, args.seed)

    from curatornet_pipeline.defs.resources import profile_values, run_config

    overrides = json.loads(settings.env("CURATORNET_OVERRIDES") or "{}")
    embed = profile_values(args.profile, overrides)["embed"]
    backbone = embed.get("backbone", "resnet50")
    from curatornet_pipeline.core.data.formats import DatasetPaths

    paths = DatasetPaths(data_root)
    if paths.uses_imported_vectors():
        # vectors come from the imported file (its name and sha256 are recorded), not a backbone
        weights = args.weights or embed.get("weights", "auto")
    else:
        weights = resolve_weights(args.weights or embed.get("weights", "auto"), backbone)
    overrides.setdefault("embed", {})["weights"] = weights
    os.environ["CURATORNET_OVERRIDES"] = json.dumps(overrides)
    settings.save_run_settings(args.profile, overrides)

    from curatornet_pipeline.definitions import defs
    from curatornet_pipeline.defs.assets.training import add_grid_partitions
    from curatornet_pipeline.defs.resources import pipeline_settings
    from curatornet_pipeline.runner import LaunchError, launch_all, plan

    started = time.perf_counter()

    def on_done(launch, run, seconds: float) -> None:
        print(
            f"  [{time.perf_counter() - started:7.1f}s] {launch.label():<45} "
            f"{run.status.value.lower():<8} ({seconds:.1f}s)  run {run.run_id[:8]}"
        )

    print(f"launching the asset graph's jobs (profile {args.profile}, weights {weights})")
    from curatornet_pipeline.daemon import lease
    from curatornet_pipeline.locks import open_instance

    with open_instance() as instance:  # concurrent first runs: one creates the stores
        add_grid_partitions(instance, pipeline_settings(args.profile, overrides).grid())
        try:
            stages = plan(defs, instance, args.jobs.split(",") if args.jobs else None)
        except ValueError as exc:
            print(f"curatornet run: {exc}", file=sys.stderr)
            return 2
        tags = {"curatornet/trigger": "cli", "curatornet/invocation": str(time.time_ns())}
        # automation off in services started here: this command launches every stage itself
        try:
            with lease(automation="off") as services:
                runs = launch_all(
                    instance, services, stages, run_config(args.profile, overrides), tags, on_done
                )
        except LaunchError as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
    print(f"{len(runs)} runs")
    _summary(time.perf_counter() - started)
    return 0


def _summary(seconds: float) -> None:
    home = settings.home_dir()
    print(f"\ndone in {seconds / 60:.1f} min.")
    report = Path(settings.storage_uri()) / "reports"
    table = report / "table2.md"
    if table.exists():
        print(table.read_text())
    print(
        f"\nWhere to look:\n"
        f"  assets and figures : {settings.storage_uri()}\n"
        f"  Dagster instance   : {home / 'dagster'}  (make ui, then http://127.0.0.1:3000)\n"
        f"  MLflow store       : {settings.mlflow_tracking_uri()}  (make ui, then "
        "http://127.0.0.1:5000)"
    )


def _popen(cmd: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start a server in its own session, so its whole process tree can be stopped.

    A child started from a non-interactive shell may inherit an ignored SIGINT;
    it is reset so the server stops on it.
    """

    def reset() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return subprocess.Popen(cmd, env=env, preexec_fn=reset, start_new_session=True, **kwargs)


def _stop_sessions(procs: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
    """Ctrl-C to each server's session (its workers included), SIGKILL to what outlives it."""
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGKILL, 10.0)):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if all(_session_gone(p.pid) for p in procs):
            return


def _session_gone(sid: int) -> bool:
    try:
        os.killpg(sid, 0)
    except ProcessLookupError:
        return True
    return False


def _serve_until_signal(procs: list[subprocess.Popen]) -> None:
    """Wait until a server exits, Ctrl-C (SIGINT), SIGTERM or SIGHUP; then stop them all."""

    def on_signal(signum: int, frame) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # one stop is enough
        raise KeyboardInterrupt

    previous = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_sessions(procs)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prepare_mlflow_store(uri: str) -> str:
    """Create or migrate the MLflow store and its experiment, in a short-lived process
    (importing mlflow would keep ~200 MB in this one for as long as the UIs run); returns
    the experiment's id."""
    code = (
        "import sys; from curatornet_pipeline.defs.tracking import MlflowTracking; "
        "print(MlflowTracking(tracking_uri=sys.argv[1]).experiment_id)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, uri],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    return done.stdout.split()[-1]


class _Redirect(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to the same path on ``server.target``; the
    browser keeps the fragment (MLflow's ``#/experiments/...``) across it."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.server.target + self.path)  # type: ignore[attr-defined]
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


def _redirect(name: str, link: str, port: int) -> http.server.ThreadingHTTPServer | None:
    """Serve ``link`` (the home's stable address of a UI, where every link written points)
    as a redirect to the UI on ``port``, when that port differs; None when it does not."""
    url = urllib.parse.urlsplit(link)
    if url.hostname not in ("127.0.0.1", "localhost") or (url.port or 80) == port:
        return None
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", url.port or 80), _Redirect)
    except OSError as exc:
        print(
            f"curatornet ui: links to the {name} UI point at {link}, which this machine will "
            f"not let us serve ({exc.strerror}): they will not open this {name} UI. Free that "
            f"port, or start with the {name} UI on it.",
            file=sys.stderr,
        )
        return None
    server.target = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def cmd_ui(args: argparse.Namespace) -> int:
    from curatornet_pipeline.daemon import dagster_home, lease

    dagster_home()
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    uri = settings.mlflow_tracking_uri()
    # one worker and no job consumers: the UI of one person's home (docs/operations.md)
    mlflow_cmd = [
        str(bindir / "mlflow"), "ui", "--backend-store-uri", uri,
        "--default-artifact-root", settings.mlflow_artifact_root(),
        "--host", "127.0.0.1", "--port", str(args.mlflow_port), "--workers", "1",
    ]  # fmt: skip
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    redirects = [_redirect("Dagster", settings.dagster_ui_address(), args.dagster_port)]
    if uri.startswith(("http://", "https://")):
        print(f"MLflow tracking server {uri} serves its own UI; not starting one")
        mlflow_cmd = []
    else:
        experiment = _prepare_mlflow_store(uri)
        redirects.append(_redirect("MLflow", settings.mlflow_ui_address(), args.mlflow_port))
    # the home's daemon (schedule and sensors on when started here), shared with any
    # `curatornet run`; the webserver reads the same code server
    with lease(automation=settings.env("CURATORNET_AUTOMATION")) as services:
        webserver = [
            str(bindir / "dagster-webserver"), "-w", services.workspace,
            "-h", "127.0.0.1", "-p", str(args.dagster_port),
        ]  # fmt: skip
        procs = [_popen(webserver, env)]
        if mlflow_cmd:
            procs.append(_popen(mlflow_cmd, env))
        mlflow_page = uri
        if mlflow_cmd:  # the experiment, in MLflow's model-training view
            mlflow_page = f"http://127.0.0.1:{args.mlflow_port}/#/experiments/{experiment}/runs"
            mlflow_page += f"?{settings.MLFLOW_TRAINING_VIEW}"
        print(
            f"Dagster UI: http://127.0.0.1:{args.dagster_port}   MLflow UI: {mlflow_page}   "
            "(Ctrl-C or SIGTERM stops both)",
            flush=True,
        )
        try:
            _serve_until_signal(procs)
        finally:
            for server in filter(None, redirects):
                server.shutdown()
                server.server_close()
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from curatornet_pipeline import stack
    from curatornet_pipeline.runner import run_on_stack

    if args.action == "up":
        try:
            state = stack.up(workers=args.workers, threads=args.threads)
        except (RuntimeError, OSError) as exc:
            print(f"curatornet stack up: {exc}", file=sys.stderr)
            return 1
        for name, url in stack.urls(state).items():
            print(f"  {name:15s} {url}")
        print(
            f"up in {state['up_seconds']:.1f} s: {state['workers']} Dask workers x "
            f"{state['threads_per_worker']} threads; logs in {stack.paths().logs}"
        )
    elif args.action == "run":
        started = time.perf_counter()
        try:
            runs = run_on_stack(profile=args.profile)
        except Exception as exc:  # LaunchError, an unreachable stack: one line, exit 1
            print(f"curatornet stack run: {exc}", file=sys.stderr)
            return 1
        print(f"{len(runs)} runs")
        print(f"done in {time.perf_counter() - started:.1f} s")
    elif args.action == "down":
        result = stack.down()
        print(f"stopped {', '.join(result['stopped']) or 'nothing'} in {result['down_seconds']} s")
    else:
        print(json.dumps(stack.status(), indent=2))
    return 0
