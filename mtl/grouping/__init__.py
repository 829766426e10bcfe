"""Task grouping: measure which tasks help each other in one joint run, then choose groups.

Affinity callbacks (`TAGAffinity`, `GradientCosineAffinity`, `DataMapAffinity`) measure a task x task
matrix during training; `hoa_scores` derives one from single-task and pairwise runs (Standley et
al.); `select_groups` chooses at most ``K`` groups on it (exhaustive, branch-and-bound or beam
search). ``mtl group`` (`mtl.grouping.command`) runs the whole pipeline from a config.
"""

from mtl.grouping.affinity import AffinityCallback, StepAffinityCallback, load_affinity, shared_parameters
from mtl.grouping.beam import beam_search
from mtl.grouping.datamap import DataMapAffinity, data_map, feature_similarity
from mtl.grouping.fuzzy_memberships import fuzzy_memberships, kmeans
from mtl.grouping.gradient_cosine import GradientCosineAffinity, gradient_cosines
from mtl.grouping.hoa import PairwiseResults, approximate, hoa_scores, read_pairwise_results
from mtl.grouping.lookahead import lookahead_deltas
from mtl.grouping.scores import CandidateScores, PairwiseScores
from mtl.grouping.selection import Selection, select_groups, selection_from_memberships
from mtl.grouping.tag import TAGAffinity, lookahead_affinity

__all__ = [
    "AffinityCallback",
    "CandidateScores",
    "DataMapAffinity",
    "GradientCosineAffinity",
    "PairwiseResults",
    "PairwiseScores",
    "Selection",
    "StepAffinityCallback",
    "TAGAffinity",
    "approximate",
    "beam_search",
    "data_map",
    "feature_similarity",
    "fuzzy_memberships",
    "gradient_cosines",
    "hoa_scores",
    "kmeans",
    "load_affinity",
    "lookahead_affinity",
    "lookahead_deltas",
    "read_pairwise_results",
    "select_groups",
    "selection_from_memberships",
    "shared_parameters",
]
