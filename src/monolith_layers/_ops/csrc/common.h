// Helpers shared by the native kernels (recurrences.cpp, interactions.cpp):
// NaN-safe bounded maths, row accessors, the per-thread row split and a
// small register-blocked matmul.
//
// Built on the machine that runs it (torch.utils.cpp_extension, see
// _native.py), with -ffast-math so that exp and tanh vectorise (glibc's vector
// maths is declared only under it). The kernels make no NaN or infinity tests
// for the compiler to drop: a NaN in a real input propagates as in the Python
// code; exp and tanh never see arguments past their range (see sigmoid below).

#pragma once

#include <ATen/ATen.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace monolith_native {

// A step is split over threads only in chunks of at least this many
// multiply-adds: below that, waking a second thread costs more than it saves.
constexpr int64_t kGrainWork = 32768;

// Under -ffast-math the vector exp and tanh assume finite results: an input
// past their range gives NaN, not infinity or +-1. So exp(-x) is only taken
// where it stays finite (x >= -80 in float32, -700 in float64; below, the
// result is sigmoid(-80) = 1.8e-35 or sigmoid(-700), zero to any use), and
// tanh's input only where |x| <= 20 (beyond, tanh is +-1 in both types).
// -ffast-math also lets the compiler assume no NaN, folding float tests for
// one away; is_nan reads the bits, so a NaN input still gives NaN.
template <typename T>
inline bool is_nan(T x) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
  Bits bits;
  std::memcpy(&bits, &x, sizeof(T));
  return (bits & ~(Bits(1) << (8 * sizeof(T) - 1))) > exponent;
}

template <typename T>
inline T sigmoid(T x) {
  constexpr T limit = sizeof(T) == 4 ? T(80) : T(700);
  const T s = T(1) / (T(1) + std::exp(x >= -limit ? -x : limit));
  return is_nan(x) ? x : s;
}

template <typename T>
inline T saturating_tanh(T x) {
  const T t = std::tanh(std::fabs(x) > T(20) ? std::copysign(T(20), x) : x);
  return is_nan(x) ? x : t;
}

// The activations the fused paths know (_native.ACTIVATIONS).
enum Act : int64_t { kTanh = 0, kSigmoid = 1, kRelu = 2, kLinear = 3 };

// The activation in place over n values; the switch stays outside the loops so
// that each loop vectorises (exp and tanh through the vector math library).
template <typename T>
void activate(T* __restrict x, int64_t n, int64_t act) {
  switch (act) {
    case kTanh:
      for (int64_t j = 0; j < n; ++j) x[j] = saturating_tanh(x[j]);
      break;
    case kSigmoid:
      for (int64_t j = 0; j < n; ++j) x[j] = sigmoid(x[j]);
      break;
    case kRelu:
      for (int64_t j = 0; j < n; ++j) x[j] = x[j] > T(0) ? x[j] : T(0);
      break;
    default:
      break;
  }
}

// d *= act'(pre) over n values, the derivative written from the activation's
// output a = act(pre) (relu: a > 0, as torch's threshold_backward).
template <typename T>
void times_derivative(T* __restrict d, const T* __restrict a, int64_t n, int64_t act) {
  switch (act) {
    case kTanh:
      for (int64_t j = 0; j < n; ++j) d[j] *= T(1) - a[j] * a[j];
      break;
    case kSigmoid:
      for (int64_t j = 0; j < n; ++j) d[j] *= a[j] * (T(1) - a[j]);
      break;
    case kRelu:
      for (int64_t j = 0; j < n; ++j) d[j] = a[j] > T(0) ? d[j] : T(0);
      break;
    default:
      break;
  }
}

// Rows of a (rows, width) buffer with unit column stride (rows may be
// strided: views into wider buffers). A buffer of width 1 (a per-row factor
// such as AGRU's score) is read as that one value for every column: col = 0.
template <typename T>
struct Rows {
  T* data = nullptr;
  int64_t row = 0, col = 1;

  Rows() = default;
  explicit Rows(const at::Tensor& x) : data(x.data_ptr<T>()) {
    TORCH_CHECK(x.dim() == 2 && (x.stride(1) == 1 || x.size(1) == 1),
                "recurrence buffers must be (rows, W) with unit last stride");
    row = x.stride(0);
    col = x.size(1) == 1 ? 0 : 1;
  }
  explicit operator bool() const { return data != nullptr; }
  T* at(int64_t i) const { return data + i * row; }
};

template <typename T>
Rows<T> optional_rows(const c10::optional<at::Tensor>& x) {
  return x.has_value() && x->defined() ? Rows<T>(*x) : Rows<T>();
}

