// Kernels of the feature transforms (feature_trans.py): AutoInt's attention
// rounds and SeNet's squeeze, excitation and scale, each sample's work done in
// cache.
//
// AutoInt (B, F, E), per sample and round l, with X_0 the input:
//   S = X_l X_l^T / d,  P = softmax over the present keys of S (rows of absent
//   queries are zero),  X_{l+1} = P X_l with absent rows zero.
// ATen runs such a round as two batched matmuls over B small matrices, one at
// a time, plus a softmax that reads and writes all B (F, F) matrices; here a
// sample's S, P and X stay in L1 through the round.
//
// S is symmetric, so column i of S holds query i's logits: the kernels keep
// P transposed, Pt[j][i] = P[i][j], and normalise down the columns, one vector
// of queries at a time, with no horizontal reduction and no serial chain per
// row. For the backward the forward saves each round's input and Pt (what
// autograd saves for the same ops, B * F * F values per round); then
//   dP = dY X^T,  dS = P * (dP - rowsum(dP * P)) / d,  dX = P^T dY + (dS + dS^T) X,
// in the same transposed layout: dPt = X dY^T, and the row sums are sums down
// Pt's columns.

#include "common.h"
#include "kernels.h"

#include <limits>
#include <vector>

namespace {

using namespace monolith_native;

// A sample's square buffers are handled one vector (cache line) of columns at
// a time, written with GCC / Clang vector types: loops of a length known only
// at run time (48 columns for 39 fields) would pay alias checks, peeling and
// a remainder on every row, which cost more here than the matmuls.
template <typename T>
struct Lanes {
  static constexpr int64_t kWidth = 64 / sizeof(T);
  typedef T Vec __attribute__((vector_size(64)));
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> Int;
  typedef Int IntVec __attribute__((vector_size(64)));

  static Vec load(const T* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(Vec));
    return v;
  }
  static void store(T* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }
  static Vec splat(T x) { return Vec{} + x; }
  static IntVec bits(Vec v) {
    IntVec b;
    std::memcpy(&b, &v, sizeof(Vec));
    return b;
  }
  // All-ones lanes where v is NaN, read from the bits (-ffast-math folds a
  // float test for NaN away).
  static IntVec nan_lanes(Vec v) {
    constexpr Int sign = Int(1) << (8 * sizeof(T) - 1);
    constexpr Int inf = sizeof(T) == 4 ? Int(0x7f800000) : Int(0x7ff0000000000000ll);
    return (bits(v) & ~sign) > inf;
  }
};

// exp of softmax arguments x <= 0 (the peak is subtracted first), one vector
// at a time: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor
// polynomial to degree 7 (truncation error below 5e-9 in float, 2e-9 relative
// to the float64 rounding it replaces, see below), times 2^n put straight into
// the exponent bits. Below the smallest normal number's logarithm the weight
// is 0; a NaN stays NaN.
inline Lanes<float>::Vec softmax_exp(Lanes<float>::Vec x) {
  using L = Lanes<float>;
  const L::Vec low = L::splat(-87.0f);
  const L::Vec clamped = x > low ? x : low;
  // n = round(x / ln2): truncation of a non-positive value minus one half.
  const L::IntVec n = __builtin_convertvector(clamped * 1.44269504088896341f - 0.5f, L::IntVec);
  const L::Vec nf = __builtin_convertvector(n, L::Vec);
  // ln 2 in two parts: n * 0.693359375 is exact, so r keeps float precision.
  const L::Vec r = (clamped - nf * 0.693359375f) + nf * 2.12194440e-4f;
  L::Vec p = L::splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const L::IntVec scale_bits = (n + 127) << 23;
  L::Vec two_n;
  std::memcpy(&two_n, &scale_bits, sizeof(two_n));
  const L::Vec e = x > low ? p * two_n : L::splat(0.0f);
  return L::nan_lanes(x) ? x : e;
}

// float64 (the gradient checks' precision) lane by lane through std::exp,
// which is exact to rounding; only inside exp's range.
inline Lanes<double>::Vec softmax_exp(Lanes<double>::Vec x) {
  Lanes<double>::Vec e;
  for (int64_t k = 0; k < Lanes<double>::kWidth; ++k)
    e[k] = is_nan(x[k]) ? x[k] : (x[k] >= -700.0 ? std::exp(x[k]) : 0.0);
  return e;
}

