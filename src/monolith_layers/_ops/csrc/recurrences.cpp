// The recurrences (see _ops/recurrences.py for the maths), forward and
// backward, over one layout, the packed one (real steps only; a batch without
// padding is packing with every row alive). Each step costs its matmuls and
// one pass over its elementwise work instead of a dozen dispatched tensor ops;
// the drivers at the end run the steps in chunks, with each chunk's bulk work
// (projections, gate recomputation, weight gradients) as ATen ops.
//
// Shared helpers (bounded exp / tanh, row accessors, the small matmul) are
// in common.h.

#include "common.h"
#include "kernels.h"

#include <array>
#include <numeric>

namespace {

using namespace monolith_native;

enum Mode : int64_t { kNone = 0, kAGRU = 1, kAUGRU = 2 };

// ------------------------------------------------------ packed (real steps only)
//
// The layout of _ops/packing.py: rows sorted by length, step t updates the first
// n_t rows. A chunk's inputs are rows of a (R, width) buffer; each step is
// described by a row of `steps`: forward (n, prev_row, out_row, in_row) with
// prev_row / out_row rows of the (B + N, U) states buffer and in_row a row of
// the chunk's buffers; backward (n, in_row), with dL/dh of the sorted rows in
// dh (B, U), updated in place.

template <typename T>
void gru_packed_forward_impl(const at::Tensor& gi, const at::Tensor& w_r_in, const at::Tensor& b_r_in,
                             const at::Tensor& states, const at::Tensor& steps, int64_t act) {
  const int64_t units = states.size(1);
  const at::Tensor w_r = w_r_in.contiguous(), b_r = b_r_in.contiguous(), plan = steps.contiguous();
  const T* w = w_r.data_ptr<T>();
  const T* bias = b_r.data_ptr<T>();
  const int64_t* step = plan.data_ptr<int64_t>();
  const Rows<T> gi_m(gi), state_m(states);
  const int64_t widest = plan.size(0) ? step[0] : 0;
  at::Tensor gh = at::empty({std::max<int64_t>(widest, 1), 3 * units}, states.options());
  T* gh_p = gh.data_ptr<T>();
  for (int64_t s = 0; s < plan.size(0); ++s) {
    const int64_t n = step[4 * s], prev = step[4 * s + 1], out = step[4 * s + 2], in = step[4 * s + 3];
    TORCH_CHECK(n <= widest, "packed steps must not widen");
    row_chunks(n, 3 * units * units, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) std::copy(bias, bias + 3 * units, gh_p + b * 3 * units);
      gemm_rows(state_m.at(prev + begin), state_m.row, w, units, 3 * units, gh_p + begin * 3 * units,
                3 * units, end - begin);
      for (int64_t b = begin; b < end; ++b) {
        T* __restrict g = gh_p + b * 3 * units;
        const T* __restrict x = gi_m.at(in + b);
        const T* __restrict h = state_m.at(prev + b);
        T* __restrict next = state_m.at(out + b);
        for (int64_t j = 0; j < 2 * units; ++j) g[j] = sigmoid(x[j] + g[j]);  // [z | r]
        T* __restrict cand = g + 2 * units;
        for (int64_t j = 0; j < units; ++j) cand[j] = x[2 * units + j] + g[units + j] * cand[j];
        activate(cand, units, act);
        // h = hh + z (h_prev - hh), the Python packed loop's lerp
        for (int64_t j = 0; j < units; ++j) next[j] = cand[j] + g[j] * (h[j] - cand[j]);
      }
    });
  }
}

template <typename T>
void gru_packed_backward_impl(const at::Tensor& d_out, const at::Tensor& z, const at::Tensor& c1,
                              const at::Tensor& c2, const at::Tensor& grads, const at::Tensor& dh,
                              const at::Tensor& w_r, const at::Tensor& steps) {
  const int64_t units = dh.size(1);
  const at::Tensor w_r_t = w_r.t().contiguous(), plan = steps.contiguous();  // (3U, U)
  const T* wt = w_r_t.data_ptr<T>();
  const int64_t* step = plan.data_ptr<int64_t>();
  const Rows<T> dout_m(d_out), z_m(z), c1_m(c1), c2_m(c2), grads_m(grads), dh_m(dh);
  for (int64_t s = plan.size(0) - 1; s >= 0; --s) {
    const int64_t n = step[2 * s], in = step[2 * s + 1];
    row_chunks(n, 3 * units * units, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        T* __restrict g = dh_m.at(b);
        const T* __restrict d = dout_m.at(in + b);
        const T* __restrict k1 = c1_m.at(in + b);
        const T* __restrict k2 = c2_m.at(in + b);
        const T* __restrict zb = z_m.at(in + b);
        T* __restrict out = grads_m.at(in + b);  // [dhpre | dz | dr | dgh_h]
        for (int64_t j = 0; j < units; ++j) {
          const T gj = g[j] + d[j];
          const T dp = gj * k1[j];
          out[j] = dp;
          out[units + j] = gj * k1[units + j];
          out[2 * units + j] = dp * k2[j];
          out[3 * units + j] = dp * k2[units + j];
          g[j] = gj * zb[j];
        }
      }
      // dh_{t-1} = dh_t z_t + [dz | dr | dgh_h] @ W_r^T
      gemm_rows(grads_m.at(in + begin) + units, grads_m.row, wt, 3 * units, units, dh_m.at(begin),
                dh_m.row, end - begin);
    });
  }
}