// One step over the batch: fn(begin, end) on row ranges, in parallel when each
// thread gets at least kGrainWork multiply-adds (work_per_row of them per row).
template <typename Fn>
void row_chunks(int64_t batch, int64_t work_per_row, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, kGrainWork / std::max<int64_t>(work_per_row, 1));
  at::parallel_for(0, batch, grain, fn);
}

// ------------------------------------------------------------ small matmuls
//
// The per-step matmuls are (rows, K) @ (K, N) with K and N the unit count (or
// 2-3 times it): too small for a BLAS call to amortise its threading, so each
// thread multiplies its own rows here, right beside the elementwise work.

// A's element (r, k): A is (rows, K) with row stride lda, or, transposed
// (kTransposed), A is given as its transpose (K, rows) with row stride lda.
template <typename T, bool kTransposed>
inline T a_at(const T* a, int64_t lda, int64_t r, int64_t k) {
  return kTransposed ? a[k * lda + r] : a[r * lda + k];
}

// C[r, :NB] += A[r, :K] @ W[:K, :NB] for R rows, W's rows N apart. The R
// accumulators are vectors of one cache line each (GCC / Clang vector types),
// held in registers through the k loop.
template <typename T, int R, int NB, bool kTransposed>
inline void gemm_block(const T* __restrict a, int64_t lda, const T* __restrict w, int64_t k_size,
                       int64_t n_size, T* __restrict c, int64_t ldc) {
  typedef T Vec __attribute__((vector_size(NB * sizeof(T))));
  Vec acc[R];
  for (int r = 0; r < R; ++r) __builtin_memcpy(&acc[r], c + r * ldc, sizeof(Vec));
  for (int64_t k = 0; k < k_size; ++k) {
    Vec wk;
    __builtin_memcpy(&wk, w + k * n_size, sizeof(Vec));
    for (int r = 0; r < R; ++r) acc[r] += a_at<T, kTransposed>(a, lda, r, k) * wk;
  }
  for (int r = 0; r < R; ++r) __builtin_memcpy(c + r * ldc, &acc[r], sizeof(Vec));
}

// The last rows - r < 8 rows of gemm_rows, in one block of that many rows.
template <typename T, int NB, bool kTransposed>
inline void gemm_tail(int64_t tail, const T* a, int64_t lda, const T* w, int64_t k_size,
                      int64_t n_size, T* c, int64_t ldc) {
  switch (tail) {
#define MONOLITH_TAIL(R) \
  case R:                \
    return gemm_block<T, R, NB, kTransposed>(a, lda, w, k_size, n_size, c, ldc);
    MONOLITH_TAIL(1)
    MONOLITH_TAIL(2)
    MONOLITH_TAIL(3)
    MONOLITH_TAIL(4)
    MONOLITH_TAIL(5)
    MONOLITH_TAIL(6)
    MONOLITH_TAIL(7)
#undef MONOLITH_TAIL
    default:
      return;
  }
}

// Columns n0 .. n0 + NB of C[:rows] += A[:rows, :K] @ W: rows in blocks of 8
// and one block of the rest.
template <typename T, int NB, bool kTransposed>
inline void gemm_column_block(const T* a, int64_t lda, const T* w, int64_t k_size, int64_t n_size,
                              T* c, int64_t ldc, int64_t rows, int64_t n0) {
  auto a_rows = [&](int64_t r) { return kTransposed ? a + r : a + r * lda; };
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8)
    gemm_block<T, 8, NB, kTransposed>(a_rows(r), lda, w + n0, k_size, n_size, c + r * ldc + n0, ldc);
  gemm_tail<T, NB, kTransposed>(rows - r, a_rows(r), lda, w + n0, k_size, n_size,
                                c + r * ldc + n0, ldc);
}

