"""AUGRU recurrence, fwd+bwd and forward: ours vs torch.nn.GRU and the peers.

Shape: inputs (256, 50, 32), units 32, AUGRU, float32, 2 threads.
Run: python benchmarks/bench_agru.py [--rounds N]
"""

from __future__ import annotations

import torch
from harness import run_case, save, setup

from monolith_layers import AGRUCell, dynamic_rnn_with_attention, static_rnn_with_attention

B, T, D, U = 256, 50, 32, 32


def peers(x: torch.Tensor, att: torch.Tensor) -> dict:
    found = {}
    try:
        from deepctr_torch.layers.sequence import DynamicGRU
        from torch.nn.utils.rnn import pack_padded_sequence

        gru = DynamicGRU(D, U, gru_type="AUGRU")
        for w in (gru.rnn.weight_ih, gru.rnn.weight_hh):
            torch.nn.init.xavier_uniform_(w)
        lengths = torch.full((B,), T)

        def deepctr():
            packed_x = pack_padded_sequence(x, lengths, batch_first=True)
            packed_a = pack_padded_sequence(att.unsqueeze(-1), lengths, batch_first=True)
            return gru(packed_x, packed_a).data

        found["DeepCTR-Torch DynamicGRU(AUGRU)"] = deepctr
    except ImportError:
        pass
    try:
        from torch_rechub.models.ranking.dien import AUGRU_Cell

        cell = AUGRU_Cell(D)

        def rechub():
            # torch-rechub's own AUGRU.forward loop, without its attention part.
            h = torch.zeros(B, U)
            outs = []
            for i in range(T):
                h = cell(x[:, i], h, att[:, i : i + 1])
                outs.append(h.unsqueeze(1))
            return torch.cat(outs, dim=1), h

        found["torch-rechub AUGRU_Cell loop"] = rechub
    except ImportError:
        pass
    return found


def hoisted_autograd(cell: AGRUCell, x: torch.Tensor, att: torch.Tensor):
    """The fast path's forward maths with autograd doing the backward: what the
    hand-written backward is measured against."""
    w_gx, w_gh, w_cx, w_ch = cell.split_kernels()
    xg, xc = x @ w_gx + cell.gates_bias, x @ w_cx + cell.candidate_bias
    h, outputs = x.new_zeros(x.shape[0], cell.units), []
    for t in range(x.shape[1]):
        r, u = torch.sigmoid(xg[:, t] + h @ w_gh).chunk(2, dim=1)
        c = torch.tanh(xc[:, t] + (r * h) @ w_ch)
        u = (1.0 - att[:, t : t + 1]) * u
        h = u * h + (1.0 - u) * c
        outputs.append(h)
    return torch.stack(outputs, dim=1), h


def main() -> None:
    args = setup(__doc__)
    x = torch.randn(B, T, D, requires_grad=True)
    att = torch.softmax(torch.randn(B, T), dim=1)
    cell = AGRUCell(U, att_type="AUGRU", input_dim=D)
    gru = torch.nn.GRU(D, U, batch_first=True)
    forwards = {
        "monolith_layers dynamic_rnn_with_attention (AUGRU)": lambda: dynamic_rnn_with_attention(
            cell, x, att
        ),
        "monolith_layers static_rnn_with_attention (reference loop)": lambda: (
            static_rnn_with_attention(cell, x, att)
        ),
        "hoisted projections + autograd backward": lambda: hoisted_autograd(cell, x, att),
        "torch.nn.GRU": lambda: gru(x),
        **peers(x, att),
    }
    markdown, data = run_case(
        f"AUGRU recurrence, inputs ({B}, {T}, {D}), units {U}, float32, {args.threads} threads",
        "torch.nn.GRU",
        forwards,
        rounds=args.rounds,
    )
    save("agru", [markdown], [data])


if __name__ == "__main__":
    main()
