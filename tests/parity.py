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
    def __init__(self, name: str) -> None:
        self.name = name
        self.data = dict(np.load(fixture_dir() / f"{name}.npz"))
        self.meta = json.loads(str(self.data["meta"]))

    def section(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in self.data.items() if k.startswith(prefix)}

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return {
            k: torch.tensor(v, requires_grad=k not in self.no_gradient)
            for k, v in self.section("input/").items()
        }

    @property
    def no_gradient(self) -> set[str]:
        return {n.split("/", 1)[1] for n in self.meta.get("no_gradient", [])}

    def build(self, class_name: str, config: dict, input_shape):
        layer = from_monolith(class_name, config, input_shape)
        load_monolith_weights(layer, self.section("weight/"))
        return layer

    def check(self, layer, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]):
        """Compare outputs, then input and weight gradients of the objective."""
        expected = self.section("output/")
        assert set(outputs) == set(expected), (sorted(outputs), sorted(expected))
        cotangents = self.section("cotangent/")
        objective = 0.0
        for key, value in outputs.items():
            np.testing.assert_allclose(
                value.detach().numpy(), expected[key], rtol=RTOL, atol=ATOL, err_msg=f"output {key}"
            )
            objective = objective + (value * torch.tensor(cotangents[key])).sum()
        variables = monolith_variables(layer) if layer is not None else {}
        params = [t for t in variables.values() if t.requires_grad]
        leaves = [t for t in inputs.values() if t.requires_grad] + params
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        by_tensor = {id(t): g for t, g in zip(leaves, grads, strict=True)}
        for key, want in self.section("grad/input/").items():
            got = by_tensor[id(inputs[key])]
            np.testing.assert_allclose(
                got.numpy(), want, rtol=RTOL, atol=ATOL, err_msg=f"grad input {key}"
            )
        weight_grads = self.section("grad/weight/")
        assert len(weight_grads) == len(params), (sorted(weight_grads), sorted(variables))
        matched, unexpected = _resolve_names(list(variables), list(weight_grads), None)
        assert not unexpected, unexpected
        for relative, full_name in matched.items():
            got = by_tensor[id(variables[relative])]
            np.testing.assert_allclose(
                got.numpy(),
                weight_grads[full_name],
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"grad weight {full_name}",
            )
