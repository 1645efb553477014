// Time loops of the recurrences (see _ops/recurrences.py for the maths), in
// C++ so that a step costs its matmuls and one pass over its elementwise work
// instead of a dozen dispatched tensor ops. There is one layout, the packed
// one (real steps only; a batch without padding is packing with every row
// alive). The Python side allocates and owns all buffers; these loops only
// fill them.
//
// Shared helpers (bounded exp / tanh, row accessors, the small matmul) are
// in common.h.

#include "common.h"
#include "kernels.h"

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

}  // namespace





void gru_packed_forward(const at::Tensor& gi, const at::Tensor& w_r, const at::Tensor& b_r,
                        const at::Tensor& states, const at::Tensor& steps, int64_t act) {
  check_cpu(gi, "gi");
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "gru_packed_forward", [&] {
    gru_packed_forward_impl<scalar_t>(gi, w_r, b_r, states, steps, act);
  });
}

void gru_packed_backward(const at::Tensor& d_out, const at::Tensor& z, const at::Tensor& c1,
                         const at::Tensor& c2, const at::Tensor& grads, const at::Tensor& dh,
                         const at::Tensor& w_r, const at::Tensor& steps) {
  check_cpu(dh, "dh");
  AT_DISPATCH_FLOATING_TYPES(dh.scalar_type(), "gru_packed_backward", [&] {
    gru_packed_backward_impl<scalar_t>(d_out, z, c1, c2, grads, dh, w_r, steps);
  });
}

void agru_packed_forward(const at::Tensor& xp, const c10::optional<at::Tensor>& a,
                         const at::Tensor& w_gh, const at::Tensor& w_ch, const at::Tensor& states,
                         const at::Tensor& steps, int64_t mode, int64_t act) {
  check_cpu(xp, "xp");
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "agru_packed_forward", [&] {
    agru_packed_forward_impl<scalar_t>(xp, a, w_gh, w_ch, states, steps, mode, act);
  });
}

void agru_packed_backward(const at::Tensor& d_out, const at::Tensor& z_act, const at::Tensor& coefs,
                          const at::Tensor& keep, const at::Tensor& r, const at::Tensor& pairs,
                          const at::Tensor& d_xp, const at::Tensor& dh, const at::Tensor& w_gh,
                          const at::Tensor& w_ch, const at::Tensor& steps) {
  check_cpu(dh, "dh");
  AT_DISPATCH_FLOATING_TYPES(dh.scalar_type(), "agru_packed_backward", [&] {
    agru_packed_backward_impl<scalar_t>(d_out, z_act, coefs, keep, r, pairs, d_xp, dh, w_gh, w_ch,
                                        steps);
  });
}
