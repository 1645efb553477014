"""Realistic history lengths: ours (padding skipped) vs the peers as their users run them.

float32, fwd+bwd and forward-only medians, every candidate in one process.
Run: python benchmarks/bench_lengths.py [--rounds N] [--threads 2] [--cases augru dien din]

Lengths are log-normal with a median of about 20 % of the cap T (see
``lengths.py``), plus one case with the ML-100K training histories' lengths
when ``recbole`` is installed; B in {256, 1024}, T in {50, 200}, E = U = 32.
Each library gets the padding the way its users give it:

* AUGRU recurrence: ours with ``lengths``; ``torch.nn.GRU`` on a
  ``PackedSequence`` (packing included, as a user runs it); DeepCTR-Torch's
  ``DynamicGRU(AUGRU)`` on packed inputs and scores (as its DIEN does).
* DIEN (extractor GRU + attention + AUGRU): ours with ``lengths``;
  DeepCTR-Torch ``InterestExtractor`` + ``InterestEvolving(AUGRU)`` (both pack
  by length); torch-rechub's composition (packed ``nn.GRU`` extractor, then its
  ``AUGRU`` over all T steps with a masked softmax: padded steps get zero
  attention and keep the state, but are computed).
* DIN [80, 40, 1] relu: ours with ``lengths``; DeepCTR-Torch
  ``AttentionSequencePoolingLayer`` with ``keys_length``; FuxiCTR's
  ``DIN_Attention`` with its (B, T) mask (it zeroes padded weights after
  running the tower on every position); torch-rechub's
  ``ActivationUnit`` has no mask, so it pools padded positions too (a
  different function: padding embeddings take part).
"""

from __future__ import annotations

import torch
from harness import run_case, save, setup
from lengths import describe, lognormal, ml100k
from torch.nn.utils.rnn import pack_padded_sequence

from monolith_layers import DIEN, DIN, AGRUCell, dynamic_rnn_with_attention

U = 32


def augru_case(batch, steps, lengths, rounds, label, device="cpu", time_case=run_case):
    """``lengths`` stay on the CPU (``pack_padded_sequence`` wants them there);
    ``time_case(title, baseline, forwards, rounds)`` times the candidates."""
    x = torch.randn(batch, steps, U, requires_grad=True, device=device)
    att = torch.rand(batch, steps, device=device)
    cell = AGRUCell(U, att_type="AUGRU", input_dim=U, device=device)
    on_device = lengths.to(device)
    forwards = {
        "monolith_layers dynamic_rnn_with_attention(lengths=)": lambda: dynamic_rnn_with_attention(
            cell, x, att, lengths=on_device
        )[0]
    }
    gru = torch.nn.GRU(U, U, batch_first=True, device=device)

    def torch_gru():
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return gru(packed)[0].data

    forwards["torch.nn.GRU on a PackedSequence"] = torch_gru
    try:
        from deepctr_torch.layers.sequence import DynamicGRU

        dyn = DynamicGRU(U, U, gru_type="AUGRU").to(device)

        def deepctr():
            packed_x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            packed_a = pack_padded_sequence(
                att.unsqueeze(-1), lengths, batch_first=True, enforce_sorted=False
            )
            return dyn(packed_x, packed_a).data

        forwards["DeepCTR-Torch DynamicGRU(AUGRU), packed"] = deepctr
    except ImportError:
        pass
    title = f"AUGRU recurrence, ({batch}, {steps}, {U}), {label}"
    return time_case(title, "torch.nn.GRU on a PackedSequence", forwards, rounds)