template <typename T>
void agru_packed_forward_impl(const at::Tensor& xp, const c10::optional<at::Tensor>& a,
                              const at::Tensor& w_gh_in, const at::Tensor& w_ch_in,
                              const at::Tensor& states, const at::Tensor& steps, int64_t mode,
                              int64_t act) {
  const int64_t units = states.size(1);
  const at::Tensor w_gh = w_gh_in.contiguous(), w_ch = w_ch_in.contiguous(), plan = steps.contiguous();
  const T* wg = w_gh.data_ptr<T>();
  const T* wc = w_ch.data_ptr<T>();
  const int64_t* step = plan.data_ptr<int64_t>();
  const Rows<T> x_m(xp), state_m(states), a_m = optional_rows<T>(a);
  const int64_t widest = std::max<int64_t>(plan.size(0) ? step[0] : 0, 1);
  at::Tensor scratch = at::empty({widest, 4 * units}, states.options());  // [gates | q | c]
  T* sc = scratch.data_ptr<T>();
  const int64_t ld = 4 * units;
  for (int64_t s = 0; s < plan.size(0); ++s) {
    const int64_t n = step[4 * s], prev = step[4 * s + 1], out = step[4 * s + 2], in = step[4 * s + 3];
    TORCH_CHECK(n <= widest, "packed steps must not widen");
    row_chunks(n, 3 * units * units, [&](int64_t begin, int64_t end) {
      const int64_t rows = end - begin;
      for (int64_t b = begin; b < end; ++b) std::copy(x_m.at(in + b), x_m.at(in + b) + 2 * units, sc + b * ld);
      gemm_rows(state_m.at(prev + begin), state_m.row, wg, units, 2 * units, sc + begin * ld, ld, rows);
      for (int64_t b = begin; b < end; ++b) {
        T* __restrict g = sc + b * ld;
        const T* __restrict h = state_m.at(prev + b);
        for (int64_t j = 0; j < 2 * units; ++j) g[j] = sigmoid(g[j]);
        for (int64_t j = 0; j < units; ++j) g[2 * units + j] = g[j] * h[j];  // q = r h
        std::copy(x_m.at(in + b) + 2 * units, x_m.at(in + b) + 3 * units, g + 3 * units);
      }
      gemm_rows(sc + begin * ld + 2 * units, ld, wc, units, units, sc + begin * ld + 3 * units, ld, rows);
      for (int64_t b = begin; b < end; ++b) {
        const T* __restrict u = sc + b * ld + units;
        T* __restrict c = sc + b * ld + 3 * units;
        const T* __restrict h = state_m.at(prev + b);
        T* __restrict next = state_m.at(out + b);
        activate(c, units, act);
        if (mode == kAGRU) {
          const T z = *a_m.at(in + b);
          for (int64_t j = 0; j < units; ++j) next[j] = h[j] + z * (c[j] - h[j]);
        } else if (mode == kAUGRU) {
          const T damp = T(1) - *a_m.at(in + b);
          for (int64_t j = 0; j < units; ++j) {
            const T z = T(1) - damp * u[j];
            next[j] = h[j] + z * (c[j] - h[j]);
          }
        } else {
          for (int64_t j = 0; j < units; ++j) next[j] = h[j] + u[j] * (c[j] - h[j]);
        }
      }
    });
  }
}

