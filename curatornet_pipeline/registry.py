"""The model registry's champion rule.

The candidate is the CuratorNet variant with the best **validation AUC** (held-out
baskets of the training users; the test set chooses nothing: :class:`Selection`). The
deployment gate is its **test AUC** on the evaluation report's primary protocol (mean
over test users, the paper's headline metric; threshold-free). The current champion is not judged by a number stored when it was trained (each run draws its own
validation set, and test data change with retraining): it is **re-scored on the same
split, the same candidate items and the same evaluation code** as the candidate. The
candidate takes the alias ``champion`` only when its AUC is strictly higher.

Every decision is written on the candidate's version, description and tags: how the
candidate was chosen (the rule, every candidate with its validation AUC:
:class:`Selection`) and the deployment gate (its test AUC against the previous
champion's, re-scored: :class:`Decision`). The ``champion`` tag of MLflow runs follows
the alias: ``True`` on the champion's run only.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MODEL_NAME = "curatornet"
ALIAS = "champion"
ARTIFACT_DIR = "recommender"  # the pyfunc model's folder in its training run
METRIC = "auc"  # test AUC, primary evaluation protocol
TAG_CHAMPION = "champion"  # run tag kept consistent with the alias


@dataclass(frozen=True)
class Selection:
    """How the candidate was picked among the trained variants, before any test data."""

    chosen: str  # the candidate's partition key, e.g. "l0.0001"
    scores: Mapping[str, float]  # partition key -> the score it was picked on
    selected_on: str  # "val_auc", or "test auc" for models trained without a hold-out
    label: str = ""  # the chosen variant's Table 2 label, e.g. "CuratorNet (0.0001)"

    def rule(self) -> str:
        if self.selected_on == "val_auc":
            return (
                "the highest validation AUC (held-out baskets of the training users; the test "
                "set chooses nothing)"
            )
        return f"the highest {self.selected_on} (the models carry no validation AUC)"

    def candidates(self) -> str:
        """``l0=0.6123, l0.0001=0.6345``: every candidate and its score, in key order."""
        return ", ".join(f"{k}={v:.4f}" for k, v in sorted(self.scores.items()))

    def markdown(self) -> str:
        named = f"`{self.chosen}`" + (f" ({self.label})" if self.label else "")
        listed = ", ".join(
            f"**{k} {v:.4f}**" if k == self.chosen else f"{k} {v:.4f}"
            for k, v in sorted(self.scores.items())
        )
        return (
            f"Selection: variant {named}, picked by {self.rule()} among "
            f"{len(self.scores)} CuratorNet candidate{'s' if len(self.scores) != 1 else ''}: "
            f"{listed}."
        )

    def tags(self) -> dict[str, str]:
        return {
            "selection_rule": f"max {self.selected_on} over the CuratorNet weight decays",
            "selected_on": self.selected_on,
            "candidates": str(len(self.scores)),
            f"candidate_{self.selected_on.replace(' ', '_')}": self.candidates(),
        }


GATE_RULE = (
    f"promote when the test {METRIC.upper()} is strictly higher than the current champion's, "
    "re-scored on the same split, candidate items and evaluation code"
)


@dataclass(frozen=True)
class Decision:
    """The champion rule's verdict on one candidate."""

    promote: bool
    candidate: float  # candidate's test AUC
    champion: float | None  # current champion's test AUC, same split; None: no champion
    champion_version: str | None  # version holding the alias before the decision
    reason: str

    def markdown(self, metric: str = METRIC, protocol: str = "") -> str:
        """The comparison as a short markdown paragraph (version description)."""
        where = f" (protocol `{protocol}`)" if protocol else ""
        champ = (
            "no champion yet"
            if self.champion is None
            else f"champion v{self.champion_version}: {self.champion:.4f}"
        )
        verdict = "**promoted to champion**" if self.promote else "**not promoted**"
        return (
            f"Test {metric.upper()}{where}, same split, candidates and evaluation code: "
            f"this version {self.candidate:.4f}, {champ}. {verdict}: {self.reason}."
        )


