"""A two-minute tour: build an MLP the Monolith way, load Monolith weights, train a step."""

import json

import torch

from monolith_layers import (
    MLP,
    from_monolith,
    load_monolith_weights,
    monolith_variables,
    total_layer_loss,
)


def main() -> None:
    torch.manual_seed(0)
    # Monolith's params idiom.
    p = MLP.params()
    p.output_dims = [16, 8, 1]
    p.kernel_regularizer = "l2"
    p.input_dim = 10
    mlp = p.instantiate()
    print("config:", json.dumps(mlp.get_config()))

    # The same layer from a config the TF original wrote, with its weights.
    twin = from_monolith("MLP", mlp.get_config() | {"name": "mlp"}, (None, 10))
    tf_weights = {f"mlp/{k}:0": v.detach().numpy() for k, v in monolith_variables(mlp).items()}
    load_monolith_weights(twin, tf_weights)
    x = torch.randn(32, 10)
    print("twin agrees:", torch.allclose(mlp(x), twin(x)))

    # One training step: task loss plus the layer losses (the l2 penalty).
    optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    y = (x.sum(dim=1, keepdim=True) > 0).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(mlp(x), y) + total_layer_loss(mlp)
    loss.backward()
    optimizer.step()
    print(f"loss after one step: {loss.item():.4f}")


if __name__ == "__main__":
    main()