// Columns of a sample's square buffers, rounded up to whole vectors so that
// the loops over them and gemm_rows run on full blocks.
inline int64_t padded_fields(int64_t f, int64_t bytes) {
  const int64_t lane = 64 / bytes;
  return (f + lane - 1) / lane * lane;
}

// dst (cols, Fp) = src (F, cols) transposed; dst's columns F..Fp stay zero.
template <typename T>
void transpose_padded(const T* __restrict src, int64_t f, int64_t cols, int64_t fp,
                      T* __restrict dst) {
  std::fill(dst, dst + cols * fp, T(0));
  for (int64_t j = 0; j < f; ++j)
    for (int64_t k = 0; k < cols; ++k) dst[k * fp + j] = src[j * cols + k];
}

// One sample's shape and present fields (per thread).
template <typename T>
struct AutoIntSample {
  int64_t f, e, fp;
  T divisor;
  const bool* present = nullptr;  // F flags, or nullptr when all are present
  std::vector<T> keep;

  AutoIntSample(int64_t f, int64_t e, T divisor)
      : f(f), e(e), fp(padded_fields(f, sizeof(T))), divisor(divisor), keep(fp) {}

  bool is_present(int64_t j) const { return !present || present[j]; }

  // keep[i] = 1 for the present fields i < F, 0 for absent fields and padding.
  void set_present(const bool* flags) {
    present = flags;
    for (int64_t i = 0; i < fp; ++i) keep[i] = i < f && is_present(i) ? T(1) : T(0);
  }

  // p (F, Fp) = the transposed attention weights of x (F, E); xt (E, Fp) is
  // scratch for x^T.
  void attention(const T* __restrict x, T* __restrict xt, T* __restrict p) const {
    using L = Lanes<T>;
    using Vec = typename L::Vec;
    constexpr int64_t w = L::kWidth;
    transpose_padded(x, f, e, fp, xt);
    std::fill(p, p + f * fp, T(0));
    gemm_rows(x, e, xt, e, fp, p, fp, f);  // S (symmetric)
    for (int64_t i = 0; i < fp; i += w) {
      // Column block i: queries i..i+w, normalised down the present keys' rows.
      Vec peak = L::splat(std::numeric_limits<T>::lowest());
      const Vec d = L::splat(divisor);
      for (int64_t j = 0; j < f; ++j) {
        if (!is_present(j)) continue;
        Vec s = L::load(p + j * fp + i);
        if (divisor != T(1)) s /= d;
        L::store(p + j * fp + i, s);
        peak = s > peak ? s : peak;
      }
      Vec sum = L::splat(T(0));
      for (int64_t j = 0; j < f; ++j) {
        if (!is_present(j)) {  // an absent key gets no weight
          L::store(p + j * fp + i, L::splat(T(0)));
          continue;
        }
        const Vec weight = softmax_exp(L::load(p + j * fp + i) - peak);
        L::store(p + j * fp + i, weight);
        sum += weight;
      }
      // Absent queries (and padding) get zero weights; the select also keeps
      // out the infinity of a sample with no present field at all.
      const Vec kept = L::load(keep.data() + i);
      const Vec scale = kept != T(0) ? T(1) / sum : L::splat(T(0));
      for (int64_t j = 0; j < f; ++j) L::store(p + j * fp + i, L::load(p + j * fp + i) * scale);
    }
  }

  // rows (F, E): absent fields' rows set to zero.
  void zero_absent(T* rows) const {
    if (!present) return;
    for (int64_t i = 0; i < f; ++i)
      if (!present[i]) std::fill(rows + i * e, rows + (i + 1) * e, T(0));
  }
};

// In place, dpt (F, Fp) -> dSt: dS = P * (dP - rowsum(dP * P)) / d, transposed
// like pt, so the row sums are sums down the columns.
template <typename T>
void softmax_backward(const T* __restrict pt, T* __restrict dpt, int64_t f, int64_t fp, T divisor) {
  using L = Lanes<T>;
  using Vec = typename L::Vec;
  for (int64_t i = 0; i < fp; i += L::kWidth) {
    Vec inner = L::splat(T(0));
    for (int64_t j = 0; j < f; ++j) inner += L::load(dpt + j * fp + i) * L::load(pt + j * fp + i);
    for (int64_t j = 0; j < f; ++j) {
      const Vec dp = L::load(dpt + j * fp + i);
      L::store(dpt + j * fp + i, L::load(pt + j * fp + i) * (dp - inner) / divisor);
    }
  }
}