template <typename T>
void agru_packed_backward_impl(const at::Tensor& d_out, const at::Tensor& z_act,
                               const at::Tensor& coefs, const at::Tensor& keep, const at::Tensor& r,
                               const at::Tensor& pairs, const at::Tensor& d_xp, const at::Tensor& dh,
                               const at::Tensor& w_gh, const at::Tensor& w_ch, const at::Tensor& steps) {
  const int64_t units = dh.size(1);
  const at::Tensor w_ch_t = w_ch.t().contiguous(), w_gh_t = w_gh.t().contiguous(), plan = steps.contiguous();
  const T* wct = w_ch_t.data_ptr<T>();  // (U, U)
  const T* wgt = w_gh_t.data_ptr<T>();  // (2U, U)
  const int64_t* step = plan.data_ptr<int64_t>();
  const Rows<T> dout_m(d_out), za_m(z_act), coef_m(coefs), keep_m(keep), r_m(r), pair_m(pairs);
  const Rows<T> dxp_m(d_xp), dh_m(dh);
  for (int64_t s = plan.size(0) - 1; s >= 0; --s) {
    const int64_t n = step[2 * s], in = step[2 * s + 1];
    row_chunks(n, 3 * units * units, [&](int64_t begin, int64_t end) {
      const int64_t rows = end - begin;
      for (int64_t b = begin; b < end; ++b) {
        const T* __restrict g = dh_m.at(b);
        const T* __restrict d = dout_m.at(in + b);
        const T* __restrict za = za_m.at(in + b);
        T* __restrict pair = pair_m.at(in + b);
        T* __restrict dxp = dxp_m.at(in + b);
        for (int64_t j = 0; j < units; ++j) {
          pair[units + j] = g[j] + d[j];
          dxp[2 * units + j] = pair[units + j] * za[j * za_m.col];
        }
        std::fill(pair, pair + units, T(0));
      }
      // dq = dc @ W_ch^T, into pairs' first half
      gemm_rows(dxp_m.at(in + begin) + 2 * units, dxp_m.row, wct, units, units, pair_m.at(in + begin),
                pair_m.row, rows);
      for (int64_t b = begin; b < end; ++b) {
        T* __restrict g = dh_m.at(b);
        const T* __restrict pair = pair_m.at(in + b);
        const T* __restrict coef = coef_m.at(in + b);
        const T* __restrict kp = keep_m.at(in + b);
        const T* __restrict rb = r_m.at(in + b);
        T* __restrict dxp = dxp_m.at(in + b);
        for (int64_t j = 0; j < 2 * units; ++j) dxp[j] = pair[j] * coef[j];
        // dh_{t-1} = dh_t (1 - z_t) + dq_t r_t (+ d_gates_t @ W_gh^T below)
        for (int64_t j = 0; j < units; ++j) g[j] = pair[units + j] * kp[j * keep_m.col] + pair[j] * rb[j];
      }
      gemm_rows(dxp_m.at(in + begin), dxp_m.row, wgt, 2 * units, units, dh_m.at(begin), dh_m.row, rows);
    });
  }
}

// ------------------------------------------------------ the chunked drivers
//
// The plan of a packed batch: B sorted rows, sizes[t] rows alive at step t
// (non-increasing), step t's rows at packed rows offsets[t] .. offsets[t + 1]
// and at rows B + offsets[t] .. of the (B + N, U) states buffer, whose first
// B rows are the initial states. Steps run in chunks of about kChunkElements
// / width packed rows: each chunk's input projections (forward) and gate
// recomputation and weight gradients (backward) are a few large ATen ops,
// and its time loop the kernels above. 1 << 18 ran DIEN fwd+bwd (U 32, T 50,
// 30 % real) 1.25-1.35x faster than 1 << 16 at B = 256 and 1024; 1 << 20 was
// no better.
constexpr int64_t kChunkElements = int64_t(1) << 18;

struct Plan {
  int64_t batch = 0, steps = 0;
  std::vector<int64_t> sizes, offsets;
  at::Tensor perm;         // sorted row i -> original row (undefined: identity)
  at::Tensor src_index;    // packed row -> b * T + t of the padded batch (undefined: dense)
  at::Tensor final_index;  // original row b -> its final state's row of the states buffer

