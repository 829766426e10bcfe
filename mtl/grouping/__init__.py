"""Task grouping: measure which tasks help each other in one joint run, then choose groups."""

from mtl.grouping.affinity import AffinityCallback, StepAffinityCallback, load_affinity, shared_parameters
from mtl.grouping.datamap import DataMapAffinity, data_map, feature_similarity
from mtl.grouping.fuzzy_memberships import fuzzy_memberships, kmeans
from mtl.grouping.gradient_cosine import GradientCosineAffinity, gradient_cosines
from mtl.grouping.lookahead import lookahead_deltas
from mtl.grouping.tag import TAGAffinity, lookahead_affinity

__all__ = [
    "AffinityCallback",
    "DataMapAffinity",
    "GradientCosineAffinity",
    "StepAffinityCallback",
    "TAGAffinity",
    "data_map",
    "feature_similarity",
    "fuzzy_memberships",
    "gradient_cosines",
    "kmeans",
    "load_affinity",
    "lookahead_affinity",
    "lookahead_deltas",
    "shared_parameters",
]