const bool* sample_flags(const at::Tensor& present, int64_t b) {
  return present.defined() ? present.data_ptr<bool>() + b * present.stride(0) : nullptr;
}

template <typename T>
void autoint_forward_impl(const at::Tensor& x, const at::Tensor& present, int64_t rounds,
                          double divisor, const at::Tensor& out, const at::Tensor& hidden,
                          const at::Tensor& weights) {
  const int64_t batch = x.size(0), f = x.size(1), e = x.size(2), area = f * e;
  const T* x_p = x.data_ptr<T>();
  T* out_p = out.data_ptr<T>();
  T* hidden_p = hidden.defined() ? hidden.data_ptr<T>() : nullptr;
  T* weights_p = weights.defined() ? weights.data_ptr<T>() : nullptr;
  const int64_t fp = padded_fields(f, sizeof(T));
  row_chunks(batch, rounds * 2 * f * fp * e, [&](int64_t begin, int64_t end) {
    AutoIntSample<T> sample(f, e, T(divisor));
    std::vector<T> xt(e * fp), scratch(f * fp), ping(area), pong(area);
    for (int64_t b = begin; b < end; ++b) {
      sample.set_present(sample_flags(present, b));
      const T* cur = x_p + b * area;
      for (int64_t l = 0; l < rounds; ++l) {
        T* next = l == rounds - 1 ? out_p + b * area
                  : hidden_p      ? hidden_p + (l * batch + b) * area
                  : (l % 2 == 0 ? ping.data() : pong.data());
        T* pt = weights_p ? weights_p + (l * batch + b) * f * fp : scratch.data();
        sample.attention(cur, xt.data(), pt);
        std::fill(next, next + area, T(0));
        gemm_rows<T, true>(pt, fp, cur, f, e, next, e, f);  // P X
        sample.zero_absent(next);
        cur = next;
      }
    }
  });
}

template <typename T>
void autoint_backward_impl(const at::Tensor& x, const at::Tensor& hidden,
                           const at::Tensor& weights, const at::Tensor& d_out,
                           const at::Tensor& present, double divisor, const at::Tensor& d_x) {
  const int64_t batch = x.size(0), f = x.size(1), e = x.size(2), area = f * e;
  const T* x_p = x.data_ptr<T>();
  const T* hidden_p = hidden.defined() ? hidden.data_ptr<T>() : nullptr;
  const T* weights_p = weights.data_ptr<T>();
  const int64_t rounds = weights.size(0);
  const T* d_out_p = d_out.data_ptr<T>();
  T* d_x_p = d_x.data_ptr<T>();
  const int64_t fp = padded_fields(f, sizeof(T));
  row_chunks(batch, rounds * 4 * f * fp * e, [&](int64_t begin, int64_t end) {
    AutoIntSample<T> sample(f, e, T(divisor));
    std::vector<T> dyt(e * fp), dpt(f * fp), dy(area), dx(area);
    for (int64_t b = begin; b < end; ++b) {
      sample.set_present(sample_flags(present, b));
      std::copy(d_out_p + b * area, d_out_p + (b + 1) * area, dy.data());
      for (int64_t l = rounds - 1; l >= 0; --l) {
        sample.zero_absent(dy.data());  // rows the round zeroed pass no gradient back
        const T* xl = l == 0 ? x_p + b * area : hidden_p + ((l - 1) * batch + b) * area;
        const T* __restrict pt = weights_p + (l * batch + b) * f * fp;
        transpose_padded(dy.data(), f, e, fp, dyt.data());
        std::fill(dpt.begin(), dpt.end(), T(0));
        gemm_rows(xl, e, dyt.data(), e, fp, dpt.data(), fp, f);  // dPt = X dY^T
        softmax_backward(pt, dpt.data(), f, fp, sample.divisor);  // dPt -> dSt
        std::fill(dx.begin(), dx.end(), T(0));
        gemm_rows(pt, fp, dy.data(), f, e, dx.data(), e, f);               // P^T dY
        gemm_rows(dpt.data(), fp, xl, f, e, dx.data(), e, f);              // + dS^T X
        gemm_rows<T, true>(dpt.data(), fp, xl, f, e, dx.data(), e, f);     // + dS X
        std::swap(dy, dx);
      }
      sample.zero_absent(dy.data());
      std::copy(dy.begin(), dy.end(), d_x_p + b * area);
    }
  });
}

