"""The encoder contract: inputs in, `Features` out."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from mtl.features import FeatureKind, Features

__all__ = ["Encoder"]


class Encoder(nn.Module, abc.ABC):
    """A shared encoder maps a batch's ``inputs`` to `Features`.

    Subclasses set ``out_features`` (the width ``H`` of ``pooled`` and ``tokens``) in ``__init__`` and
    declare in ``provides`` which representations their output carries. Any ``nn.Module`` can be
    wrapped with `mtl.encoders.ModuleEncoder`.
    """

    provides: ClassVar[frozenset[FeatureKind]] = frozenset({"pooled"})
    out_features: int

    @abc.abstractmethod
    def forward(self, inputs: Any) -> Features:
        """Encode ``inputs`` (a tensor or a dict of tensors, as the data source yields them)."""

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the encoder's last layer: GradNorm's ``W`` and the gradients of
        the balancers' ``last_layer`` option.

        Default: those of the last submodule, in registration order, that owns a trainable weight
        matrix (a parameter with two or more dimensions). Encoders whose registration order is not
        their data flow override it.
        """
        last: list[nn.Parameter] = []
        for module in self.modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if any(p.dim() >= 2 for p in own):
                last = own
        if not last:
            raise ValueError(
                f"Expected {type(self).__name__} to have a trainable layer with a weight matrix, but it has none "
                "(is the encoder frozen?). Methods that balance on the last shared layer need one."
            )
        return last

    def check_input_spec(self, spec: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if the data described by ``spec`` does not fit this encoder.

        ``spec`` is `mtl.data.sources.DataSource.input_spec` (e.g. the number of numeric features
        and the cardinality of each categorical column). Called once before training, so that a
        mismatch fails with a message that gives the right config values instead of an index error
        mid-run.
        """
