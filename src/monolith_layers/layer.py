"""The one base every layer stands on.

A :class:`Layer` is a plain ``torch.nn.Module`` that also gives

* ``get_config()`` / ``from_config()``: the constructor arguments as JSON-able
  values, captured when the layer is built, so a layer declares its arguments
  exactly once (its ``__init__`` signature);
* ``params()``: Monolith's editable params -> ``.instantiate()``;
* ``losses``: weight-regularisation penalties plus auxiliary losses of the
  latest forward, through every sub-layer;
* Monolith variable names: each weight is registered under its TF name
  (``'gates/kernel'``) so :mod:`monolith_layers.interop` can map checkpoints;
* optional summaries (histograms), off and free unless switched on with
  :func:`monolith_layers.summaries.enable_summaries`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import activations as _activations
from . import initializers as _initializers
from . import regularizers as _regularizers
from ._checks import check_float, resolve
from .params import Params


def keras_default_name(class_name: str) -> str:
    """Keras's snake_case layer name: ``'DMR_U2I' -> 'dmr__u2i'``, ``'iRazor' -> 'i_razor'``."""
    words = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", words).lower()


def _to_config_value(value: Any, where: str) -> Any:
    """One constructor argument as plain JSON: names and dicts stay, objects serialise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_to_config_value(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_config_value(v, where) for k, v in value.items()}
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return np.asarray(
            value.detach().cpu() if isinstance(value, torch.Tensor) else value
        ).tolist()
    if isinstance(value, _initializers.Initializer):
        return _initializers.serialize(value)
    if isinstance(value, _regularizers.Regularizer):
        return _regularizers.serialize(value)
    if isinstance(value, type) and issubclass(value, _initializers.Initializer):
        return value.__name__
    if isinstance(value, _activations.Activation) and not isinstance(value, _activations.Lambda):
        return _activations.serialize(value)
    name = _activations.name_of(_activations.get(value)) if callable(value) else None
    if name is not None:
        return name
    raise TypeError(f"{where}: cannot serialise {value!r} into a JSON config; pass it by name")


# Arguments every layer takes for torch's factory conventions; they place the
# weights and are not part of a layer's config.
FACTORY_ARGS = ("device", "dtype")

# How deep we are inside layer constructors: a layer built inside another
# layer's __init__ leaves its initialisation to the outermost one, so every
# weight is drawn once.
_construction = threading.local()


def _depth() -> int:
    return getattr(_construction, "depth", 0)


def _record_arguments(cls: type, signature: inspect.Signature, layer, args, kwargs) -> None:
    try:
        bound = signature.bind(layer, *args, **kwargs)
    except TypeError as err:
        raise TypeError(f"{cls.__name__}(): {err}") from None
    bound.apply_defaults()
    # Lists and dicts are copied: a caller editing theirs later must not
    # change this layer's config.
    arguments = {
        k: copy.deepcopy(v) if isinstance(v, (list, dict)) else v
        for k, v in bound.arguments.items()
        if k != "self" and k not in FACTORY_ARGS
    }
    object.__setattr__(layer, "_init_args", arguments)


def _wrap_init(cls: type, init):
    """``cls.__init__`` that records the constructor arguments of the class
    being built (for ``get_config``) and initialises the weights once the
    outermost layer is complete (``reset_parameters``)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        building_this_class = type(self).__init__ is __init__
        if building_this_class:
            _record_arguments(cls, signature, self, args, kwargs)
        _construction.depth = _depth() + 1
        try:
            init(self, *args, **kwargs)
        finally:
            _construction.depth = _depth() - 1
        if building_this_class and _depth() == 0:
            self.reset_parameters()

    return __init__