// ------------------------------------------------------------------- SeNet
//
// With E the embedding width and the tower's kernels already weight-normalised
// (Dense.effective_kernel):
//   s = mean over E of each field (F),  h = relu(s K1 + b1) (C),
//   a = sigmoid(h K2 + b2) (F),  out = x * a per field,
// or a = s without a tower (cmp_dim=None). ATen runs this as a dozen ops, each
// a pass over the batch or a dispatch on a tiny tensor. Here the batch goes in
// blocks of kSeNetBlock samples, small enough to stay in L2 from the squeeze
// to the scale; a block's tower runs transposed (fields or units x samples),
// so that its matmuls and the sigmoid are vectors across the samples.
// Backward, per sample:
//   da = sum over E of d_out * x,  dz2 = da a (1 - a),  dz1 = (dz2 K2^T) [h > 0],
//   ds = dz1 K1^T,  dx = d_out a + ds / E,
// then dK1 = S^T dZ1, dK2 = H^T dZ2 and the biases' sums over the batch.

constexpr int64_t kSeNetBlock = 64;

// fn(width) with the field width as a compile-time constant for the common
// embedding sizes, so that a field's loop is whole vectors with no remainder
// handling; other widths get a run-time loop.
template <typename Fn>
void with_width(int64_t e, const Fn& fn) {
  switch (e) {
    case 4:
      return fn(std::integral_constant<int64_t, 4>());
    case 8:
      return fn(std::integral_constant<int64_t, 8>());
    case 16:
      return fn(std::integral_constant<int64_t, 16>());
    case 32:
      return fn(std::integral_constant<int64_t, 32>());
    case 64:
      return fn(std::integral_constant<int64_t, 64>());
    default:
      return fn(e);
  }
}

// fn(b0, n) for the batch's blocks of kSeNetBlock samples (the last may be
// shorter), split over threads at work_per_sample multiply-adds a sample.
template <typename Fn>
void sample_blocks(int64_t batch, int64_t work_per_sample, const Fn& fn) {
  const int64_t blocks = (batch + kSeNetBlock - 1) / kSeNetBlock;
  const int64_t grain =
      std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, kSeNetBlock * work_per_sample));
  at::parallel_for(0, blocks, grain, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const int64_t b0 = block * kSeNetBlock;
      fn(b0, std::min(kSeNetBlock, batch - b0));
    }
  });
}

// The tower's weights: K1 (F, C), b1 (C), K2 (C, F), b2 (F); C = 0 without one.
template <typename T>
struct Tower {
  int64_t c = 0;
  const T *k1 = nullptr, *b1 = nullptr, *k2 = nullptr, *b2 = nullptr;
};

// rows (R, n) = bias[r] on every column.
template <typename T>
void fill_rows(T* __restrict rows, const T* __restrict bias, int64_t r_size, int64_t n) {
  for (int64_t r = 0; r < r_size; ++r) std::fill(rows + r * n, rows + (r + 1) * n, bias[r]);
}