// C[:rows, :N] += A[:rows, :K] @ W, W (K, N) contiguous; A as in a_at. The
// columns go in blocks of one cache line, then of a half and a quarter line
// (a width of 40 floats is 16 + 16 + 8), the last few one by one.
template <typename T, bool kTransposed = false>
void gemm_rows(const T* a, int64_t lda, const T* w, int64_t k_size, int64_t n_size, T* c,
               int64_t ldc, int64_t rows) {
  constexpr int NB = 64 / sizeof(T);
  int64_t n0 = 0;
  for (; n0 + NB <= n_size; n0 += NB)
    gemm_column_block<T, NB, kTransposed>(a, lda, w, k_size, n_size, c, ldc, rows, n0);
  if (n0 + NB / 2 <= n_size) {
    gemm_column_block<T, NB / 2, kTransposed>(a, lda, w, k_size, n_size, c, ldc, rows, n0);
    n0 += NB / 2;
  }
  if (n0 + NB / 4 <= n_size) {
    gemm_column_block<T, NB / 4, kTransposed>(a, lda, w, k_size, n_size, c, ldc, rows, n0);
    n0 += NB / 4;
  }
  // The last columns (a tower's single output unit) one at a time, each with
  // the loop over A's contiguous axis innermost, so that it vectorises rather
  // than chaining one scalar multiply-add per k.
  for (int64_t n = n0; n < n_size; ++n) {
    if (kTransposed) {
      for (int64_t k = 0; k < k_size; ++k) {
        const T wk = w[k * n_size + n];
        const T* __restrict ak = a + k * lda;
        for (int64_t r = 0; r < rows; ++r) c[r * ldc + n] += ak[r] * wk;
      }
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict ar = a + r * lda;
        T total = 0;
        for (int64_t k = 0; k < k_size; ++k) total += ar[k] * w[k * n_size + n];
        c[r * ldc + n] += total;
      }
    }
  }
}

// A dense layer as Monolith's MLP builds it: kernel V (in, out), learnable
// column norms g (out), bias (out), all contiguous.
struct DenseWeights {
  at::Tensor v, g, bias;
};

// Dense.effective_kernel with weight norm: column j of V times
// g[j] / sqrt(max(sum_i V[i, j]^2, eps)).
template <typename T>
inline at::Tensor effective_kernel(const DenseWeights& d, double eps) {
  const int64_t rows = d.v.size(0), cols = d.v.size(1);
  at::Tensor k = at::empty_like(d.v);
  const T* v = d.v.data_ptr<T>();
  const T* g = d.g.data_ptr<T>();
  T* kp = k.data_ptr<T>();
  for (int64_t j = 0; j < cols; ++j) {
    T n2 = 0;
    for (int64_t i = 0; i < rows; ++i) n2 += v[i * cols + j] * v[i * cols + j];
    const T scale = g[j] / std::sqrt(std::max(n2, T(eps)));
    for (int64_t i = 0; i < rows; ++i) kp[i * cols + j] = v[i * cols + j] * scale;
  }
  return k;
}

// dV and dg from dK for the weight norm above. Per column, with n2 the squared
// norm, r = 1 / sqrt(max(n2, eps)) and m = sum_i dK[i] V[i]:
//   dg = r m,   dV = g r dK - g r^3 m V   (the second term only where n2 >= eps,
// as the clamp passes the gradient in torch).
template <typename T>
inline std::pair<at::Tensor, at::Tensor> effective_kernel_backward(const DenseWeights& d,
                                                            const at::Tensor& d_k, double eps) {
  const int64_t rows = d.v.size(0), cols = d.v.size(1);
  at::Tensor d_v = at::empty_like(d.v), d_g = at::empty_like(d.g);
  const T* v = d.v.data_ptr<T>();
  const T* g = d.g.data_ptr<T>();
  const T* dk = d_k.data_ptr<T>();
  T* dv = d_v.data_ptr<T>();
  T* dg = d_g.data_ptr<T>();
  for (int64_t j = 0; j < cols; ++j) {
    T n2 = 0, m = 0;
    for (int64_t i = 0; i < rows; ++i) {
      n2 += v[i * cols + j] * v[i * cols + j];
      m += dk[i * cols + j] * v[i * cols + j];
    }
    const T r = T(1) / std::sqrt(std::max(n2, T(eps)));
    dg[j] = r * m;
    const T direct = g[j] * r, through_norm = n2 >= T(eps) ? g[j] * r * r * r * m : T(0);
    for (int64_t i = 0; i < rows; ++i)
      dv[i * cols + j] = direct * dk[i * cols + j] - through_norm * v[i * cols + j];
  }
  return {d_v, d_g};
}

// into += from, elementwise (per-thread partial sums into a total).
template <typename T>
void add_into(std::vector<T>& into, const std::vector<T>& from) {
  for (size_t i = 0; i < into.size(); ++i) into[i] += from[i];
}

// A copy of v as a tensor of the given shape and options.
template <typename T>
at::Tensor to_tensor(const std::vector<T>& v, at::IntArrayRef shape,
                     const at::TensorOptions& options) {
  return at::from_blob(const_cast<T*>(v.data()), shape, options).clone();
}

inline void check_cpu(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be on the CPU");
}

}  // namespace monolith_native
