"""The reproduction's write-up: Table 2 and its ordering against the paper's, Figure 3's
paired tests, the budget curve, the validation figures, and the markdown report
(``docs/reproduction.md``) of a :class:`~curatornet_pipeline.core.experiment.reproduce.Reproduction`."""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from curatornet_pipeline.core.evaluation import evaluate as eval_core
from curatornet_pipeline.core.evaluation import report as report_core
from curatornet_pipeline.core.experiment import grid as experiment
from curatornet_pipeline.core.experiment.reproduce import (
    PAPER_ORDER_AUC,
    PAPER_TABLE2,
    ModelRun,
    Reproduction,
)


def _main_runs(rep: Reproduction, seed: int | None = None) -> list[ModelRun]:
    seed = rep.budget.seeds[0] if seed is None else seed
    return [r for r in rep.runs if r.n_per_strategy == rep.budget.n_per_strategy and r.seed == seed]


def table2_results(rep: Reproduction, protocol: str) -> dict[str, eval_core.EvalResult]:
    out = {r.variant.label: r.results[protocol] for r in _main_runs(rep)}
    out.update({label: res[protocol] for label, res in rep.baselines.items()})
    return out


def ordering_table(rep: Reproduction, protocol: str) -> pd.DataFrame:
    """Methods ranked by AUC here next to the paper's Table 2 ranks and values."""
    table = eval_core.table2(table2_results(rep, protocol))
    guided = [m for m in table.index if "random sampling" not in m]
    rank_auc = {m: i + 1 for i, m in enumerate(guided)}
    rank_r100 = {
        m: i + 1
        for i, m in enumerate(table.loc[guided].sort_values("recall@100", ascending=False).index)
    }
    paper_rank = {m: i + 1 for i, m in enumerate(PAPER_ORDER_AUC)}
    paper_r100 = sorted(PAPER_TABLE2, key=lambda m: -PAPER_TABLE2[m][1])
    rows = []
    for m in guided:
        rows.append(
            {"method": m, "rank AUC": rank_auc[m], "AUC": table.loc[m, "auc"],
             "AUC se": table.loc[m, "auc_se"], "paper rank AUC": paper_rank.get(m, "–"),
             "paper AUC": PAPER_TABLE2.get(m, (np.nan,))[0], "rank R@100": rank_r100[m],
             "R@100": table.loc[m, "recall@100"], "R@100 se": table.loc[m, "recall@100_se"],
             "paper rank R@100": paper_r100.index(m) + 1 if m in PAPER_TABLE2 else "–",
             "paper R@100": PAPER_TABLE2.get(m, (np.nan, np.nan))[1]}
        )  # fmt: skip
    return pd.DataFrame(rows)


def ablation(rep: Reproduction) -> pd.DataFrame:
    """Figure 3's paired tests on both protocols, AUC and Recall@100, with triple counts."""
    main = {r.variant.name: r for r in _main_runs(rep)}
    per_user = pd.concat(
        [
            r.results[p].per_user.assign(method=r.variant.label, protocol=p)
            for p in eval_core.PROTOCOLS
            for r in main.values()
        ],
        ignore_index=True,
    )
    pairs = experiment.ablation_pairs({r.variant.name: r.variant for r in main.values()})
    tests = eval_core.ablation_tests(
        per_user, {f: (a.label, b.label) for f, (a, b) in pairs.items()}
    )
    counts = {v.label: main[v.name].train_triples for pair in pairs.values() for v in pair}
    tests["triples_guidelines"] = tests["guidelines"].map(counts)
    tests["triples_random"] = tests["random"].map(counts)
    return tests


def ablation_png(rep: Reproduction) -> bytes:
    main = {r.variant.name: r for r in _main_runs(rep)}
    pairs = experiment.ablation_pairs({r.variant.name: r.variant for r in main.values()})
    by_protocol = {
        p: {f: (main[a.name].results[p], main[b.name].results[p]) for f, (a, b) in pairs.items()}
        for p in eval_core.PROTOCOLS
    }
    return eval_core.ablation_figure_protocols(by_protocol)


