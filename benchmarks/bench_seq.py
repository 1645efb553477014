"""DIN, DIEN and DMR_U2I: ours vs DeepCTR-Torch, FuxiCTR and torch-rechub.

float32, fwd+bwd and forward-only medians, all candidates in one process.
Run: python benchmarks/bench_seq.py [--rounds N] [--threads 2]

What is compared (full-length sequences, so no peer pays for padding):
* DIN, hidden [80, 40, 1] relu, B 1024, T 50, H 32: the attention pooling
  layer of each library (DeepCTR AttentionSequencePoolingLayer, FuxiCTR
  DIN_Attention, torch-rechub ActivationUnit).
* DIEN, U 32, B 256, T 50, keys 32: interest extractor GRU + AUGRU
  evolution (DeepCTR InterestExtractor + InterestEvolving(AUGRU); torch-rechub
  nn.GRU + AUGRU, as its DIEN model composes them).
* DMR_U2I, cmp_dim 32, items (1024, 32), user_seq (1024, 50, 32): no peer
  ships it; the baseline is a literal transcription of the original's maths.
"""

from __future__ import annotations

import torch
from harness import run_case, save, setup

from monolith_layers import DIEN, DIN, DMR_U2I


def din_case(rounds: int):
    B, T, H = 1024, 50, 32
    q, k = torch.randn(B, H), torch.randn(B, T, H, requires_grad=True)
    ours = DIN([80, 40, 1], activation="relu", embed_dim=H)
    forwards = {
        "monolith_layers DIN": lambda: ours(q, k),
        "monolith_layers DIN, concat reference": lambda: torch.bmm(
            ours.attention_logits_reference(q, k).transpose(1, 2), k
        ),
    }
    try:
        from deepctr_torch.layers.sequence import AttentionSequencePoolingLayer

        layer = AttentionSequencePoolingLayer((80, 40), "relu", embedding_dim=H)
        lengths = torch.full((B, 1), T)
        forwards["DeepCTR-Torch AttentionSequencePoolingLayer"] = lambda: layer(
            q.unsqueeze(1), k, lengths
        )
    except ImportError:
        pass
    try:
        from fuxictr.pytorch.layers.attentions.target_attention import DIN_Attention

        fuxi = DIN_Attention(H, [80, 40], "ReLU")
        forwards["FuxiCTR DIN_Attention"] = lambda: fuxi(q, k)
    except ImportError:
        pass
    try:
        from torch_rechub.models.ranking.din import ActivationUnit

        unit = ActivationUnit(H, dims=[80, 40], activation="relu")
        forwards["torch-rechub ActivationUnit"] = lambda: unit(k, q)
    except ImportError:
        pass
    title = f"DIN [80, 40, 1] relu, queries ({B}, {H}), keys ({B}, {T}, {H})"
    return run_case(title, "monolith_layers DIN", forwards, rounds)


def dien_case(rounds: int):
    B, T, D, U = 256, 50, 32, 32
    q, k = torch.randn(B, U), torch.randn(B, T, D, requires_grad=True)
    ours = DIEN(U, att_type="AUGRU", input_dim=D)
    forwards = {"monolith_layers DIEN (AUGRU)": lambda: ours(q, k)}
    try:
        from deepctr_torch.models.dien import InterestEvolving, InterestExtractor

        extractor = InterestExtractor(D)
        evolving = InterestEvolving(D, gru_type="AUGRU")
        lengths = torch.full((B,), T)

        def deepctr():
            interests, _ = extractor(k, lengths)
            return evolving(q, interests, lengths)

        forwards["DeepCTR-Torch InterestExtractor + InterestEvolving(AUGRU)"] = deepctr
    except ImportError:
        pass
    try:
        from torch_rechub.models.ranking.dien import AUGRU

        gru = torch.nn.GRU(D, D, batch_first=True)
        augru = AUGRU(D)
        mask = torch.ones(B, T, dtype=torch.bool)

        def rechub():
            interests, _ = gru(k)
            return augru(interests, q, mask)[1]

        forwards["torch-rechub nn.GRU + AUGRU"] = rechub
    except ImportError:
        pass
    title = f"DIEN U {U}, queries ({B}, {U}), keys ({B}, {T}, {D})"
    return run_case(title, "monolith_layers DIEN (AUGRU)", forwards, rounds)


def dmr_case(rounds: int):
    B, T, E, C = 1024, 50, 32, 32
    items, seq = torch.randn(B, E), torch.randn(B, T, E, requires_grad=True)
    ours = DMR_U2I(C, seq_len=T, user_dim=E, item_dim=E)

    def literal():
        # The original's order of operations, step by step.
        comped = ours.pos_emb + seq @ ours.emb_weight + ours.bias
        alpha = torch.softmax(comped @ ours.z_weight, dim=1)
        merged = (seq.transpose(1, 2) @ alpha).squeeze(-1)
        return ours.dense(merged) * items

    forwards = {
        "monolith_layers DMR_U2I": lambda: ours(items, seq),
        "literal transcription": literal,
    }
    title = f"DMR_U2I cmp_dim {C}, items ({B}, {E}), user_seq ({B}, {T}, {E})"
    return run_case(title, "monolith_layers DMR_U2I", forwards, rounds)


def main() -> None:
    args = setup(__doc__)
    results = [din_case(args.rounds), dien_case(args.rounds), dmr_case(args.rounds)]
    save("seq", [md for md, _ in results], [data for _, data in results])


if __name__ == "__main__":
    main()