class Layer(nn.Module):
    """Base of every monolith_layers layer (see the module docstring).

    A subclass names every constructor argument (no ``*args`` /
    ``**kwargs``, unless it overrides ``get_config``), creates its weights
    with :meth:`add_weight` (uninitialised, on ``device`` / ``dtype``) and
    builds its sub-layers in ``__init__``; the weights are drawn by
    :meth:`reset_parameters` once the outermost layer is built.
    """

    _summaries_on = False  # set by enable_summaries; the recorder lives in summaries.py

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        variadic = [
            p.name
            for p in inspect.signature(init).parameters.values()
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        if variadic and "get_config" not in cls.__dict__:
            raise TypeError(
                f"{cls.__name__}: Layer subclasses record their constructor arguments for "
                f"get_config(), and __init__ takes *{'/**'.join(variadic)}, which cannot be "
                "recorded; name every argument, or override get_config() (and from_config())"
            )
        cls.__init__ = _wrap_init(cls, init)

    def __init__(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty str, got {name!r}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(
                f"{type(self).__name__}: dtype must be a floating-point torch.dtype, got {dtype!r}"
            )
        self.name = name or keras_default_name(type(self).__name__)
        self._factory = {"device": device, "dtype": dtype}
        self._tf_weights: dict[str, str] = {}
        self._tf_sublayers: dict[str, str] = {}
        self._regularizers: dict[str, Any] = {}
        self._initializers: dict[str, Any] = {}
        self._forward_losses: list[torch.Tensor] = []

    @property
    def where(self) -> str:
        """How errors name this layer: ``'DIN(din)'``."""
        return f"{type(self).__name__}({self.name})"

    @property
    def factory_kwargs(self) -> dict[str, Any]:
        """``device`` / ``dtype`` this layer was built with, for its sub-layers."""
        return dict(self._factory)

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict[str, Any]:
        """Every constructor argument as JSON-serialisable values."""
        where = f"{type(self).__name__}.get_config"
        config = {k: _to_config_value(v, where) for k, v in self._init_args.items()}
        if "name" in config:
            config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        """Rebuild a layer from :meth:`get_config` output."""
        return cls(**config)

    @classmethod
    def params(cls) -> Params:
        """Editable constructor parameters; ``.instantiate()`` builds the layer."""
        return Params.of(cls)

    # --------------------------------------------------------------- weights
    def add_weight(
        self,
        tf_name: str,
        shape: Sequence[int],
        initializer: Any,
        regularizer: Any = None,
        trainable: bool = True,
        *,
        init_arg: str = "initializer",
        reg_arg: str = "regularizer",
    ) -> torch.Tensor:
        """Create a weight under its TF variable name (``'gates/kernel'``).

        The attribute is the TF name with ``/`` replaced by ``_``. A trainable
        weight is an ``nn.Parameter``, a non-trainable one a buffer; either way
        it has exactly the TF variable's shape and layout. The values are
        drawn from ``initializer`` by :meth:`reset_parameters`. ``init_arg`` /
        ``reg_arg`` name the constructor arguments in errors.
        """
        attr = tf_name.replace("/", "_")
        initializer = resolve(self.where, init_arg, _initializers.get, initializer)
        regularizer = resolve(self.where, reg_arg, _regularizers.get, regularizer)
        values = torch.empty(tuple(shape), **self._factory)
        if trainable:
            self.register_parameter(attr, nn.Parameter(values))
        else:
            self.register_buffer(attr, values)
        self._tf_weights[tf_name] = attr
        self._initializers[attr] = initializer
        if regularizer is not None:
            self._regularizers[attr] = regularizer
        return getattr(self, attr)

    def reset_parameters(self) -> None:
        """Draw every weight of this layer and of its sub-layers afresh."""
        for attr, initializer in self._initializers.items():
            tensor = getattr(self, attr)
            if tensor is not None:
                initializer.fill_(tensor)
        for child in self.children():
            reset = getattr(child, "reset_parameters", None)
            if callable(reset):
                reset()

    def add_sublayer(self, tf_scope: str, module: nn.Module, attr: str | None = None) -> nn.Module:
        """Attach a child module whose Monolith variables live under ``tf_scope``."""
        attr = attr or tf_scope.replace("/", "_")
        self.add_module(attr, module)
        self._tf_sublayers[tf_scope] = attr
        return module

    def monolith_variables(self) -> dict[str, torch.Tensor]:
        """Monolith variable path (relative to this layer) -> live parameter or buffer."""
        found = {tf_name: getattr(self, attr) for tf_name, attr in self._tf_weights.items()}
        for scope, attr in self._tf_sublayers.items():
            child = getattr(self, attr)
            if isinstance(child, Layer):
                child_vars = child.monolith_variables()
            elif hasattr(child, "alpha"):  # a PReLU activation: Keras names its slope alpha
                child_vars = {"alpha": child.alpha}
            else:
                child_vars = {}
            for name, tensor in child_vars.items():
                found[f"{scope}/{name}"] = tensor
        return found

    def check_input_dtype(self, arg: str, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` must be floating point and, when the layer has weights, of their dtype."""
        weight = next(iter(self.parameters()), None)
        return check_float(self.where, arg, tensor, None if weight is None else weight.dtype)

    # ---------------------------------------------------------------- losses
    def _own_losses(self) -> list[torch.Tensor]:
        penalties = [reg(getattr(self, attr)) for attr, reg in self._regularizers.items()]
        return penalties + list(self._forward_losses)

    @property
    def losses(self) -> list[torch.Tensor]:
        """Scalar losses of this layer and every sub-layer: weight penalties
        (recomputed from the current weights) and auxiliary losses added by the
        latest forward."""
        return layer_losses(self)

    # ------------------------------------------------------------- summaries
    @property
    def _summary(self):
        if not self._summaries_on:
            return None
        from .summaries import recorder_of

        return recorder_of(self)

    def _summarize_histogram(self, tag: str, values: torch.Tensor) -> None:
        recorder = self._summary
        if recorder is not None:
            recorder.histogram(f"{self.name}/{tag}", values)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def attach_activation(
    layer: Layer,
    activation: Any,
    units: int,
    attr: str = "activation",
    arg: str = "activation",
) -> nn.Module | None:
    """Resolve ``activation`` and attach it to ``layer`` under ``attr``.

    An activation with weights (PReLU) becomes a sub-layer whose variables
    Monolith names after the Keras layer, e.g. ``p_re_lu/alpha``. An unknown
    name raises an error naming the layer and ``arg``.
    """
    module = resolve(layer.where, arg, _activations.get, activation, units=units, **layer._factory)
    if module is not None and any(True for _ in module.parameters()):
        scope = keras_default_name(type(module).__name__)
        existing = sum(1 for s in layer._tf_sublayers if s.split("/")[-1].startswith(scope))
        layer.add_sublayer(scope if existing == 0 else f"{scope}_{existing}", module, attr=attr)
    else:
        setattr(layer, attr, module)
    return module


def _regularized_activation_losses(module: nn.Module) -> list[torch.Tensor]:
    reg = getattr(module, "alpha_regularizer", None)
    return [reg(module.alpha)] if reg is not None else []


def layer_losses(model: nn.Module) -> list[torch.Tensor]:
    """Every layer loss in ``model`` (any ``nn.Module`` holding our layers)."""
    found: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, Layer):
            found.extend(module._own_losses())
        elif isinstance(module, _activations.PReLU):
            found.extend(_regularized_activation_losses(module))
    return found


def total_layer_loss(model: nn.Module) -> torch.Tensor:
    """Sum of :func:`layer_losses`; a zero scalar when there are none."""
    losses = layer_losses(model)
    if not losses:
        param = next(iter(model.parameters()), None)
        return torch.zeros((), dtype=param.dtype if param is not None else None)
    return torch.stack([loss.reshape(()) for loss in losses]).sum()


def iter_layers(model: nn.Module) -> Iterable[Layer]:
    return (m for m in model.modules() if isinstance(m, Layer))