def curve_table(rep: Reproduction, protocol: str = "unbought") -> pd.DataFrame:
    rows = []
    visrank = rep.baselines["VisRank"][protocol].summary
    for r in rep.runs:
        if r.seed != rep.budget.seeds[0]:
            continue
        if r.variant.sampling == "guidelines" and r.variant.l2 != rep.budget.ablation_l2:
            continue
        s = r.results[protocol].summary
        rows.append(
            {"n_per_strategy": r.n_per_strategy, "method": r.variant.label,
             "train_triples": r.train_triples, "AUC": s["auc"][0], "AUC se": s["auc"][1],
             "R@100": s["recall@100"][0], "R@100 se": s["recall@100"][1],
             "val_auc": r.validation.get("val_auc", np.nan), "seconds": r.seconds}
        )  # fmt: skip
    for n in rep.budget.curve_points():
        rows.append(
            {"n_per_strategy": n, "method": "VisRank", "train_triples": 0,
             "AUC": visrank["auc"][0], "AUC se": visrank["auc"][1],
             "R@100": visrank["recall@100"][0], "R@100 se": visrank["recall@100"][1],
             "val_auc": rep.baseline_validation["VisRank"]["val_auc"], "seconds": 0.0}
        )  # fmt: skip
    return pd.DataFrame(rows).sort_values(["method", "n_per_strategy"]).reset_index(drop=True)


def curve_png(rep: Reproduction, protocol: str = "unbought") -> bytes:
    from matplotlib.figure import Figure

    df = curve_table(rep, protocol)
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    for ax, (metric, se) in zip(axes, (("AUC", "AUC se"), ("R@100", "R@100 se")), strict=True):
        for method, rows in df.groupby("method"):
            ax.errorbar(rows["n_per_strategy"], rows[metric], yerr=rows[se], marker="o",
                        capsize=3, label=method)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("training triples per guideline (random: x6)")
        ax.set_ylabel(f"{metric} (mean ± s.e.), protocol {protocol}")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Budget curve ({rep.budget.epochs} epochs each)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def validation_table(rep: Reproduction) -> pd.DataFrame:
    rows = []
    for r in _main_runs(rep):
        best = r.history[r.best_epoch - 1] if r.history and r.best_epoch else {}
        rows.append(
            {"method": r.variant.label, "epochs": len(r.history), "best epoch": r.best_epoch,
             "val triple accuracy": best.get("val_accuracy", np.nan),
             "best epoch by val acc": int(np.argmax([h["val_accuracy"] for h in r.history])) + 1
             if r.history else 0,
             "val_auc": r.validation.get("val_auc", np.nan),
             "val_recall@100": r.validation.get("val_recall@100", np.nan),
             "test AUC (unbought)": r.results["unbought"].summary["auc"][0],
             "test R@100 (unbought)": r.results["unbought"].summary["recall@100"][0],
             "val_auc per epoch": " ".join(f"{h.get('val_auc', np.nan):.3f}" for h in r.history),
             "val acc per epoch": " ".join(f"{h['val_accuracy']:.3f}" for h in r.history)}
        )  # fmt: skip
    for label, val in rep.baseline_validation.items():
        test = rep.baselines[label]["unbought"].summary
        rows.append(
            {"method": label, "epochs": 0, "best epoch": 0, "val triple accuracy": np.nan,
             "best epoch by val acc": 0,
             "val_auc": val["val_auc"], "val_recall@100": val["val_recall@100"],
             "test AUC (unbought)": test["auc"][0], "test R@100 (unbought)": test["recall@100"][0],
             "val_auc per epoch": "", "val acc per epoch": ""}
        )  # fmt: skip
    return pd.DataFrame(rows)