  // The plan of a (B, T) batch whose real steps are mask's true slots, in
  // order (holes allowed); an undefined mask: every step real. One pass over
  // the mask on the host, no device round trip.
  Plan(const at::Tensor& mask_in, int64_t batch_, int64_t steps_) : batch(batch_), steps(steps_) {
    std::vector<int64_t> lengths(batch, steps);
    at::Tensor mask;
    if (mask_in.defined()) {
      mask = mask_in.to(at::kBool).contiguous();
      const bool* m = mask.data_ptr<bool>();
      for (int64_t b = 0; b < batch; ++b) lengths[b] = std::count(m + b * steps, m + (b + 1) * steps, true);
    }
    std::vector<int64_t> order(batch);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t i, int64_t j) { return lengths[i] > lengths[j]; });
    const int64_t longest = batch ? lengths[order[0]] : 0;
    offsets.assign(1, 0);
    for (int64_t t = 0, alive = batch; t < longest; ++t) {
      while (alive && lengths[order[alive - 1]] <= t) --alive;
      sizes.push_back(alive);
      offsets.push_back(offsets.back() + alive);
    }
    const bool dense = longest == steps && (sizes.empty() || sizes.back() == batch);
    const auto longs = at::TensorOptions().dtype(at::kLong);
    std::vector<int64_t> final_rows(batch);
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t len = lengths[order[i]];
      final_rows[order[i]] = len ? batch + offsets[len - 1] + i : i;
    }
    final_index = at::tensor(final_rows, longs);
    if (dense) return;  // every row full: packing is a transpose
    perm = at::tensor(order, longs);
    std::vector<int64_t> src(offsets.back());
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t b = order[i];
      const bool* m = mask.defined() ? mask.data_ptr<bool>() + b * steps : nullptr;
      for (int64_t t = 0, k = 0; t < steps && k < lengths[b]; ++t)
        if (!m || m[t]) src[offsets[k++] + i] = b * steps + t;
    }
    src_index = at::tensor(src, longs);
  }

  // (B, T, F) -> (N, F), real steps only.
  at::Tensor pack(const at::Tensor& values) const {
    const int64_t width = values.size(-1);
    if (!src_index.defined()) return values.transpose(0, 1).reshape({total(), width});
    return values.reshape({batch * steps, width}).index_select(0, src_index);
  }

  // (N, F) -> (B, T, F), zeros at padded steps.
  at::Tensor unpack(const at::Tensor& packed) const {
    const int64_t width = packed.size(-1);
    if (!src_index.defined())
      return packed.view({steps, batch, width}).transpose(0, 1).contiguous();
    return at::zeros({batch * steps, width}, packed.options())
        .index_copy_(0, src_index, packed)
        .view({batch, steps, width});
  }

  at::Tensor sort_rows(const at::Tensor& rows) const {
    return perm.defined() ? rows.index_select(0, perm) : rows;
  }

  at::Tensor unsort_rows(const at::Tensor& rows) const {
    return perm.defined() ? at::empty_like(rows).index_copy_(0, perm, rows) : rows;
  }

  // The (B + N, U) states buffer's outputs: (B, T, U) and each row's final state.
  std::vector<at::Tensor> results(const at::Tensor& states) const {
    return {unpack(states.narrow(0, batch, total())), states.index_select(0, final_index)};
  }

  // The states buffer rebuilt from the initial states and the outputs.
  at::Tensor states(const at::Tensor& h0, const at::Tensor& outputs) const {
    return at::cat({sort_rows(h0), pack(outputs)});
  }

  // dL/d(states buffer) from the gradients of the outputs and of the final states.
  at::Tensor d_states(const c10::optional<at::Tensor>& d_outputs,
                      const c10::optional<at::Tensor>& d_final, const at::Tensor& like) const {
    at::Tensor d = at::zeros({batch + total(), like.size(-1)}, like.options());
    if (d_outputs.has_value()) d.narrow(0, batch, total()).copy_(pack(*d_outputs));
    if (d_final.has_value()) d.index_add_(0, final_index, *d_final);
    return d;
  }

  int64_t total() const { return offsets.back(); }
  int64_t packed_steps() const { return int64_t(sizes.size()); }
  int64_t prev_base(int64_t t) const { return t == 0 ? 0 : batch + offsets[t - 1]; }

  // Consecutive step ranges [t0, t1) of about kChunkElements / width rows.
  std::vector<std::pair<int64_t, int64_t>> chunks(int64_t width) const {
    const int64_t limit = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, width));
    std::vector<std::pair<int64_t, int64_t>> ranges;
    int64_t start = 0;
    for (int64_t t = 1; t <= packed_steps(); ++t)
      if (t == packed_steps() || offsets[t + 1] - offsets[start] > limit) {
        ranges.emplace_back(start, t);
        start = t;
      }
    return ranges;
  }

  // The forward loop's rows (n, prev_row, out_row, in_row) for steps [t0, t1).
  at::Tensor forward_rows(int64_t t0, int64_t t1) const {
    std::vector<int64_t> rows;
    for (int64_t t = t0; t < t1; ++t)
      rows.insert(rows.end(), {sizes[t], prev_base(t), batch + offsets[t], offsets[t] - offsets[t0]});
    return at::tensor(rows, at::kLong).view({-1, 4});
  }

  // The backward loop's rows (n, in_row) for steps [t0, t1).
  at::Tensor backward_rows(int64_t t0, int64_t t1) const {
    std::vector<int64_t> rows;
    for (int64_t t = t0; t < t1; ++t) rows.insert(rows.end(), {sizes[t], offsets[t] - offsets[t0]});
    return at::tensor(rows, at::kLong).view({-1, 2});
  }

  // The states steps [t0, t1) read, row-aligned with their packed rows.
  at::Tensor prev_states(const at::Tensor& states, int64_t t0, int64_t t1) const {
    const int64_t before = t0 == 0 ? batch : sizes[t0 - 1];
    bool one_run = true;
    for (int64_t t = t0; t < t1; ++t) one_run = one_run && sizes[t] == before;
    if (one_run) return states.narrow(0, prev_base(t0), offsets[t1] - offsets[t0]);
    std::vector<at::Tensor> parts;
    for (int64_t t = t0; t < t1; ++t) parts.push_back(states.narrow(0, prev_base(t), sizes[t]));
    return at::cat(parts);
  }
};

