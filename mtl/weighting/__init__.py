"""Loss weightings: the per-task losses ``L`` [T] in, the scalar training objective out (one backward pass).

Every method is a `LossWeighting` (see `mtl.weighting.base` for the lifecycle driven by
``MultiTaskModule``: `bind`, ``forward`` every step, `after_step`, `epoch_end`). ``weights`` holds the
last effective per-task weights [T] for logging: the loss weights of a weighted sum, or, for the
non-linear scalarisations (GLS, STCH), ``∂objective / ∂L_i``, the weights of the task gradients.

=============  ==================================  ==============================================  ============  ==========================
Class          Paper                               Weights (sum)                                   All tasks     Extra hooks / state
=============  ==================================  ==============================================  ============  ==========================
`EW`           baseline (LibMTL, JMLR 2023)        1 (T)                                           no            --
`UW`           Kendall et al., CVPR 2018           1 / (2 exp(s_i)), learnt s (1/2 each at init)   no            parameter s
`DWA`          Liu et al., CVPR 2019               T softmax(r / tau), r: epoch-loss ratios (T)    no            `epoch_end`; loss history
`GLS`          Chennupati et al., CVPRW 2019       G / (T L_i), G the geometric mean               yes           --
`RLW`          Lin et al., TMLR 2022               softmax(N(0, I)) drawn per (seed, step) (1)     no            --
`FAMO`         Liu et al., NeurIPS 2023            c z_i / L_i, z = softmax(xi) (1)                yes           `after_step`; logits xi
`IMTLL`        Liu et al., ICLR 2021               exp(s_i), learnt s (-> 1 / L_i)                 no            parameter s
`STCH`         Lin et al., ICML 2024               T lambda_i softmax_i(...) / L_i (1 / L_i early) yes           `epoch_end`; loss normaliser
`GradNorm`     Chen et al., ICML 2018              learnt w, renormalised to sum T (T)             yes           ``grad_norms``; parameter w
=============  ==================================  ==============================================  ============  ==========================

"All tasks": ``requires_all_tasks`` (the method needs every task's loss at every step; the others
accept the losses of any subset of tasks, named by ``tasks``). Methods with learnable parameters
(UW, IMTL-L, GradNorm) are trained by the module's optimizer (``lr``: their own learning rate).
State updated outside of gradients (DWA's and STCH's epoch means, FAMO's logits, GradNorm's
initial losses) is computed from values averaged over DDP ranks with ``reduce``, so every rank
keeps the same state. The math is in pure functions next to each class (`uncertainty_objective`,
`dwa_weights`, `geometric_mean_loss`, `random_loss_weights`, `famo_objective`,
`famo_logit_gradient`, `imtl_l_objective`, `smooth_tchebycheff`, `gradnorm_loss`).
"""

from mtl.weighting.base import LossWeighting
from mtl.weighting.dwa import DWA, dwa_weights
from mtl.weighting.epoch_losses import EpochLossMeans
from mtl.weighting.ew import EW
from mtl.weighting.famo import FAMO, famo_logit_gradient, famo_objective
from mtl.weighting.gls import GLS, geometric_mean_loss
from mtl.weighting.gradnorm import GradNorm, gradnorm_loss
from mtl.weighting.imtl_l import IMTLL, imtl_l_objective
from mtl.weighting.rlw import RLW, random_loss_weights
from mtl.weighting.stch import STCH, smooth_tchebycheff
from mtl.weighting.uw import UW, uncertainty_objective

__all__ = [
    "DWA",
    "EW",
    "FAMO",
    "GLS",
    "IMTLL",
    "RLW",
    "STCH",
    "UW",
    "EpochLossMeans",
    "GradNorm",
    "LossWeighting",
    "dwa_weights",
    "famo_logit_gradient",
    "famo_objective",
    "geometric_mean_loss",
    "gradnorm_loss",
    "imtl_l_objective",
    "random_loss_weights",
    "smooth_tchebycheff",
    "uncertainty_objective",
]