def decide(
    candidate: float, champion: float | None, champion_version: str | None = None
) -> Decision:
    """Promote when there is no champion or the candidate's metric is strictly higher."""
    if champion is None:
        return Decision(True, candidate, None, champion_version, "no current champion")
    if candidate > champion:
        return Decision(
            True, candidate, champion, champion_version, f"+{candidate - champion:.4f} over it"
        )
    return Decision(
        False, candidate, champion, champion_version, f"{candidate - champion:+.4f}, not higher"
    )


def ensure_registered_model(client: Any, name: str = MODEL_NAME) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name,
            description=(
                "CuratorNet recommenders trained by the curatornet pipeline (pyfunc: liked "
                "artwork ids in, ranked artworks out). The alias `champion` follows the test-AUC "
                "rule in curatornet_pipeline/registry.py."
            ),
        )


def find_version(client: Any, name: str, data_version: str) -> Any | None:
    """The version registered for the model of this data version, if any."""
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get("data_version") == data_version:
            return version
    return None


def current_champion(client: Any, name: str = MODEL_NAME) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


def apply_rule(
    client: Any,
    version: Any,
    candidate_score: float,
    score_version: Callable[[Any], float | None],
    name: str = MODEL_NAME,
    protocol: str = "",
    extra_tags: Mapping[str, str] | None = None,
    selection: Selection | None = None,
) -> Decision:
    """Decide on ``version``, move the alias, describe the decision, sync run tags.

    ``score_version(model_version)`` re-scores the current champion on the candidate's
    split (None when it cannot be scored there, e.g. other feature dimensions).
    ``selection``: how the candidate was picked; stated in the description and tags.
    """
    champ = current_champion(client, name)
    if champ is not None and str(champ.version) == str(version.version):
        decision = Decision(
            False, candidate_score, candidate_score, str(champ.version), "already the champion"
        )
    else:
        score = score_version(champ) if champ is not None else None
        if champ is not None and score is None:
            decision = Decision(
                True,
                candidate_score,
                None,
                str(champ.version),
                "the champion cannot be scored here",
            )
        else:
            decision = decide(candidate_score, score, str(champ.version) if champ else None)
    if decision.promote:
        client.set_registered_model_alias(name, ALIAS, version.version)
    tags = {
        f"test_{METRIC}": f"{decision.candidate:.6f}",
        f"champion_test_{METRIC}_same_split": ""
        if decision.champion is None
        else f"{decision.champion:.6f}",
        "compared_with_version": decision.champion_version or "",
        "decision": "promoted" if decision.promote else "kept",
        "gate_rule": GATE_RULE,
        **(selection.tags() if selection is not None else {}),
        **(extra_tags or {}),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_tag(version.run_id, "registered_model", name)
    client.update_model_version(
        name, version.version, description=describe(decision, selection, protocol)
    )
    sync_run_tags(client, name)
    return decision


def describe(decision: Decision, selection: Selection | None = None, protocol: str = "") -> str:
    """The version's description: how it was chosen, then the deployment gate's verdict."""
    gate = f"Deployment gate ({GATE_RULE}): {decision.markdown(METRIC, protocol)}"
    return gate if selection is None else f"{selection.markdown()}\n\n{gate}"


def sync_run_tags(client: Any, name: str = MODEL_NAME) -> None:
    """``champion=True`` on the run of the alias's version only, ``False`` on every other run."""
    champ = current_champion(client, name)
    champion_run = champ.run_id if champ is not None else None
    stale = champion_runs(client, name)
    for run in stale:
        if run.info.run_id != champion_run:
            client.set_tag(run.info.run_id, TAG_CHAMPION, "False")
    if champion_run:
        client.set_tag(champion_run, TAG_CHAMPION, "True")


def champion_runs(client: Any, name: str = MODEL_NAME) -> list:
    """Runs of ``name``'s versions that carry ``champion=True``."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(
        experiments,
        filter_string=f"tags.{TAG_CHAMPION} = 'True' and tags.registered_model = '{name}'",
    )
