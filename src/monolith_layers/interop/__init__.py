"""Interop with Monolith (TensorFlow): configs, variable names and weights."""

from .monolith import from_monolith, load_monolith_weights, monolith_variables

__all__ = ["from_monolith", "load_monolith_weights", "monolith_variables"]
