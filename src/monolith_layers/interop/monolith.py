"""Move layers and weights from Monolith (TensorFlow) to monolith_layers.

* :func:`from_monolith` builds our layer from the dict the original layer's
  ``get_config()`` produced plus the ``input_shape`` its ``build()`` saw, and
  reproduces what the original actually computed for that config.
* :func:`monolith_variables` maps each Monolith variable path (relative to
  the layer, e.g. ``'compress_tower/dense_0/kernel'``) to the live tensor.
* :func:`load_monolith_weights` copies ``{tf name: array}`` into a layer.

Every Monolith variable is exactly one parameter or buffer of the same shape
and layout (kernels are ``(in, out)`` as in TF), so copying is a plain copy.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..layer import Layer

Shape = Sequence[int | None]
Translator = Callable[[dict[str, Any], Any], tuple[type, dict[str, Any]]]

# Keys every Keras layer config carries that have no counterpart here.
_KERAS_BASE_KEYS = ("trainable", "dtype", "batch_input_shape", "dynamic", "autocast")

_TRANSLATORS: dict[str, Translator] = {}


def register_translator(class_name: str) -> Callable[[Translator], Translator]:
    """Declare how a Monolith config + input shape become our constructor kwargs."""

    def decorate(fn: Translator) -> Translator:
        _TRANSLATORS[class_name] = fn
        return fn

    return decorate


def _last_dim(where: str, shape: Shape) -> int:
    if not isinstance(shape, (list, tuple)):
        raise TypeError(
            f"{where}: input_shape must be a shape (a tuple such as (None, 8)), "
            f"got {type(shape).__name__} {shape!r}"
        )
    if not shape or shape[-1] is None:
        raise ValueError(f"{where}: input_shape must end in a known size, got {shape!r}")
    return int(shape[-1])


def _shapes(where: str, input_shape: Any, count: int) -> list[Shape]:
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != count
        or not all(isinstance(s, (list, tuple)) for s in input_shape)
    ):
        raise ValueError(
            f"{where}: input_shape must be a list of {count} shapes, got {input_shape!r}"
        )
    return list(input_shape)


def drop_unsupported(where: str, config: dict[str, Any], keys: Mapping[str, Any]) -> None:
    """Remove Monolith-only options; warn when one was set to a non-default value."""
    for key, default in keys.items():
        if key in config and config.pop(key) != default:
            warnings.warn(f"{where}: option {key!r} has no effect in monolith_layers", stacklevel=3)


def from_monolith(class_name: str, config: Mapping[str, Any], input_shape: Any) -> Layer:
    """Build our layer from an original layer's ``get_config()`` and build input shape.

    Args:
        class_name: Monolith's class name, e.g. ``'MLP'``, ``'DIN'``, ``'AGRUCell'``.
        config: what the original's ``get_config()`` returned (Keras-serialised
            initializers, regularizers and activations are understood).
        input_shape: the shape the original's ``build()`` received: a tuple, or
            a list of tuples for layers with several inputs (DIN:
            ``[(B, H), (B, T, H)]``; AGRUCell: ``[(B, D), (B, units), (B, 1)]``).
    """
    if class_name not in _TRANSLATORS:
        raise ValueError(
            f"from_monolith: unknown class {class_name!r}; known classes are {sorted(_TRANSLATORS)}"
        )
    if not isinstance(config, Mapping):
        raise TypeError(
            f"from_monolith: config must be the dict the original layer's get_config() "
            f"returned, got {type(config).__name__}"
        )
    config = dict(config)
    for key in _KERAS_BASE_KEYS:
        config.pop(key, None)
    cls, kwargs = _TRANSLATORS[class_name](config, input_shape)
    return cls(**kwargs)


def monolith_variables(module: nn.Module) -> dict[str, torch.Tensor]:
    """Monolith variable path relative to ``module`` -> its parameter or buffer."""
    if not isinstance(module, Layer):
        raise TypeError(
            f"monolith_variables: expected a monolith_layers Layer, got {type(module).__name__}"
        )
    return module.monolith_variables()


def _strip_suffix(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def _resolve_names(
    known: Sequence[str], names: Sequence[str], scope: str | None
) -> tuple[dict[str, str], list[str]]:
    """Match given (possibly fully scoped) TF names to relative variable paths.

    A name matches the longest relative path it ends with, at a ``/``
    boundary, so ``'din/compress_tower/dense_0/bias:0'`` finds
    ``'compress_tower/dense_0/bias'`` and ``'dmr__u2i/dense/bias'`` finds
    ``'dense/bias'`` rather than ``'bias'``.
    """
    by_length = sorted(known, key=len, reverse=True)
    matched: dict[str, str] = {}
    unexpected: list[str] = []
    for given in names:
        name = _strip_suffix(given)
        if scope is not None:
            prefix = scope.rstrip("/") + "/"
            if not name.startswith(prefix):
                unexpected.append(given)
                continue
            name = name[len(prefix) :]
        target = next((k for k in by_length if name == k or name.endswith("/" + k)), None)
        if target is None:
            unexpected.append(given)
            continue
        if target in matched:
            raise ValueError(
                f"load_monolith_weights: both {matched[target]!r} and {given!r} map to "
                f"{target!r}; pass scope= to pick one layer"
            )
        matched[target] = given
    return matched, unexpected


def _numeric_array(where: str, name: str, value: Any) -> np.ndarray:
    """``value`` as a real-valued numpy array, or a TypeError naming the variable."""
    if value is None:
        raise TypeError(f"{where}: {name!r} is None, expected an array")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()  # exact; numpy has no bfloat16
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists, ...
        raise TypeError(f"{where}: {name!r} is not an array of numbers ({err})") from None
    if array.dtype.kind not in "fiu":
        what = {"c": "complex", "b": "boolean"}.get(
            array.dtype.kind, f"non-numeric ({array.dtype})"
        )
        raise TypeError(f"{where}: {name!r} holds {what} values, expected real numbers")
    return array


def load_monolith_weights(
    module: nn.Module,
    weights: Mapping[str, Any],
    strict: bool = True,
    scope: str | None = None,
) -> dict[str, list[str]]:
    """Copy ``{TF variable name: array}`` into ``module``, all or nothing.

    Names may be relative (``'dense_0/kernel'``) or full TF names with the
    outer scopes and ``':0'`` (``'mlp/dense_0/kernel:0'``). With ``scope``,
    only names under that scope are considered. Every name, shape and value
    is checked before anything is copied: on any error the module is left
    exactly as it was.

    Args:
        module: the layer to fill.
        weights: name -> numpy array / tensor / nested list of real numbers.
        strict: raise one error listing every missing and unexpected name.
        scope: outer TF scope to restrict to, e.g. ``'model/din_1'``.

    Returns:
        ``{'missing': [...], 'unexpected': [...]}`` (both empty when strict).

    Raises:
        TypeError: ``weights`` is not a mapping of str to real-valued arrays
            (None, strings, complex or boolean values).
        ValueError: missing / unexpected names (strict), or shape mismatches
            (all listed at once).
    """
    where = f"load_monolith_weights({type(module).__name__})"
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"{where}: weights must be a mapping of TF names to arrays, got {type(weights).__name__}"
        )
    for name in weights:
        if not isinstance(name, str):
            raise TypeError(f"{where}: weight names must be str, got {name!r}")
    variables = monolith_variables(module)
    matched, unexpected = _resolve_names(list(variables), list(weights), scope)
    missing = sorted(set(variables) - set(matched))
    if strict and (missing or unexpected):
        raise ValueError(
            f"{where}: missing variables {missing}, unexpected names {sorted(unexpected)}"
        )
    staged: dict[str, torch.Tensor] = {}
    mismatches = []
    for target, given in matched.items():
        array = _numeric_array(where, given, weights[given])
        tensor = variables[target]
        if tuple(array.shape) != tuple(tensor.shape):
            mismatches.append(
                f"variable {target!r} has shape {tuple(tensor.shape)}, "
                f"the given {given!r} has shape {tuple(array.shape)}"
            )
            continue
        staged[target] = torch.as_tensor(array).to(dtype=tensor.dtype, device=tensor.device)
    if mismatches:
        raise ValueError(f"{where}: " + "; ".join(mismatches))
    with torch.no_grad():
        for target, value in staged.items():
            variables[target].copy_(value)
    return {"missing": missing, "unexpected": sorted(unexpected)}


# --------------------------------------------------------------- translators
@register_translator("Dense")
def _dense(config: dict[str, Any], input_shape: Any):
    from ..dense import Dense

    drop_unsupported(
        "from_monolith('Dense')",
        config,
        {"partitioner": None, "inactive_relu_monitor": False, "inactive_relu_monitor_decay": 0.1},
    )
    config["input_dim"] = _last_dim("from_monolith('Dense')", input_shape)
    return Dense, config


@register_translator("MLP")
def _mlp(config: dict[str, Any], input_shape: Any):
    from ..mlp import MLP

    config["input_dim"] = _last_dim("from_monolith('MLP')", input_shape)
    return MLP, config


@register_translator("AGRUCell")
def _agru_cell(config: dict[str, Any], input_shape: Any):
    from ..agru import AGRUCell

    x_shape, _, _ = _shapes("from_monolith('AGRUCell')", input_shape, 3)
    config["input_dim"] = _last_dim("from_monolith('AGRUCell')", x_shape)
    return AGRUCell, config


@register_translator("DIN")
def _din(config: dict[str, Any], input_shape: Any):
    from ..feature_seq import DIN

    where = "from_monolith('DIN')"
    _, keys_shape = _shapes(where, input_shape, 2)
    config["embed_dim"] = _last_dim(where, keys_shape)
    # Monolith's DIN.get_config() forgets mode and decay; its from_config then
    # builds the defaults, which our signature defaults reproduce.
    return DIN, config


@register_translator("DIEN")
def _dien(config: dict[str, Any], input_shape: Any):
    from ..feature_seq import DIEN

    where = "from_monolith('DIEN')"
    _, keys_shape = _shapes(where, input_shape, 2)
    config["input_dim"] = _last_dim(where, keys_shape)
    att_type = config.get("att_type", "AGRU")
    if isinstance(att_type, str) and att_type.upper() != "AGRU":
        warnings.warn(
            f"{where}: the original DIEN ignores att_type={att_type!r} and always runs AGRU; "
            "building AGRU to reproduce it (construct DIEN directly for AUGRU)",
            stacklevel=3,
        )
    config["att_type"] = "AGRU"
    return DIEN, config


@register_translator("DMR_U2I")
def _dmr_u2i(config: dict[str, Any], input_shape: Any):
    from ..feature_seq import DMR_U2I

    where = "from_monolith('DMR_U2I')"
    items_shape, seq_shape = _shapes(where, input_shape, 2)
    if len(seq_shape) != 3 or seq_shape[1] is None:
        raise ValueError(
            f"{where}: user_seq shape must be (B, T, E) with T known, got {seq_shape!r}"
        )
    config["seq_len"] = int(seq_shape[1])
    config["user_dim"] = _last_dim(where, seq_shape)
    config["item_dim"] = _last_dim(where, items_shape)
    return DMR_U2I, config


@register_translator("AutoInt")
def _auto_int(config: dict[str, Any], input_shape: Any):
    from ..feature_trans import AutoInt

    return AutoInt, config


@register_translator("iRazor")
def _irazor(config: dict[str, Any], input_shape: Any):
    from ..feature_trans import iRazor

    where = "from_monolith('iRazor')"
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or input_shape[1] is None
    ):
        raise ValueError(
            f"{where}: input_shape must be (B, F, E) with F known, got {input_shape!r}"
        )
    config["num_feature"] = int(input_shape[1])
    return iRazor, config


@register_translator("SeNet")
def _senet(config: dict[str, Any], input_shape: Any):
    from ..feature_trans import SeNet

    return SeNet, config