template <typename T, typename Width>
void senet_forward_impl(const at::Tensor& x, const Tower<T>& tower, const at::Tensor& out,
                        const at::Tensor& squeezed, const at::Tensor& hidden,
                        const at::Tensor& excitation, Width width) {
  const int64_t batch = x.size(0), f = x.size(1), c = tower.c;
  const int64_t e = width;
  const T* x_p = x.data_ptr<T>();
  T* out_p = out.data_ptr<T>();
  T* s_p = squeezed.data_ptr<T>();
  T* h_p = c ? hidden.data_ptr<T>() : nullptr;
  T* a_p = excitation.data_ptr<T>();
  sample_blocks(batch, f * (e + 2 * c), [&](int64_t b0, int64_t n) {
    // A block's s, h and a transposed: (F, n), (C, n), (F, n).
    std::vector<T> st(f * kSeNetBlock), ht(c * kSeNetBlock), at_(f * kSeNetBlock);
    for (int64_t b = 0; b < n; ++b) {
      const T* __restrict xb = x_p + (b0 + b) * f * e;
      for (int64_t j = 0; j < f; ++j) {
        T total = 0;
        for (int64_t k = 0; k < e; ++k) total += xb[j * e + k];
        st[j * n + b] = total / T(e);
        s_p[(b0 + b) * f + j] = st[j * n + b];
      }
    }
    if (c) {
      fill_rows(ht.data(), tower.b1, c, n);
      gemm_rows<T, true>(tower.k1, c, st.data(), f, n, ht.data(), n, c);  // (S K1)^T
      for (int64_t i = 0; i < c * n; ++i) ht[i] = ht[i] > T(0) ? ht[i] : T(0);
      fill_rows(at_.data(), tower.b2, f, n);
      gemm_rows<T, true>(tower.k2, f, ht.data(), c, n, at_.data(), n, f);  // (H K2)^T
      for (int64_t i = 0; i < f * n; ++i) at_[i] = sigmoid(at_[i]);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t i = 0; i < c; ++i) h_p[(b0 + b) * c + i] = ht[i * n + b];
    } else {
      std::copy(st.begin(), st.begin() + f * n, at_.begin());
    }
    for (int64_t b = 0; b < n; ++b) {
      const T* __restrict xb = x_p + (b0 + b) * f * e;
      T* __restrict o = out_p + (b0 + b) * f * e;
      T* __restrict a = a_p + (b0 + b) * f;
      for (int64_t j = 0; j < f; ++j) {
        const T w = at_[j * n + b];
        a[j] = w;
        for (int64_t k = 0; k < e; ++k) o[j * e + k] = xb[j * e + k] * w;
      }
    }
  });
}

// The tower's kernel and bias gradients one thread sums over its blocks:
// dK1 (F, C), db1 (C), dK2 (C, F), db2 (F).
template <typename T>
struct TowerGrads {
  std::vector<T> k1, b1, k2, b2;
  TowerGrads(int64_t f, int64_t c) : k1(f * c), b1(c), k2(c * f), b2(f) {}
};