def _table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    return report_core.markdown_table(df, floatfmt, max_rows=None) + "\n"


def report_markdown(rep: Reproduction, command: str, figures: dict[str, str]) -> str:
    """The reproduction report; ``figures`` maps 'ablation', 'curve' to image paths."""
    b = rep.budget
    lines = [
        "# Reproduction of CuratorNet's Table 2 and Figure 3",
        "",
        f"Command: `{command}`  ",
        f"Wall time: {rep.seconds / 60:.1f} min on {rep.meta['processor']} "
        f"({rep.meta['torch_threads']} torch threads; torch {rep.meta['torch']}).  ",
        f"Budget `{b.name}`: {b.n_per_strategy:,} training triples per guideline "
        f"(random partition {6 * b.n_per_strategy:,}), {b.epochs} epochs, λ grid "
        f"{list(b.l2_grid)}, ablation λ {b.ablation_l2:g}, seeds {list(b.seeds)}, budget curve "
        f"at {list(b.curve_points())} triples per guideline.",
        "",
        "## Settings",
        "",
        *[f"- {k}: `{json.dumps(v, default=str)}`" for k, v in rep.settings.items()],
        "",
        "## Data",
        "",
        _table(
            pd.DataFrame(
                {
                    "statistic": list(rep.data_stats),
                    "value": pd.Series(list(rep.data_stats.values()), dtype=object),
                }
            )
        ),  # fmt: skip
        "## Triples: profile sizes per guideline, beside the reference sampler's",
        "",
        "Shares of training triples by profile size. `paper` is the paper's guideline "
        "number (docs/guidelines.md). The reference's means are those of the authors' "
        "sampler on the real UGallery data; the `pair` rows sample guidelines 1 and 2 per "
        "(user, basket) pair instead of per user, for comparison only.",
        "",
        _table(rep.triples, ".3f"),
    ]
    for protocol in eval_core.PROTOCOLS:
        table = eval_core.table2(table2_results(rep, protocol))
        lines += [
            "## Table 2, protocol " + protocol,
            "",
            eval_core.table2_markdown(table, protocol),
        ]
        lines += [
            f"Ordering of methods (guideline-trained and baselines) on `{protocol}`, "
            "beside the paper's Table 2:",
            "",
            _table(ordering_table(rep, protocol)),
        ]
    tests = ablation(rep)
    show = tests[["protocol", "family", "metric", "triples_guidelines", "triples_random",
                  "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "statistic", "pvalue",
                  "n"]].rename(columns={"mean_a": "guidelines", "mean_b": "random"})  # fmt: skip
    lines += [
        "## Figure 3: guidelines vs uniform random sampling, equal triple counts",
        "",
        "Paired t-tests over test users; the random-sampling model of each pair trained on "
        "exactly as many triples as its guideline partner (columns `triples_*`), with the "
        "same epochs, schedule and λ.",
        "",
        _table(show.assign(pvalue=show["pvalue"].map(lambda p: f"{p:.2g}")), ".4f"),
        f"![Figure 3]({figures.get('ablation', '')})",
        "",
        "## Validation: does the ranking metric separate what the test set separates?",
        "",
        "The last training basket of every user with at least two training baskets is held "
        "out before sampling; `val_auc` and `val_recall@100` rank it like the test set. "
        "Triple accuracy (`val triple accuracy`) is the old signal.",
        "",
        _table(validation_table(rep)),
        *_weighting_section(rep),
        "## Budget curve",
        "",
        "CuratorNet and VBPR at the ablation λ (guidelines and size-matched random), VisRank "
        "for reference, protocol `unbought`.",
        "",
        _table(curve_table(rep)),
        f"![Budget curve]({figures.get('curve', '')})",
        "",
        _caveats(rep),
    ]
    return "\n".join(lines)


