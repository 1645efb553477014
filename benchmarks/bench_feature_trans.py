"""AutoInt, SeNet and iRazor on (1024, 39, 16): ours vs the peers' nearest layers.

float32, fwd+bwd and forward-only medians, all candidates in one process.
Run: python benchmarks/bench_feature_trans.py [--rounds N] [--threads 2]

What is compared:
* AutoInt, layer_num 3. Monolith's AutoInt has no projections; the peers'
  InteractingLayer (DeepCTR-Torch, torch-rechub) is multi-head attention with
  Q/K/V/residual projections (2 heads, residual on), so it does more work per
  layer: the table says how fast each library's AutoInt block is, not that
  the two compute the same function. Three stacked peer layers are timed.
* SeNet, num_feature 39, cmp_dim 8 (weight-normalised tower, as Monolith):
  DeepCTR-Torch SENETLayer, torch-rechub SENETLayer and FuxiCTR
  SqueezeExcitation with reduction ratio 5 (bottleneck 39 // 5 = 7, the
  nearest to 8).
* iRazor: no peer ships it; the baseline is a literal transcription of the
  original (soft masks through a matmul with the rigid masks, then merge).
"""

from __future__ import annotations

import torch
from harness import run_case, save, setup

from monolith_layers import AutoInt, SeNet, iRazor, merge_tensor_list
from monolith_layers.feature_trans import rigid_masks

B, F, E = 1024, 39, 16


def autoint_case(rounds: int, x: torch.Tensor):
    ours = AutoInt(3)
    forwards = {"monolith_layers AutoInt(3)": lambda: ours(x)}
    try:
        from deepctr_torch.layers.interaction import InteractingLayer

        layers = torch.nn.Sequential(*[InteractingLayer(E, head_num=2) for _ in range(3)])
        forwards["DeepCTR-Torch 3 x InteractingLayer (projections)"] = lambda: layers(x).flatten(1)
    except ImportError:
        pass
    try:
        from torch_rechub.basic.layers import InteractingLayer

        layers2 = torch.nn.Sequential(*[InteractingLayer(E, num_heads=2) for _ in range(3)])
        forwards["torch-rechub 3 x InteractingLayer (projections)"] = lambda: layers2(x).flatten(1)
    except ImportError:
        pass
    return run_case(
        f"AutoInt layer_num 3, embeds ({B}, {F}, {E})",
        "monolith_layers AutoInt(3)",
        forwards,
        rounds,
    )


def senet_case(rounds: int, x: torch.Tensor):
    ours = SeNet(F, 8)
    forwards = {"monolith_layers SeNet(cmp_dim 8)": lambda: ours(x)}
    try:
        from deepctr_torch.layers.interaction import SENETLayer

        deepctr = SENETLayer(F, reduction_ratio=5)
        forwards["DeepCTR-Torch SENETLayer"] = lambda: deepctr(x)
    except ImportError:
        pass
    try:
        from torch_rechub.basic.layers import SENETLayer as RechubSENET

        rechub = RechubSENET(F, reduction_ratio=5)
        forwards["torch-rechub SENETLayer"] = lambda: rechub(x)
    except ImportError:
        pass
    try:
        from fuxictr.pytorch.layers.attentions.squeeze_excitation import SqueezeExcitation

        fuxi = SqueezeExcitation(F, reduction_ratio=5, excitation_activation="Sigmoid")
        forwards["FuxiCTR SqueezeExcitation"] = lambda: fuxi(x)
    except ImportError:
        pass
    return run_case(
        f"SeNet num_feature {F}, cmp_dim 8, embeds ({B}, {F}, {E})",
        "monolith_layers SeNet(cmp_dim 8)",
        forwards,
        rounds,
    )


def irazor_case(rounds: int, x: torch.Tensor):
    space = [0, 2, 4, 8, 16]
    ours = iRazor(space, feature_weight=[1.0] * F, num_feature=F)
    masks = rigid_masks(space)

    def literal():
        probs = torch.softmax(ours.nas_weight / ours.t, dim=1)
        soft = probs @ masks
        loss = (ours.feature_weight.reshape(1, -1) @ soft.sum(1, keepdim=True)).sum()
        return merge_tensor_list(x * soft, "concat"), loss

    forwards = {
        "monolith_layers iRazor": lambda: (ours(x), *ours.losses),
        "literal transcription": literal,
    }
    return run_case(
        f"iRazor nas_space {space}, embeds ({B}, {F}, {E})",
        "monolith_layers iRazor",
        forwards,
        rounds,
    )


def main() -> None:
    args = setup(__doc__)
    x = torch.randn(B, F, E, requires_grad=True)
    results = [
        autoint_case(args.rounds, x),
        senet_case(args.rounds, x),
        irazor_case(args.rounds, x),
    ]
    save("feature_trans", [md for md, _ in results], [data for _, data in results])


if __name__ == "__main__":
    main()