// Fills d_x (if defined), dZ1 (B, C) and dZ2 (B, F), and adds each block's
// dK1 = S^T dZ1, dK2 = H^T dZ2 and bias sums to its thread's grads. d_out's
// rows may be strided; a gradient broadcast along E (stride 0, e.g. from
// out.sum()) is read once per field.
template <typename T, typename Width>
void senet_backward_impl(const at::Tensor& d_out, const at::Tensor& x, const Tower<T>& tower,
                         const at::Tensor& squeezed, const at::Tensor& hidden,
                         const at::Tensor& excitation, const at::Tensor& d_x,
                         const at::Tensor& d_z1, const at::Tensor& d_z2,
                         std::vector<TowerGrads<T>>& grads, Width width) {
  const int64_t batch = x.size(0), f = x.size(1), c = tower.c;
  const int64_t e = width;
  const int64_t sg_b = d_out.stride(0), sg_f = d_out.stride(1);
  const bool broadcast = d_out.stride(2) == 0;
  const T* g_p = d_out.data_ptr<T>();
  const T* x_p = x.data_ptr<T>();
  const T* h_p = c ? hidden.data_ptr<T>() : nullptr;
  const T* a_p = excitation.data_ptr<T>();
  T* dx_p = d_x.defined() ? d_x.data_ptr<T>() : nullptr;
  T* dz1_p = c ? d_z1.data_ptr<T>() : nullptr;
  T* dz2_p = d_z2.data_ptr<T>();
  const T* s_p = squeezed.data_ptr<T>();
  sample_blocks(batch, f * (2 * e + 2 * c), [&](int64_t b0, int64_t n) {
    // A block's dz2 / ds (F, n) and dz1 (C, n), transposed.
    std::vector<T> dz2t(f * kSeNetBlock), dz1t(c * kSeNetBlock), dst(f * kSeNetBlock);
    for (int64_t b = 0; b < n; ++b) {
      const T* __restrict xb = x_p + (b0 + b) * f * e;
      const T* __restrict a = a_p + (b0 + b) * f;
      for (int64_t j = 0; j < f; ++j) {
        const T* __restrict g = g_p + (b0 + b) * sg_b + j * sg_f;
        T total = 0;
        if (broadcast) {
          for (int64_t k = 0; k < e; ++k) total += xb[j * e + k];
          total *= g[0];
        } else {
          for (int64_t k = 0; k < e; ++k) total += g[k] * xb[j * e + k];
        }
        // d(excitation) times the sigmoid's derivative; the identity tower's is 1.
        dz2t[j * n + b] = c ? total * a[j] * (T(1) - a[j]) : total;
      }
    }
    if (c) {
      std::fill(dz1t.begin(), dz1t.end(), T(0));
      gemm_rows(tower.k2, f, dz2t.data(), f, n, dz1t.data(), n, c);  // (dZ2 K2^T)^T
      for (int64_t i = 0; i < c; ++i)
        for (int64_t b = 0; b < n; ++b) {
          T& d = dz1t[i * n + b];
          d = h_p[(b0 + b) * c + i] > T(0) ? d : T(0);
          dz1_p[(b0 + b) * c + i] = d;
        }
      std::fill(dst.begin(), dst.end(), T(0));
      gemm_rows(tower.k1, c, dz1t.data(), c, n, dst.data(), n, f);  // (dZ1 K1^T)^T
    } else {
      std::copy(dz2t.begin(), dz2t.begin() + f * n, dst.begin());
    }
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < f; ++j) dz2_p[(b0 + b) * f + j] = dz2t[j * n + b];
    if (c) {
      TowerGrads<T>& sums = grads[at::get_thread_num()];
      const T* dz1 = dz1_p + b0 * c;
      const T* dz2 = dz2_p + b0 * f;
      gemm_rows<T, true>(s_p + b0 * f, f, dz1, n, c, sums.k1.data(), c, f);  // S^T dZ1
      gemm_rows<T, true>(h_p + b0 * c, c, dz2, n, f, sums.k2.data(), f, c);  // H^T dZ2
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t i = 0; i < c; ++i) sums.b1[i] += dz1[b * c + i];
        for (int64_t j = 0; j < f; ++j) sums.b2[j] += dz2[b * f + j];
      }
    }
    if (!dx_p) return;
    for (int64_t b = 0; b < n; ++b) {
      const T* __restrict a = a_p + (b0 + b) * f;
      T* __restrict dx = dx_p + (b0 + b) * f * e;
      for (int64_t j = 0; j < f; ++j) {
        const T* __restrict g = g_p + (b0 + b) * sg_b + j * sg_f;
        const T from_squeeze = dst[j * n + b] / T(e);
        if (broadcast)
          for (int64_t k = 0; k < e; ++k) dx[j * e + k] = g[0] * a[j] + from_squeeze;
        else
          for (int64_t k = 0; k < e; ++k) dx[j * e + k] = g[k] * a[j] + from_squeeze;
      }
    }
  });
}

void check_fields(const at::Tensor& x, const char* name) {
  check_cpu(x, name);
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), name, " must be a contiguous (B, F, E) tensor");
}

at::Tensor optional_flags(const c10::optional<at::Tensor>& present, const at::Tensor& x) {
  if (!present.has_value() || !present->defined()) return at::Tensor();
  TORCH_CHECK(present->scalar_type() == at::kBool && present->dim() == 2 &&
                  present->size(0) == x.size(0) && present->size(1) == x.size(1) &&
                  present->stride(1) == 1,
              "present must be a (B, F) bool tensor with unit last stride");
  return *present;
}

}  // namespace

// Returns the output (B, F, E) and, when save, what the backward needs: the
// inputs of rounds 1..L-1 (L - 1, B, F, E) and every round's transposed
// attention weights (L, B, F, Fp), Fp = F rounded up to a 64-byte multiple.
std::vector<at::Tensor> autoint_forward(const at::Tensor& x,
                                        const c10::optional<at::Tensor>& present, int64_t rounds,
                                        double divisor, bool save) {
  check_fields(x, "x");
  TORCH_CHECK(rounds >= 1, "rounds must be >= 1");
  const at::Tensor flags = optional_flags(present, x);
  at::Tensor out = at::empty_like(x);
  if (!save) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "autoint_forward", [&] {
      autoint_forward_impl<scalar_t>(x, flags, rounds, divisor, out, at::Tensor(), at::Tensor());
    });
    return {out};
  }
  const int64_t batch = x.size(0), f = x.size(1), e = x.size(2);
  at::Tensor hidden = at::empty({rounds - 1, batch, f, e}, x.options());
  at::Tensor weights = at::empty({rounds, batch, f, padded_fields(f, x.element_size())}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "autoint_forward", [&] {
    autoint_forward_impl<scalar_t>(x, flags, rounds, divisor, out, hidden, weights);
  });
  return {out, hidden, weights};
}

