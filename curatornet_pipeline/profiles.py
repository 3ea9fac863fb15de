"""The stage settings of each profile (tiny, demo, paper): plain data, so that commands
which only read metadata (``curatornet lineage``) need not import the stages' code.

The settings resource (defs/resources.py) turns them into typed launchpad fields.
"""

from typing import Any

#: Stage settings per profile. Keys are the fields of each stage's core config
#: dataclass; anything absent takes that dataclass's (paper) default.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # tests and CI: seconds per stage on 2 cores
    "tiny": {
        "embed": {
            "backbone": "resnet18",
            "weights": "none",
            "image_size": 64,
            "batch_size": 32,
            "num_workers": 0,
        },
        "pca": {"n_components": 32},
        "cluster": {"k": 6, "restarts": 3},
        "sampling": {"n_per_strategy": 1500},
        "train": {"epochs": 3, "lr": 1e-3, "patience": 2, "batch_triples": 4096},
        "models": {"curatornet_l2": [0.0, 1e-4], "vbpr_l2": [1e-4], "ablation_l2": 1e-4},
        "evaluation": {},
    },
    # the main job: the whole graph in minutes on 2 CPU cores
    "demo": {
        "embed": {"backbone": "resnet50"},
        "pca": {"n_components": 200},
        "cluster": {"k": 30, "restarts": 10},
        "sampling": {"n_per_strategy": 60_000},
        "train": {"epochs": 5, "lr": 1e-3, "batch_triples": 4096},
        "models": {
            "curatornet_l2": [0.0, 1e-4, 1e-3, 1e-2],
            "vbpr_l2": [0.0, 1e-4, 1e-3, 1e-2],
            "ablation_l2": 1e-4,
        },
        "evaluation": {},
    },
    # the paper's settings (Table 2): ~10M triples, 10 epochs, k=100 x 20 restarts
    "paper": {
        "embed": {"backbone": "resnet50"},
        "pca": {"n_components": 200},
        "cluster": {"k": 100, "restarts": 20},
        "sampling": {},
        "train": {},
        "models": {},
        "evaluation": {},
    },
}