def dien_case(batch, steps, lengths, rounds, label, device="cpu", time_case=run_case):
    q = torch.randn(batch, U, device=device)
    k = torch.randn(batch, steps, U, requires_grad=True, device=device)
    on_device = lengths.to(device)
    mask = torch.arange(steps, device=device) < on_device.unsqueeze(1)
    ours = DIEN(U, att_type="AUGRU", input_dim=U, device=device)
    forwards = {"monolith_layers DIEN (AUGRU), lengths=": lambda: ours(q, k, lengths=on_device)}
    try:
        from deepctr_torch.models.dien import InterestEvolving, InterestExtractor

        extractor = InterestExtractor(U).to(device)
        evolving = InterestEvolving(U, gru_type="AUGRU").to(device)

        def deepctr():
            interests, _ = extractor(k, lengths)
            return evolving(q, interests, lengths)

        forwards["DeepCTR-Torch InterestExtractor + InterestEvolving(AUGRU)"] = deepctr
    except ImportError:
        pass
    try:
        from torch.nn.utils.rnn import pad_packed_sequence
        from torch_rechub.models.ranking.dien import AUGRU

        gru = torch.nn.GRU(U, U, batch_first=True, device=device)
        augru = AUGRU(U).to(device)

        def rechub():
            packed = pack_padded_sequence(k, lengths, batch_first=True, enforce_sorted=False)
            interests = pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=steps)[0]
            return augru(interests, q, mask)[1]

        forwards["torch-rechub packed nn.GRU + AUGRU (all T steps)"] = rechub
    except ImportError:
        pass
    title = f"DIEN U {U}, keys ({batch}, {steps}, {U}), {label}"
    return time_case(title, "monolith_layers DIEN (AUGRU), lengths=", forwards, rounds)


def din_case(batch, steps, lengths, rounds, label, device="cpu", time_case=run_case):
    q = torch.randn(batch, U, device=device)
    k = torch.randn(batch, steps, U, requires_grad=True, device=device)
    on_device = lengths.to(device)
    ours = DIN([80, 40, 1], activation="relu", embed_dim=U, device=device)
    forwards = {"monolith_layers DIN, lengths=": lambda: ours(q, k, lengths=on_device)}
    try:
        from deepctr_torch.layers.sequence import AttentionSequencePoolingLayer

        layer = AttentionSequencePoolingLayer((80, 40), "relu", embedding_dim=U).to(device)
        keys_length = on_device.unsqueeze(1)
        forwards["DeepCTR-Torch AttentionSequencePoolingLayer"] = lambda: layer(
            q.unsqueeze(1), k, keys_length
        )
    except ImportError:
        pass
    try:
        from fuxictr.pytorch.layers.attentions.target_attention import DIN_Attention

        fuxi = DIN_Attention(U, [80, 40], "ReLU").to(device)
        fuxi_mask = torch.arange(steps, device=device) < on_device.unsqueeze(1)
        forwards["FuxiCTR DIN_Attention (mask)"] = lambda: fuxi(q, k, fuxi_mask)
    except ImportError:
        pass
    try:
        from torch_rechub.models.ranking.din import ActivationUnit

        unit = ActivationUnit(U, dims=[80, 40], activation="relu").to(device)
        forwards["torch-rechub ActivationUnit (no mask)"] = lambda: unit(k, q)
    except ImportError:
        pass
    title = f"DIN [80, 40, 1] relu, keys ({batch}, {steps}, {U}), {label}"
    return time_case(title, "monolith_layers DIN, lengths=", forwards, rounds)


CASES = {"augru": augru_case, "dien": dien_case, "din": din_case}


def _cases_argument(parser) -> None:
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=sorted(CASES),
        default=list(CASES),
        help="which layers to time",
    )


def main() -> None:
    args = setup(__doc__, _cases_argument)
    cases = [CASES[name] for name in args.cases]
    results = []
    for steps in (50, 200):
        for batch in (256, 1024):
            lengths = lognormal(batch, steps)
            label = f"log-normal lengths: {describe(lengths, steps)}"
            for case in cases:
                results.append(case(batch, steps, lengths, args.rounds, label))
                print(results[-1][0], flush=True)
    real = ml100k(1024, 50)
    if real is not None:
        label = f"ML-100K history lengths: {describe(real, 50)}"
        for case in cases:
            results.append(case(1024, 50, real, args.rounds, label))
            print(results[-1][0], flush=True)
    save("lengths", [md for md, _ in results], [data for _, data in results])


if __name__ == "__main__":
    main()