// tanh runs as 2 sigmoid(2x) - 1 in the bulk recomputations (several times
// cheaper than ATen's tanh on CPU, equal to rounding): the caller scales the
// pre-activation by this factor, folded into its matmul or multiply-add.
double pre_scale(int64_t act) { return act == kTanh ? 2.0 : 1.0; }

// In place: pre_scale(act) * pre -> act(pre).
void activate_scaled_(const at::Tensor& x, int64_t act) {
  if (act == kTanh) x.sigmoid_().mul_(2).sub_(1);
  if (act == kSigmoid) x.sigmoid_();
  if (act == kRelu) x.relu_();
}

// act'(pre) from out = act(pre); undefined means 1 (linear).
at::Tensor derivative_from_output(const at::Tensor& out, int64_t act) {
  if (act == kTanh) return 1 - out * out;
  if (act == kSigmoid) return (1 - out) * out;
  if (act == kRelu) return (out > 0).to(out.scalar_type());
  return at::Tensor();
}

// The per-step rows of the Keras GRU backward that do not depend on the
// incoming gradient, for one chunk: z, c1 = [dhpre/dh | dzpre/dh], c2 = [drpre/dhpre | r].
std::array<at::Tensor, 3> gru_factors(const at::Tensor& x, const at::Tensor& kernel,
                                      const at::Tensor& b_in, const at::Tensor& prev,
                                      const at::Tensor& w_r, const at::Tensor& b_r, int64_t act) {
  const int64_t u = prev.size(1);
  const double k = pre_scale(act);
  at::Tensor gi = at::addmm(b_in, x, kernel);
  if (k != 1.0) gi.narrow(1, 2 * u, u).mul_(k);
  const at::Tensor gh = at::addmm(b_r, prev, w_r);
  const at::Tensor zr = gi.narrow(1, 0, 2 * u);
  zr.add_(gh.narrow(1, 0, 2 * u)).sigmoid_();
  const at::Tensor hh = gi.narrow(1, 2 * u, u);
  hh.addcmul_(zr.narrow(1, u, u), gh.narrow(1, 2 * u, u), k);
  activate_scaled_(hh, act);
  const at::Tensor z = zr.narrow(1, 0, u), slopes = (1 - zr) * zr;  // sigmoid' of z and r
  at::Tensor c1 = at::empty_like(zr);
  c1.narrow(1, 0, u).copy_(1 - z);
  const at::Tensor slope = derivative_from_output(hh, act);
  if (slope.defined()) c1.narrow(1, 0, u).mul_(slope);
  c1.narrow(1, u, u).copy_((prev - hh) * slopes.narrow(1, 0, u));
  const at::Tensor c2 = at::cat({slopes.narrow(1, u, u) * gh.narrow(1, 2 * u, u), zr.narrow(1, u, u)}, 1);
  return {z.contiguous(), c1, c2};
}

// The same for the attention GRU: q = r h, r, diff = c - h, u, coefs =
// [r'(t) h | u'(t) diff dz/du], z_act = z act'(c), keep = 1 - z.
std::array<at::Tensor, 7> agru_factors(const at::Tensor& x, const at::Tensor& w_x,
                                       const at::Tensor& b_x, const at::Tensor& w_gh,
                                       const at::Tensor& w_ch, const at::Tensor& prev,
                                       const at::Tensor& a, int64_t mode, int64_t act) {
  const int64_t units = prev.size(1);
  const double k = pre_scale(act);
  const at::Tensor xp = at::addmm(b_x, x, w_x);
  const at::Tensor g = at::addmm(xp.narrow(1, 0, 2 * units), prev, w_gh);
  g.sigmoid_();
  const at::Tensor r = g.narrow(1, 0, units), u = g.narrow(1, units, units);
  const at::Tensor q = r * prev;
  const at::Tensor c = at::addmm(xp.narrow(1, 2 * units, units), q, w_ch, k, k);
  activate_scaled_(c, act);
  const at::Tensor z = mode == kNone ? u : mode == kAGRU ? a : 1 - (1 - a) * u;
  const at::Tensor diff = c - prev;
  at::Tensor coefs = (1 - g) * g;
  coefs.narrow(1, 0, units).mul_(prev);
  if (mode == kAGRU) {
    coefs.narrow(1, units, units).zero_();  // the update gate does not reach h
  } else {
    coefs.narrow(1, units, units).mul_(diff);
    if (mode == kAUGRU) coefs.narrow(1, units, units).mul_(a - 1);
  }
  const at::Tensor slope = derivative_from_output(c, act);
  const at::Tensor z_act = slope.defined() ? slope * z : z.expand_as(c);
  return {q, r.contiguous(), diff, u, coefs, z_act.contiguous(), (1 - z).contiguous()};
}

