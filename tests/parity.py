"""Shared harness for the parity tests against the original Monolith layers.

A fixture ``<case>.npz`` holds inputs, weights (by TF name), outputs,
cotangents and gradients of ``sum_k sum(output_k * cotangent_k)``. We build
our layer through the public interop API (``from_monolith`` +
``load_monolith_weights``), run the same call, and compare everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from monolith_layers import from_monolith, load_monolith_weights, monolith_variables
from monolith_layers.interop.monolith import _resolve_names

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "parity"
# DESIGN.md: two TF versions agree this closely on these fixtures.
RTOL, ATOL = 1e-5, 1e-6


def fixture_dir() -> Path:
    return SHARED if (SHARED / "MANIFEST.json").exists() else HERE / "fixtures"


class Case:
    """One fixture. ``dtype`` (float32, the fixtures' own, by default) is the
    precision the layer and its float inputs are run in; float64 separates the
    maths from float32 rounding."""

    def __init__(self, name: str, dtype: torch.dtype = torch.float32) -> None:
        self.name, self.dtype = name, dtype
        self.data = dict(np.load(fixture_dir() / f"{name}.npz"))
        self.meta = json.loads(str(self.data["meta"]))

    def section(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in self.data.items() if k.startswith(prefix)}

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return {
            k: torch.tensor(
                v,
                dtype=self.dtype if np.issubdtype(v.dtype, np.floating) else None,
                requires_grad=k not in self.no_gradient,
            )
            for k, v in self.section("input/").items()
        }

    @property
    def no_gradient(self) -> set[str]:
        return {n.split("/", 1)[1] for n in self.meta.get("no_gradient", [])}

    def build(self, class_name: str, config: dict, input_shape):
        layer = from_monolith(class_name, config, input_shape)
        load_monolith_weights(layer, self.section("weight/"))
        return layer.to(self.dtype)

    def check(self, layer, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]):
        """Compare outputs, then input and weight gradients of the objective."""
        results = self.results(layer, inputs, outputs)
        for key, (got, want) in results.items():
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=key)

    def results(
        self, layer, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"output x" / "grad input x" / "grad weight x": (ours, the fixture's)}``:
        the outputs, and the gradients of sum(output * cotangent) for the inputs
        and for the layer's variables matched to the fixture's names."""
        expected = self.section("output/")
        assert set(outputs) == set(expected), (sorted(outputs), sorted(expected))
        cotangents = self.section("cotangent/")
        pairs, objective = {}, 0.0
        for key, value in outputs.items():
            pairs[f"output {key}"] = value.detach().numpy(), expected[key]
            cotangent = torch.tensor(cotangents[key], dtype=value.dtype)
            objective = objective + (value * cotangent).sum()
        variables = monolith_variables(layer) if layer is not None else {}
        params = [t for t in variables.values() if t.requires_grad]
        leaves = [t for t in inputs.values() if t.requires_grad] + params
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        by_tensor = {id(t): g for t, g in zip(leaves, grads, strict=True)}
        for key, want in self.section("grad/input/").items():
            pairs[f"grad input {key}"] = by_tensor[id(inputs[key])].numpy(), want
        weight_grads = self.section("grad/weight/")
        assert len(weight_grads) == len(params), (sorted(weight_grads), sorted(variables))
        matched, unexpected = _resolve_names(list(variables), list(weight_grads), None)
        assert not unexpected, unexpected
        for relative, full_name in matched.items():
            got = by_tensor[id(variables[relative])]
            pairs[f"grad weight {full_name}"] = got.numpy(), weight_grads[full_name]
        return pairs