def _weighting_section(rep: Reproduction) -> list[str]:
    """CuratorNet with guidelines 1 and 2 weighted per user (used) vs per basket pair."""
    if set(rep.weighting_runs) != {"user", "pair"}:
        return []
    rows = []
    user, pair = rep.weighting_runs["user"], rep.weighting_runs["pair"]
    for protocol in eval_core.PROTOCOLS:
        for metric in ("auc", "recall@100"):
            t = eval_core.paired_comparison(user.results[protocol], pair.results[protocol], metric)
            rows.append(
                {"protocol": protocol, "metric": metric, "per user": t["mean_a"],
                 "per pair": t["mean_b"], "difference": t["mean_diff"], "ci_low": t["ci_low"],
                 "ci_high": t["ci_high"], "pvalue": f"{t['pvalue']:.2g}", "n": t["n"]}
            )  # fmt: skip
    return [
        "## Basket guidelines weighted per user (used) or per basket pair",
        "",
        f"CuratorNet (λ {user.variant.l2:g}) trained twice, identical except for how guidelines "
        f"1 and 2 (`s6_hide_one`, `s5_next_basket`) draw their profiles: {user.train_triples:,} "
        f"vs {pair.train_triples:,} training triples, {user.seconds:.0f} s vs "
        f"{pair.seconds:.0f} s of training. Paired t-tests over test users:",
        "",
        _table(pd.DataFrame(rows)),
    ]


def _caveats(rep: Reproduction) -> str:
    emb = rep.settings.get("embedding", {})
    weights = str(emb.get("weights", ""))
    lines = ["## What would change with ImageNet weights and real images", ""]
    if weights.startswith("none"):
        lines.append(
            "These vectors come from a ResNet-50 with **random weights** (seeded), applied to "
            "synthetic images whose styles are colour and texture fields. Random convolutional "
            "features still separate such images (colour statistics survive random filters), "
            "which is why VisRank and the visual models learn anything here; on photographs of "
            "real paintings they carry little of what ImageNet features carry (objects, "
            "composition, brushwork). With ImageNet weights and real images:"
        )
    else:
        lines.append(f"These vectors come from `{weights}`. With real images of paintings:")
    lines += [
        "",
        "- **The absolute numbers move** towards the paper's (AUC around .72 for CuratorNet "
        "and VisRank): the synthetic catalogue's styles are easier to tell apart than real "
        "art, and the synthetic buyers follow their styles more strictly than real ones.",
        "- **VisRank vs CuratorNet** depends most on the features: VisRank uses them as they "
        "are, CuratorNet learns a projection, so better features help VisRank at least as "
        "much; the paper has the two within .005 AUC.",
        "- **VBPR** needs collaborative signal (repeat buyers); its gap to CuratorNet comes "
        "from the one-of-a-kind catalogue (78% of items sold once), which the synthetic data "
        "reproduces, so that ordering should hold.",
        "- **The transform**: ImageNet weights use their own preprocessing (ResNet-50 "
        "IMAGENET1K_V2: resize 232, centre-crop 224), which crops the borders of wide or tall "
        "paintings; random weights here use the same transform, so only the weights change.",
        "- **The budget**: the paper trains on ~10M triples for 10 epochs; the curve above "
        "shows how far the smaller budgets are from saturating.",
        "",
    ]
    return "\n".join(lines)


def write_report(rep: Reproduction, out: Path, command: str, extra: str = "") -> Path:
    """Write ``out`` (markdown) and its figures in ``<out stem>/`` beside it."""
    out = Path(out)
    fig_dir = out.parent / out.stem
    fig_dir.mkdir(parents=True, exist_ok=True)
    (fig_dir / "figure3.png").write_bytes(ablation_png(rep))
    (fig_dir / "budget_curve.png").write_bytes(curve_png(rep))
    figures = {"ablation": f"{out.stem}/figure3.png", "curve": f"{out.stem}/budget_curve.png"}
    text = report_markdown(rep, command, figures) + ("\n" + extra if extra else "")
    out.write_text(text)
    return out