// The (B + N, U) states buffer of the Keras GRU over packed inputs x (N, D)
// from the sorted rows' initial states h0 (B, U).
at::Tensor gru_states(const Plan& plan, const at::Tensor& x, const at::Tensor& kernel,
                      const at::Tensor& bias, const at::Tensor& recurrent_kernel,
                      const at::Tensor& h0, int64_t act) {
  const int64_t batch = plan.batch, units = h0.size(1);
  at::Tensor states = at::empty({batch + plan.total(), units}, x.options());
  states.narrow(0, 0, batch).copy_(h0);
  const at::Tensor b_in = bias[0], b_r = bias[1];
  for (const auto& [t0, t1] : plan.chunks(3 * units)) {
    const int64_t r0 = plan.offsets[t0], r1 = plan.offsets[t1];
    const at::Tensor gi = at::addmm(b_in, x.narrow(0, r0, r1 - r0), kernel);
    const at::Tensor rows = plan.forward_rows(t0, t1);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_forward", [&] {
      gru_packed_forward_impl<scalar_t>(gi, recurrent_kernel, b_r, states, rows, act);
    });
  }
  return states;
}

// -> d_x (undefined unless need_x), d_h0 (sorted rows), d_kernel, d_recurrent_kernel, d_bias
std::vector<at::Tensor> gru_states_backward(const Plan& plan, const at::Tensor& d_states,
                                            const at::Tensor& x, const at::Tensor& kernel,
                                            const at::Tensor& bias,
                                            const at::Tensor& recurrent_kernel,
                                            const at::Tensor& states, int64_t act, bool need_x) {
  const int64_t batch = plan.batch, units = recurrent_kernel.size(0);
  const at::Tensor& w_r = recurrent_kernel;
  const at::Tensor b_in = bias[0], b_r = bias[1];
  at::Tensor dh = at::zeros({batch, units}, x.options());  // dL/d(latest state) of every sorted row
  at::Tensor d_x = need_x ? at::empty_like(x) : at::Tensor(), d_kernel = at::zeros_like(kernel);
  at::Tensor d_bias = at::zeros_like(bias), d_w_r = at::zeros_like(w_r);
  const auto chunks = plan.chunks(4 * units);
  for (auto chunk = chunks.rbegin(); chunk != chunks.rend(); ++chunk) {
    const auto [t0, t1] = *chunk;
    const int64_t r0 = plan.offsets[t0], r1 = plan.offsets[t1];
    const at::Tensor prev = plan.prev_states(states, t0, t1), xc = x.narrow(0, r0, r1 - r0);
    const auto factors = gru_factors(xc, kernel, b_in, prev, w_r, b_r, act);
    const at::Tensor &z = factors[0], &c1 = factors[1], &c2 = factors[2];
    at::Tensor grads = at::empty({r1 - r0, 4 * units}, x.options());  // [dhpre | dz | dr | dgh_h]
    const at::Tensor d_out = d_states.narrow(0, batch + r0, r1 - r0).contiguous();
    const at::Tensor rows = plan.backward_rows(t0, t1);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_backward", [&] {
      gru_packed_backward_impl<scalar_t>(d_out, z, c1, c2, grads, dh, w_r, rows);
    });
    const at::Tensor d_gi = at::cat({grads.narrow(1, units, 2 * units), grads.narrow(1, 0, units)}, 1);
    if (need_x) {
      at::Tensor d_x_rows = d_x.narrow(0, r0, r1 - r0);
      at::mm_out(d_x_rows, d_gi, kernel.t());
    }
    d_kernel.addmm_(xc.t(), d_gi);
    d_bias[0].add_(d_gi.sum(0));
    const at::Tensor d_gh = grads.narrow(1, units, 3 * units);
    d_w_r.addmm_(prev.t(), d_gh);
    d_bias[1].add_(d_gh.sum(0));
  }
  return {d_x, dh.add_(d_states.narrow(0, 0, batch)), d_kernel, d_w_r, d_bias};
}

// The attention GRU's states buffer; a (N, 1) packed scores or undefined,
// w_x (D, 3U) = [W_gx | W_cx], b_x (3U).
at::Tensor agru_states(const Plan& plan, const at::Tensor& x, const at::Tensor& a,
                       const at::Tensor& w_x, const at::Tensor& b_x, const at::Tensor& w_gh,
                       const at::Tensor& w_ch, const at::Tensor& h0, int64_t mode, int64_t act) {
  const int64_t batch = plan.batch, units = h0.size(1);
  at::Tensor states = at::empty({batch + plan.total(), units}, x.options());
  states.narrow(0, 0, batch).copy_(h0);
  for (const auto& [t0, t1] : plan.chunks(3 * units)) {
    const int64_t r0 = plan.offsets[t0], r1 = plan.offsets[t1];
    const at::Tensor xp = at::addmm(b_x, x.narrow(0, r0, r1 - r0), w_x);  // [gates | candidate]
    const c10::optional<at::Tensor> a_chunk =
        a.defined() ? c10::optional<at::Tensor>(a.narrow(0, r0, r1 - r0)) : c10::nullopt;
    const at::Tensor rows = plan.forward_rows(t0, t1);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "agru_forward", [&] {
      agru_packed_forward_impl<scalar_t>(xp, a_chunk, w_gh, w_ch, states, rows, mode, act);
    });
  }
  return states;
}

