"""Graph datamodules, one file per dataset family: Planetoid node classification (:mod:`.planetoid`), TU graph
classification (:mod:`.tu`) and TU with a distilled training set (:mod:`.mirage`); :mod:`.raw` opens PyG
datasets from the user's raw files. Each has an embedded synthetic default (``root=None``)."""

from datamodules.graphs.mirage import GraphDistiller, MirageDataModule, random_subset
from datamodules.graphs.planetoid import (
    PlanetoidDataModule,
    check_node_splits,
    inductive_split,
    planetoid_public_split,
    planetoid_raw_file_names,
)
from datamodules.graphs.tu import (
    TUDataModule,
    categorical_edge_labels,
    categorical_node_labels,
    degree_one_hot,
    node_degrees,
    stratified_graph_split,
    tu_raw_file_names,
)

__all__ = [
    "GraphDistiller",
    "MirageDataModule",
    "PlanetoidDataModule",
    "TUDataModule",
    "categorical_edge_labels",
    "categorical_node_labels",
    "check_node_splits",
    "degree_one_hot",
    "inductive_split",
    "node_degrees",
    "planetoid_public_split",
    "planetoid_raw_file_names",
    "random_subset",
    "stratified_graph_split",
    "tu_raw_file_names",
]