// dL/dx from dL/d(out) (B, F, E) and what autoint_forward saved.
at::Tensor autoint_backward(const at::Tensor& x, const at::Tensor& hidden,
                            const at::Tensor& weights, const at::Tensor& d_out,
                            const c10::optional<at::Tensor>& present, double divisor) {
  check_fields(x, "x");
  check_fields(d_out, "d_out");
  const at::Tensor flags = optional_flags(present, x);
  const int64_t batch = x.size(0), f = x.size(1), e = x.size(2);
  TORCH_CHECK(weights.dim() == 4 && weights.is_contiguous() && weights.size(1) == batch &&
                  weights.size(2) == f && weights.size(3) == padded_fields(f, x.element_size()),
              "weights must be the (L, B, F, Fp) attention weights autoint_forward saved");
  const int64_t rounds = weights.size(0);
  TORCH_CHECK(hidden.is_contiguous() && hidden.dim() == 4 && hidden.size(0) == rounds - 1 &&
                  hidden.size(1) == batch && hidden.size(2) == f && hidden.size(3) == e,
              "hidden must be the (L - 1, B, F, E) round inputs autoint_forward saved");
  at::Tensor d_x = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "autoint_backward", [&] {
    autoint_backward_impl<scalar_t>(x, hidden, weights, d_out, flags, divisor, d_x);
  });
  return d_x;
}

namespace {

// SeNet's tower's dense layers, checked against x (F fields, C units).
c10::optional<DenseWeights> dense_weights(const at::Tensor& x,
                                          const c10::optional<at::Tensor>& v,
                                          const c10::optional<at::Tensor>& g,
                                          const c10::optional<at::Tensor>& bias, int64_t in,
                                          int64_t out_width) {
  if (!v.has_value() || !v->defined()) return c10::nullopt;
  const int64_t out = out_width > 0 ? out_width : v->size(1);
  const auto ok = [&](const c10::optional<at::Tensor>& t, at::IntArrayRef shape) {
    return t.has_value() && t->defined() && t->sizes() == shape &&
           t->scalar_type() == x.scalar_type() && t->device().is_cpu();
  };
  TORCH_CHECK(ok(v, {in, out}) && ok(g, {out}) && ok(bias, {out}),
              "the tower must be V1 (F, C), g1 (C), b1 (C), V2 (C, F), g2 (F), b2 (F) in x's dtype");
  return DenseWeights{v->contiguous(), g->contiguous(), bias->contiguous()};
}

using OptionalDense = c10::optional<DenseWeights>;

// Both dense layers of SeNet's tower, checked (or neither, for cmp_dim=None).
std::pair<OptionalDense, OptionalDense> tower_weights(
    const at::Tensor& x, const c10::optional<at::Tensor>& v1, const c10::optional<at::Tensor>& g1,
    const c10::optional<at::Tensor>& b1, const c10::optional<at::Tensor>& v2,
    const c10::optional<at::Tensor>& g2, const c10::optional<at::Tensor>& b2) {
  const int64_t f = x.size(1);
  const OptionalDense first = dense_weights(x, v1, g1, b1, f, 0);
  const int64_t c = first ? first->v.size(1) : 0;
  const OptionalDense second = first ? dense_weights(x, v2, g2, b2, c, f) : c10::nullopt;
  TORCH_CHECK(bool(first) == bool(second), "the tower needs both dense layers");
  return {first, second};
}

// The tower the kernels read: K1 and K2 weight-normalised into k1, k2 (which
// must outlive it) and the biases; an empty tower without dense layers.
template <typename T>
Tower<T> normalised_tower(const OptionalDense& first, const OptionalDense& second, double eps,
                          at::Tensor& k1, at::Tensor& k2) {
  if (!first) return Tower<T>();
  k1 = effective_kernel<T>(*first, eps);
  k2 = effective_kernel<T>(*second, eps);
  return Tower<T>{k1.size(1), k1.data_ptr<T>(), first->bias.data_ptr<T>(), k2.data_ptr<T>(),
                  second->bias.data_ptr<T>()};
}

}  // namespace

