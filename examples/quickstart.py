"""A short tour: train a tiny DIN + DIEN click model on synthetic behaviour
sequences, then move its layers through Monolith's config and weight formats.

Runs in a few seconds on a laptop CPU: ``python examples/quickstart.py``.
"""

from __future__ import annotations

import torch

from monolith_layers import (
    DIEN,
    DIN,
    MLP,
    from_monolith,
    iRazor,
    load_monolith_weights,
    monolith_variables,
    total_layer_loss,
)

ITEMS, E, T = 200, 8, 12


def make_batch(table: torch.Tensor, batch: int, generator: torch.Generator):
    """Users click a target when it resembles their recent (unpadded) history."""
    history = torch.randint(ITEMS, (batch, T), generator=generator)
    target = torch.randint(ITEMS, (batch,), generator=generator)
    lengths = torch.randint(2, T + 1, (batch, 1), generator=generator)
    mask = torch.arange(T) < lengths
    keys, query = table[history], table[target]
    affinity = ((keys * query[:, None]).sum(-1) * mask).sum(1) / lengths.squeeze(1)
    labels = (affinity > affinity.median()).float().unsqueeze(1)
    return query, keys, mask, labels


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Probability that a random positive outranks a random negative."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return (pos[:, None] > neg[None, :]).float().mean().item()


class ClickModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.razor = iRazor([0, 2, 4, 8], feature_weight=[1e-3], num_feature=1, out_type="stack")
        self.din = DIN([16, 8, 1], activation="relu", embed_dim=E)
        self.dien = DIEN(E, att_type="AUGRU", regularizer="l2", input_dim=E)
        self.head = MLP([32, 1], input_dim=3 * E)

    def forward(self, query, keys, mask):
        query = self.razor(query.unsqueeze(1)).squeeze(1)
        features = torch.cat([query, self.din(query, keys, mask), self.dien(query, keys, mask)], 1)
        return self.head(features)


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(ITEMS, E)
    model = ClickModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    test = make_batch(table, 2000, generator)

    with torch.no_grad():
        print(f"test AUC before training: {auc(model(*test[:3]), test[3]):.3f}")
    for _ in range(150):
        query, keys, mask, labels = make_batch(table, 256, generator)
        logits = model(query, keys, mask)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss = loss + total_layer_loss(model)  # DIEN's l2 penalties + iRazor's feature cost
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        print(f"test AUC after 150 steps:  {auc(model(*test[:3]), test[3]):.3f}")

    # Monolith round trip: config + TF-named weights rebuild an equal layer.
    tf_weights = {
        f"model/din/{k}:0": v.detach().numpy() for k, v in monolith_variables(model.din).items()
    }
    twin = from_monolith("DIN", model.din.get_config(), input_shape=[(None, E), (None, T, E)])
    load_monolith_weights(twin, tf_weights)
    query, keys, mask, _ = test
    print(
        "DIN rebuilt from its Monolith config and weights agrees:",
        torch.equal(twin(query, keys, mask), model.din(query, keys, mask)),
    )

    selection = model.razor.select_dims(threshold=0.9)
    print(f"iRazor keeps {selection.dims[0]} of {E} embedding dims for the target item")


if __name__ == "__main__":
    main()
