"""The ``curatornet`` command: its parser, and the commands that read or serve what the
pipeline made (synth, import-embeddings, batches, lineage, recommend, serve, reproduce,
embed-shard). ``run``, ``ui`` and ``stack`` are in :mod:`curatornet_pipeline.launch`."""

import argparse
import logging
import signal
import sys
import urllib.parse
from pathlib import Path

from curatornet_pipeline import settings
from curatornet_pipeline.launch import Stopped, cmd_run, cmd_stack, cmd_ui, resolve_weights

logger = logging.getLogger("curatornet_pipeline")


def cmd_synth(args: argparse.Namespace) -> int:
    from curatornet_pipeline.core.data import synth

    argv = ["--scale", args.scale, "--seed", str(args.seed), "--out", str(args.out)]
    if args.no_images:
        argv.append("--no-images")
    if args.vectors:
        argv.append("--vectors")
    if args.image_size:
        argv += ["--image-size", str(args.image_size)]
    return synth.main(argv) or 0


def cmd_import_embeddings(args: argparse.Namespace) -> int:
    from curatornet_pipeline.core.data.formats import DataError, DatasetPaths
    from curatornet_pipeline.core.data.vectors import import_embeddings

    out = DatasetPaths(Path(args.data or settings.data_dir())).imported_embeddings
    try:
        vectors = import_embeddings(Path(args.file), out)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"imported {len(vectors.ids)} vectors of {vectors.vectors.shape[1]} dims into {out}")
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    from curatornet_pipeline.core.data import batches
    from curatornet_pipeline.core.data.formats import DataError, DatasetPaths
    from curatornet_pipeline.core.data.history import History

    dataset = DatasetPaths(Path(args.data or settings.data_dir()))
    history = History(dataset)
    if args.action == "list":
        rows = history.describe()
        if not rows:
            print(f"no batches applied yet ({history.folder})")
        for r in rows:
            print(
                f"{r['id']:<22} {r['kind']:<8} {r['at']:<20} {r['source'] or '-':<16} "
                f"+{r['new_items']} items +{r['new_purchase_rows']} purchase rows "
                f"+{r['new_images']} images  {r['status']}"
            )
        return 0
    if not args.batch_id:
        print("error: rollback needs a BATCH_ID (see `curatornet batches list`)", file=sys.stderr)
        return 2
    try:
        entry = batches.rollback(dataset, args.batch_id, reason=args.reason)
    except (KeyError, ValueError, DataError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    print(
        f"rolled back {entry.manifest['target']} (entry {entry.id}); {dataset.root} rebuilt "
        "from the history. Refresh: the nightly run, or `dagster job launch -j refresh_upstream`"
    )
    return 0


def cmd_embed_shard(args: argparse.Namespace) -> int:
    """Embed shard i of n of the dataset's images into the shared embedding store."""
    import dataclasses

    from curatornet_pipeline.core.data import formats as data
    from curatornet_pipeline.core.visual.embed import embed_manifest
    from curatornet_pipeline.core.visual.store import EmbeddingStore
    from curatornet_pipeline.definitions import build_resources

    if not 0 <= args.shard < args.of:
        print(
            f"curatornet embed-shard: need 0 <= shard < of, got {args.shard}/{args.of}",
            file=sys.stderr,
        )
        return 2
    resources = build_resources()  # the profile, overrides and options the asset will use
    dataset, pipeline = resources["dataset"], resources["pipeline"]
    config = dataclasses.replace(
        pipeline.build("embed"), on_unreadable=dataset.on_unreadable_images
    )
    paths = dataset.paths()
    options = dataset.read_options()
    manifest, _ = data.image_manifest(paths.images, data.read_inventory(paths.inventory), options)
    store = EmbeddingStore(f"{settings.storage_uri()}/embedding_store")
    result = embed_manifest(manifest, config, store=store, shard=(args.shard, args.of))
    print(
        f"shard {args.shard}/{args.of}: embedded {result.n_embedded}, reused "
        f"{result.n_reused}, dropped {len(result.dropped)} ({result.weights})"
    )
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from curatornet_pipeline.daemon import dagster_home

    dagster_home()
    import dagster as dg

    from curatornet_pipeline.lineage import explain

    with dg.DagsterInstance.get() as instance:
        try:
            print(explain(instance, args.metric, args.model))
        except LookupError as exc:
            print(f"curatornet lineage: {exc}", file=sys.stderr)
            return 2
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    import pandas as pd

    from curatornet_pipeline.core.recommend.recommender import RECORD_FIELDS
    from curatornet_pipeline.serving import embed_images, load_recommender

    items = [i.strip() for text in args.items for i in text.split(",") if i.strip()]
    if not items and not args.image:
        print(
            "curatornet recommend: give liked artworks with --items and/or --image", file=sys.stderr
        )
        return 2
    try:
        recommender = load_recommender(args.model)
        images = [*args.add_image, *args.image]  # one backbone load for all new images
        vectors = embed_images(images, recommender.catalogue.meta) if images else None
        if args.add_image:
            new_ids = [f"new:{Path(p).name}" for p in args.add_image]
            recommender.add_items(new_ids, vectors[: len(args.add_image)])
        liked = vectors[len(args.add_image) :] if args.image else None
        recs = recommender.recommend(
            items,
            k=args.k,
            in_stock_only=args.in_stock_only,
            extra_profile_features=liked,
            extra_profile_names=[f"image:{Path(p).name}" for p in args.image],
        )
    except (ValueError, LookupError, FileNotFoundError) as exc:
        print(f"curatornet recommend: {exc}", file=sys.stderr)
        return 2
    # the fields of the HTTP answer (mlflow_model.py), in its order
    table = pd.DataFrame(recommender.records(recs), columns=list(RECORD_FIELDS))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from curatornet_pipeline.serve import serve

    return serve(args.model_uri, args.port)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """The paper's protocol at a named budget, written up as a reproduction report."""
    import dataclasses
    import shlex

    from curatornet_pipeline.core.experiment import reproduce, writeup
    from curatornet_pipeline.core.visual import embed

    budget = reproduce.BUDGETS[args.budget]
    changes = {
        k: v
        for k, v in (
            ("n_per_strategy", args.n_per_strategy),
            ("epochs", args.epochs),
            ("seeds", tuple(args.seeds) if args.seeds else None),
            ("curve", tuple(args.curve) if args.curve else None),
            ("l2_grid", tuple(args.l2) if args.l2 else None),
        )
        if v is not None
    }
    budget = dataclasses.replace(budget, **changes)
    from curatornet_pipeline.core.data.formats import DataError, DatasetPaths

    data = Path(args.data) if args.data else settings.data_dir()
    paths = DatasetPaths(data)
    if paths.uses_imported_vectors():  # the dataset's own vectors: no backbone, no banner
        weights = "none"
        source = next(
            p for p in (paths.imported_embeddings, paths.published_embeddings) if p.is_file()
        )
        print(f"vectors: {source} (on_missing_vectors={args.on_missing_vectors})")
    else:
        weights = resolve_weights(args.weights, "resnet50")
        print(f"vectors: ResNet-50 ({weights} weights) over the images of {paths.images}")
    config = embed.EmbedConfig(
        backbone="resnet50",
        weights=weights,
        num_workers=1,
        batch_size=16,
        image_size=args.image_size,  # None: the weights' own transform
    )
    logging.getLogger("curatornet_pipeline").setLevel(logging.INFO)
    try:
        rep = reproduce.run(
            data, budget, config, settings.home_dir() / "embedding_store",
            on_missing_vectors=args.on_missing_vectors,
        )  # fmt: skip
    except DataError as exc:
        print(f"curatornet reproduce: {exc}", file=sys.stderr)
        return 2
    import pickle

    saved = settings.home_dir() / "reproduce" / f"{budget.name}.pkl"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_bytes(pickle.dumps(rep))  # re-render without re-running (trusted, local)
    command = "curatornet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    notes = Path(args.notes).read_text() if args.notes else ""
    out = writeup.write_report(rep, Path(args.out), command, notes)
    print(f"wrote {out} ({rep.seconds / 60:.1f} min)")
    return 0


def _port(address: str, default: int) -> int:
    """The port of a UI address on this machine, else ``default``."""
    url = urllib.parse.urlsplit(address)
    return url.port if url.hostname in ("127.0.0.1", "localhost") and url.port else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curatornet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the published format")
    p.add_argument("--scale", choices=["tiny", "demo", "ugallery"], default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=settings.data_dir())
    p.add_argument("--no-images", action="store_true")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument(
        "--vectors",
        action="store_true",
        help="also write resnet_embeddings.npy (ResNet-like vectors, as published)",
    )
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "import-embeddings",
        help="convert the published resnet_embeddings.npy (read without running code from it)",
    )
    p.add_argument("file")
    p.add_argument("--data", default=None, help="dataset folder (default: data/)")
    p.set_defaults(func=cmd_import_embeddings)

    p = sub.add_parser("batches", help="list applied incoming batches, or roll one back")
    p.add_argument("action", choices=["list", "rollback"])
    p.add_argument("batch_id", nargs="?", help="rollback: entry id, number or content-hash prefix")
    p.add_argument("--reason", default="", help="rollback: recorded in the history")
    p.add_argument("--data", default=None, help="dataset folder (default: data/)")
    p.set_defaults(func=cmd_batches)

    p = sub.add_parser("run", help="materialize the whole asset graph through Dagster")
    p.add_argument("--profile", choices=["tiny", "demo", "paper"], default="demo")
    p.add_argument(
        "--scale",
        choices=["tiny", "demo", "ugallery"],
        default=None,
        help="synthetic scale generated when the data folder is empty (default: the profile's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="dataset folder (default: data/)")
    p.add_argument(
        "--jobs",
        default=None,
        metavar="JOB[,JOB...]",
        help="launch only these named jobs, in stage order (default: every job of the graph)",
    )
    for option in (
        "on-unknown-items",
        "on-missing-images",
        "on-unreadable-images",
        "on-missing-vectors",
    ):
        p.add_argument(
            f"--{option}",
            choices=["error", "drop"],
            default=None,
            help="drop (and count) instead of failing; see docs/data-format.md",
        )
    p.add_argument(
        "--weights", default=None, help="imagenet | none | auto | /path/to/state_dict.pth"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "embed-shard", help="embed one shard of the images into the shared store (a worker)"
    )
    p.add_argument("--shard", type=int, required=True, help="this worker's index i")
    p.add_argument("--of", type=int, required=True, help="number of workers n")
    p.set_defaults(func=cmd_embed_shard)

    p = sub.add_parser("lineage", help="trace a metric of the evaluation report to raw files")
    p.add_argument("--metric", default="auc", help="e.g. auc, recall@20, ndcg@100")
    p.add_argument(
        "--model",
        default="CuratorNet (0.0001)",
        help="a Table 2 row label, e.g. 'CuratorNet (0.0001)', 'VBPR (0)', 'VisRank'",
    )
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser(
        "recommend", help="top-k artworks for liked artworks/images, with explanations"
    )
    p.add_argument(
        "--items",
        action="append",
        default=[],
        metavar="ID[,ID...]",
        help="liked catalogue artworks (artwork_id_hash), comma-separated",
    )
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="a liked image file outside the catalogue (repeatable)",
    )
    p.add_argument(
        "--add-image",
        action="append",
        default=[],
        metavar="PATH",
        help="a new artwork image added to the candidates (repeatable)",
    )
    p.add_argument("--k", type=int, default=20)
    p.add_argument(
        "--in-stock-only",
        action="store_true",
        help="only items on sale now (sold one-of-a-kind items are always dropped)",
    )
    p.add_argument(
        "--model",
        default="champion",
        help="alias or version of the registered model 'curatornet', a run id, or a file",
    )
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser(
        "serve", help="serve the champion over HTTP on 127.0.0.1 (MLflow's scoring server)"
    )
    p.add_argument(
        "--model-uri",
        default="models:/curatornet@champion",
        help="an MLflow model URI, e.g. models:/curatornet/3 (default: %(default)s)",
    )
    p.add_argument(
        "--port", type=int, default=5001, help="port on 127.0.0.1 (default: %(default)s)"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("reproduce", help="the paper's Table 2 / Figure 3 at a training budget")
    p.add_argument("--budget", choices=["smoke", "small", "medium", "large", "paper"],
                   default="small")  # fmt: skip
    p.add_argument("--data", default=None, help="dataset folder (default: data/)")
    p.add_argument("--out", default="docs/reproduction.md", help="report (figures beside it)")
    p.add_argument("--weights", default="auto", help="imagenet | none | auto | FILE")
    p.add_argument(
        "--on-missing-vectors",
        choices=["error", "drop"],
        default="error",
        help="inventory items without a vector in the dataset's own file",
    )
    p.add_argument("--n-per-strategy", type=int, default=None, help="override the budget's")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--curve", type=int, nargs="+", default=None, help="triples per guideline")
    p.add_argument("--l2", type=float, nargs="+", default=None, help="the lambda grid")
    p.add_argument("--notes", default=None, help="markdown file appended to the report")
    p.add_argument(
        "--image-size", type=int, default=None, help="override the weights' transform (pixels)"
    )
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("ui", help="serve the Dagster UI and the MLflow UI on 127.0.0.1")
    p.add_argument(
        "--dagster-port",
        type=int,
        default=_port(settings.dagster_ui_address(), 3000),
        help="Dagster UI port (default %(default)s, from CURATORNET_DAGSTER_UI)",
    )
    p.add_argument(
        "--mlflow-port",
        type=int,
        default=_port(settings.mlflow_ui_address(), 5000),
        help="MLflow UI port (default %(default)s, from CURATORNET_MLFLOW_UI); links written "
        "earlier open on any port (docs/operations.md)",
    )
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser(
        "stack", help="PostgreSQL, MLflow server, Dagster daemon+webserver, Dask workers"
    )
    p.add_argument(
        "action",
        choices=["up", "down", "status", "run"],
        help="run: queue the whole asset graph on the running stack and wait",
    )
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    p.add_argument("--profile", choices=["tiny", "demo", "paper"], default="tiny", help="run")
    p.add_argument(
        "--threads", type=int, default=None, help="threads per worker (default: cores // workers)"
    )
    p.set_defaults(func=cmd_stack)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP where a command maps them
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        print(f"curatornet {args.command}: stopped by {name}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