// x (B, F, E) and the tower's raw weights (all None for cmp_dim=None). Returns
// out (B, F, E), the squeezed means (B, F), the tower's hidden layer (B, C;
// empty without a tower) and the excitation (B, F).
std::vector<at::Tensor> senet_forward(const at::Tensor& x, const c10::optional<at::Tensor>& v1,
                                      const c10::optional<at::Tensor>& g1,
                                      const c10::optional<at::Tensor>& b1,
                                      const c10::optional<at::Tensor>& v2,
                                      const c10::optional<at::Tensor>& g2,
                                      const c10::optional<at::Tensor>& b2, double eps) {
  check_fields(x, "x");
  const int64_t batch = x.size(0), f = x.size(1);
  const auto [first, second] = tower_weights(x, v1, g1, b1, v2, g2, b2);
  const int64_t c = first ? first->v.size(1) : 0;
  at::Tensor out = at::empty_like(x);
  at::Tensor squeezed = at::empty({batch, f}, x.options());
  at::Tensor hidden = at::empty({batch, c}, x.options());
  at::Tensor excitation = at::empty({batch, f}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "senet_forward", [&] {
    at::Tensor k1, k2;  // the weight-normalised kernels, alive while tower points at them
    const Tower<scalar_t> tower = normalised_tower<scalar_t>(first, second, eps, k1, k2);
    with_width(x.size(2), [&](auto width) {
      senet_forward_impl<scalar_t>(x, tower, out, squeezed, hidden, excitation, width);
    });
  });
  return {out, squeezed, hidden, excitation};
}

// Returns d_x (undefined unless need_x_grad) and, with a tower, dV1, dg1, db1,
// dV2, dg2, db2.
std::vector<at::Tensor> senet_backward(
    const at::Tensor& d_out, const at::Tensor& x, const c10::optional<at::Tensor>& v1,
    const c10::optional<at::Tensor>& g1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& v2, const c10::optional<at::Tensor>& g2,
    const c10::optional<at::Tensor>& b2, double eps, const at::Tensor& squeezed,
    const at::Tensor& hidden, const at::Tensor& excitation, bool need_x_grad) {
  check_fields(x, "x");
  check_cpu(d_out, "d_out");
  TORCH_CHECK(d_out.sizes() == x.sizes() && (d_out.stride(2) == 1 || d_out.stride(2) == 0),
              "d_out must have x's shape and a last stride of 1 or 0");
  const int64_t batch = x.size(0), f = x.size(1);
  const auto [first, second] = tower_weights(x, v1, g1, b1, v2, g2, b2);
  const int64_t c = first ? first->v.size(1) : 0;
  at::Tensor d_x = need_x_grad ? at::empty_like(x) : at::Tensor();
  at::Tensor d_z1 = at::empty({batch, c}, x.options());
  at::Tensor d_z2 = at::empty({batch, f}, x.options());
  std::vector<at::Tensor> grads{d_x};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "senet_backward", [&] {
    at::Tensor k1, k2;  // the weight-normalised kernels, alive while tower points at them
    const Tower<scalar_t> tower = normalised_tower<scalar_t>(first, second, eps, k1, k2);
    std::vector<TowerGrads<scalar_t>> sums(at::get_num_threads(), TowerGrads<scalar_t>(f, c));
    with_width(x.size(2), [&](auto width) {
      senet_backward_impl<scalar_t>(d_out, x, tower, squeezed, hidden, excitation, d_x, d_z1,
                                    d_z2, sums, width);
    });
    if (!first) return;
    TowerGrads<scalar_t> total(f, c);
    for (const auto& part : sums) {
      add_into(total.k1, part.k1);
      add_into(total.b1, part.b1);
      add_into(total.k2, part.k2);
      add_into(total.b2, part.b2);
    }
    const auto as_tensor = [&](const std::vector<scalar_t>& v, at::IntArrayRef shape) {
      return to_tensor(v, shape, x.options());
    };
    const auto [d_v1, d_g1] = effective_kernel_backward<scalar_t>(*first, as_tensor(total.k1, {f, c}), eps);
    const auto [d_v2, d_g2] = effective_kernel_backward<scalar_t>(*second, as_tensor(total.k2, {c, f}), eps);
    grads.insert(grads.end(), {d_v1, d_g1, as_tensor(total.b1, {c}), d_v2, d_g2, as_tensor(total.b2, {f})});
  });
  return grads;
}