// -> d_x (undefined unless need_x), d_a (undefined without a), d_h0 (sorted
// rows), d_w_x, d_b_x, d_w_gh, d_w_ch
std::vector<at::Tensor> agru_states_backward(const Plan& plan, const at::Tensor& d_states,
                                             const at::Tensor& x, const at::Tensor& a,
                                             const at::Tensor& w_x, const at::Tensor& b_x,
                                             const at::Tensor& w_gh, const at::Tensor& w_ch,
                                             const at::Tensor& states, int64_t mode, int64_t act,
                                             bool need_x) {
  const int64_t batch = plan.batch, units = w_gh.size(0);
  at::Tensor dh = at::zeros({batch, units}, x.options());  // dL/d(latest state) of every sorted row
  at::Tensor d_x = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor d_a = a.defined() ? at::empty_like(a) : at::Tensor();
  at::Tensor d_w_x = at::zeros_like(w_x), d_b_x = at::zeros_like(b_x);
  at::Tensor d_w_gh = at::zeros_like(w_gh), d_w_ch = at::zeros_like(w_ch);
  const auto chunks = plan.chunks(5 * units);
  for (auto chunk = chunks.rbegin(); chunk != chunks.rend(); ++chunk) {
    const auto [t0, t1] = *chunk;
    const int64_t r0 = plan.offsets[t0], r1 = plan.offsets[t1];
    const at::Tensor prev = plan.prev_states(states, t0, t1), xc = x.narrow(0, r0, r1 - r0);
    const at::Tensor a_c = a.defined() ? a.narrow(0, r0, r1 - r0) : at::Tensor();
    const auto f = agru_factors(xc, w_x, b_x, w_gh, w_ch, prev, a_c, mode, act);
    const at::Tensor &q = f[0], &r = f[1], &diff = f[2], &u = f[3], &coefs = f[4], &z_act = f[5],
                     &keep = f[6];
    at::Tensor pairs = at::empty({r1 - r0, 2 * units}, x.options());  // [dq | dh] per step
    at::Tensor d_xp = at::empty({r1 - r0, 3 * units}, x.options());  // [d gates-pre | d cand-pre]
    const at::Tensor d_out = d_states.narrow(0, batch + r0, r1 - r0).contiguous();
    const at::Tensor rows = plan.backward_rows(t0, t1);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "agru_backward", [&] {
      agru_packed_backward_impl<scalar_t>(d_out, z_act, coefs, keep, r, pairs, d_xp, dh, w_gh, w_ch,
                                          rows);
    });
    if (d_a.defined()) {
      const at::Tensor d_z = pairs.narrow(1, units, units);
      d_z.mul_(diff);  // dL/dz; pairs is spent
      if (mode == kAUGRU) d_z.mul_(u);
      at::Tensor d_a_rows = d_a.narrow(0, r0, r1 - r0);
      at::sum_out(d_a_rows, d_z, {-1}, true);
    }
    if (need_x) {
      at::Tensor d_x_rows = d_x.narrow(0, r0, r1 - r0);
      at::mm_out(d_x_rows, d_xp, w_x.t());
    }
    d_w_x.addmm_(xc.t(), d_xp);
    d_b_x.add_(d_xp.sum(0));
    d_w_gh.addmm_(prev.t(), d_xp.narrow(1, 0, 2 * units));
    d_w_ch.addmm_(q.t(), d_xp.narrow(1, 2 * units, units));
  }
  return {d_x, d_a, dh.add_(d_states.narrow(0, 0, batch)), d_w_x, d_b_x, d_w_gh, d_w_ch};
}

// The AGRU's weights as the drivers take them: w_x (D, 3U) = [W_gx | W_cx],
// b_x (3U), w_gh (U, 2U), w_ch (U, U).
std::array<at::Tensor, 4> agru_weights(int64_t d, const at::Tensor& gates_kernel,
                                       const at::Tensor& gates_bias,
                                       const at::Tensor& candidate_kernel,
                                       const at::Tensor& candidate_bias) {
  return {at::cat({gates_kernel.narrow(0, 0, d), candidate_kernel.narrow(0, 0, d)}, 1),
          at::cat({gates_bias, candidate_bias}),
          gates_kernel.narrow(0, d, gates_kernel.size(0) - d),
          candidate_kernel.narrow(0, d, candidate_kernel.size(0) - d)};
}

at::Tensor packed_scores(const Plan& plan, const c10::optional<at::Tensor>& scores) {
  return scores.has_value() ? plan.pack(scores->unsqueeze(-1)) : at::Tensor();
}

at::Tensor defined(const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

}  // namespace

std::vector<at::Tensor> gru_forward(const at::Tensor& inputs, const c10::optional<at::Tensor>& mask,
                                    const at::Tensor& kernel, const at::Tensor& bias,
                                    const at::Tensor& recurrent_kernel, const at::Tensor& h0,
                                    int64_t act) {
  check_cpu(inputs, "inputs");
  const Plan plan(defined(mask), inputs.size(0), inputs.size(1));
  const at::Tensor states =
      gru_states(plan, plan.pack(inputs), kernel, bias, recurrent_kernel, plan.sort_rows(h0), act);
  return plan.results(states);
}

std::vector<at::Tensor> gru_backward(const c10::optional<at::Tensor>& d_outputs,
                                     const c10::optional<at::Tensor>& d_final,
                                     const at::Tensor& inputs, const c10::optional<at::Tensor>& mask,
                                     const at::Tensor& kernel, const at::Tensor& bias,
                                     const at::Tensor& recurrent_kernel, const at::Tensor& h0,
                                     const at::Tensor& outputs, int64_t act, bool need_x) {
  check_cpu(inputs, "inputs");
  const Plan plan(defined(mask), inputs.size(0), inputs.size(1));
  auto grads = gru_states_backward(plan, plan.d_states(d_outputs, d_final, outputs),
                                   plan.pack(inputs), kernel, bias, recurrent_kernel,
                                   plan.states(h0, outputs), act, need_x);
  if (need_x) grads[0] = plan.unpack(grads[0]);
  grads[1] = plan.unsort_rows(grads[1]);
  return grads;
}

std::vector<at::Tensor> agru_forward(const at::Tensor& inputs,
                                     const c10::optional<at::Tensor>& att_scores,
                                     const c10::optional<at::Tensor>& mask,
                                     const at::Tensor& gates_kernel, const at::Tensor& gates_bias,
                                     const at::Tensor& candidate_kernel,
                                     const at::Tensor& candidate_bias, const at::Tensor& h0,
                                     int64_t mode, int64_t act) {
  check_cpu(inputs, "inputs");
  const Plan plan(defined(mask), inputs.size(0), inputs.size(1));
  const auto [w_x, b_x, w_gh, w_ch] =
      agru_weights(inputs.size(2), gates_kernel, gates_bias, candidate_kernel, candidate_bias);
  const at::Tensor states = agru_states(plan, plan.pack(inputs), packed_scores(plan, att_scores),
                                        w_x, b_x, w_gh, w_ch, plan.sort_rows(h0), mode, act);
  return plan.results(states);
}

std::vector<at::Tensor> agru_backward(
    const c10::optional<at::Tensor>& d_outputs, const c10::optional<at::Tensor>& d_final,
    const at::Tensor& inputs, const c10::optional<at::Tensor>& att_scores,
    const c10::optional<at::Tensor>& mask, const at::Tensor& gates_kernel,
    const at::Tensor& gates_bias, const at::Tensor& candidate_kernel,
    const at::Tensor& candidate_bias, const at::Tensor& h0, const at::Tensor& outputs, int64_t mode,
    int64_t act, bool need_x) {
  check_cpu(inputs, "inputs");
  const Plan plan(defined(mask), inputs.size(0), inputs.size(1));
  const int64_t d = inputs.size(2), units = h0.size(1);
  const auto w = agru_weights(d, gates_kernel, gates_bias, candidate_kernel, candidate_bias);
  const auto g = agru_states_backward(plan, plan.d_states(d_outputs, d_final, outputs),
                                      plan.pack(inputs), packed_scores(plan, att_scores), w[0],
                                      w[1], w[2], w[3], plan.states(h0, outputs), mode, act, need_x);
  // g: d_x, d_a, d_h0, d_w_x, d_b_x, d_w_gh, d_w_ch -> the cell's own weights' gradients.
  return {need_x ? plan.unpack(g[0]) : at::Tensor(),
          g[1].defined() ? plan.unpack(g[1]).squeeze(-1) : at::Tensor(),
          plan.unsort_rows(g[2]),
          at::cat({g[3].narrow(1, 0, 2 * units), g[5]}),
          g[4].narrow(0, 0, 2 * units).clone(),
          at::cat({g[3].narrow(1, 2 * units, units), g[6]}),
          g[4].narrow(0, 2 * units, units).clone()};
}
