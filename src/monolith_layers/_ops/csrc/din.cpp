// DIN's attention pooling (feature_seq.py) one row of the batch at a time:
// the row's real keys, the tower's activations over them and the pooling stay
// in cache, where the tensor ops write and read back (B, T, hidden) buffers
// per layer, forward and backward.
//
// Row b with query q (H) and its real keys k_t (T_b x H; padded positions are
// never read, so a NaN there cannot leak in):
//   layer 1: z_t = q (W1 + W3) + b1 + k_t A_b,  A_b = (W2 - W3) + diag(q) W4,
//            the factored form of [q, k, q - k, q * k] W (feature_seq.DIN);
//   layer l: z = act(z_prev) K_l + b_l, the last of width 1: the logits w_t;
//            act may be PReLU, max(z, 0) + alpha min(z, 0) with alpha per unit;
//   w_t /= sqrt(H) with decay;  out = sum_t w_t k_t ('sum') or k_t w_t.
// The tower's kernels are weight-normalised here (Dense.effective_kernel) from
// the raw V, g of each layer, so that autograd has no small ops of its own to
// run. For the backward the forward keeps the logits and, when asked to, the
// hidden activations of the real positions only (rows packed one after the
// other); the backward runs the chain rule down the tower, summing weight
// gradients per thread. With P = W1 + W3 and Q = W2 - W3 learnt through W:
//   dP = q^T sum_t dz1_t,  dQ = dA = K_b^T dZ1,  dW4 = diag(q) dA,
//   so dW1 = dP, dW2 = dQ, dW3 = dP - dQ.

#include "common.h"
#include "kernels.h"

#include <vector>

namespace {

using namespace monolith_native;

// PReLU, an activation of DIN's towers only (the CTR model's default): its
// slope's gradient needs the pre-activation, so a PReLU layer keeps z (not
// act(z)) for the backward and recomputes act(z) there.
constexpr int64_t kPrelu = 4;

// The tower as the kernels read it. widths = h_1 .. h_L (h_L = 1); acts[l] is
// the activation after layer l + 1 (L - 1 of them); slopes[l] its PReLU slopes
// (nullptr for another activation).
template <typename T>
struct DinTower {
  int64_t h = 0;
  std::vector<int64_t> widths, acts;
  std::vector<const T*> slopes;
  at::Tensor p, q, w4, qt, w4t;  // (H, h1) x 3 and the transposes (h1, H) of Q, W4
  std::vector<at::Tensor> kernels, kernels_t, biases;  // K_l, K_l^T (l >= 2); b_l (l >= 1)

  int64_t layers() const { return int64_t(widths.size()); }
  int64_t widest() const { return *std::max_element(widths.begin(), widths.end()); }
  const T* kernel(int64_t l) const { return kernels[l - 1].template data_ptr<T>(); }
  const T* kernel_t(int64_t l) const { return kernels_t[l - 1].template data_ptr<T>(); }
  const T* bias(int64_t l) const { return biases[l].template data_ptr<T>(); }
};

// layers = [V1, g1, b1, V2, g2, b2, ...], every kernel weight-normalised here.
template <typename T>
DinTower<T> make_tower(int64_t h, const std::vector<at::Tensor>& layers,
                       const std::vector<int64_t>& acts, const std::vector<at::Tensor>& slopes,
                       double eps) {
  DinTower<T> tower;
  tower.h = h;
  tower.acts = acts;
  for (size_t l = 0; l < acts.size(); ++l)
    tower.slopes.push_back(acts[l] == kPrelu ? slopes[l].template data_ptr<T>() : nullptr);
  for (size_t i = 0; i < layers.size(); i += 3) {
    const DenseWeights dense{layers[i].contiguous(), layers[i + 1].contiguous(),
                             layers[i + 2].contiguous()};
    const at::Tensor k = effective_kernel<T>(dense, eps);
    tower.widths.push_back(k.size(1));
    tower.biases.push_back(dense.bias);
    if (i == 0) {
      const auto blocks = k.split(h, 0);
      tower.p = (blocks[0] + blocks[2]).contiguous();
      tower.q = (blocks[1] - blocks[2]).contiguous();
      tower.w4 = blocks[3].contiguous();
      tower.qt = tower.q.t().contiguous();
      tower.w4t = tower.w4.t().contiguous();
    } else {
      tower.kernels.push_back(k);
      tower.kernels_t.push_back(k.t().contiguous());
    }
  }
  return tower;
}

// One row's buffers (per thread): its real keys (when some are padded), their
// positions, A_b and every layer's activations over the row's keys.
template <typename T>
struct DinRow {
  std::vector<T> keys, a_kernel, first_bias;
  std::vector<int64_t> positions;
  std::vector<std::vector<T>> scratch;  // layer l: (T_b, h_l); the last holds the logits
  std::vector<T*> acts;                 // where layer l's activations are: scratch or saved
  std::vector<std::vector<T>> post;     // a PReLU layer's act(z), what the next layer reads
  const T* k = nullptr;                 // the row's real keys (T_b, H)
  int64_t steps = 0;                    // T_b

  DinRow(const DinTower<T>& tower, int64_t max_steps)
      : keys(max_steps * tower.h), a_kernel(tower.h * tower.widths[0]),
        first_bias(tower.widths[0]), positions(max_steps) {
    for (int64_t width : tower.widths) {
      scratch.emplace_back(max_steps * width);
      acts.push_back(scratch.back().data());
      post.emplace_back();
    }
    for (size_t l = 0; l < tower.slopes.size(); ++l)
      if (tower.slopes[l]) post[l].resize(max_steps * tower.widths[l]);
  }

  // What layer l + 1 reads of hidden layer l: act(z), in place or (PReLU) beside z.
  const T* output(const DinTower<T>& tower, int64_t l) const {
    return tower.slopes[l] ? post[l].data() : acts[l];
  }

  // Hidden layer l's activation over the row's steps; for PReLU, from the z in
  // acts[l] into post[l], leaving z for the backward.
  void activate_layer(const DinTower<T>& tower, int64_t l) {
    const int64_t width = tower.widths[l];
    if (!tower.slopes[l]) {
      activate(acts[l], steps * width, tower.acts[l]);
      return;
    }
    const T* __restrict z = acts[l];
    const T* __restrict alpha = tower.slopes[l];
    T* __restrict out = post[l].data();
    for (int64_t s = 0; s < steps; ++s)
      for (int64_t j = 0; j < width; ++j) {
        const T v = z[s * width + j];
        out[s * width + j] = v > T(0) ? v : alpha[j] * v;
      }
  }

  // The row's real keys: all T of them without a mask (read in place), else
  // gathered into this row's buffer, positions kept for the scatter back.
  void gather(const T* row_keys, const bool* row_mask, int64_t t_size, int64_t h) {
    if (!row_mask) {
      k = row_keys;
      steps = t_size;
      for (int64_t t = 0; t < t_size; ++t) positions[t] = t;
      return;
    }
    steps = 0;
    for (int64_t t = 0; t < t_size; ++t) {
      if (!row_mask[t]) continue;
      std::copy(row_keys + t * h, row_keys + (t + 1) * h, keys.data() + steps * h);
      positions[steps++] = t;
    }
    k = keys.data();
  }

  // Hidden layer l's activations at the row's place in the saved (P, h_l)
  // tensors (saved[l] == nullptr: this row's scratch).
  void place(const std::vector<T*>& saved, int64_t first_position, const DinTower<T>& tower) {
    for (size_t l = 0; l < saved.size(); ++l)
      acts[l] = saved[l] ? saved[l] + first_position * tower.widths[l] : scratch[l].data();
  }

  // The tower over the row's keys; returns the logits (T_b) before decay.
  const T* forward(const DinTower<T>& tower, const T* query) {
    const int64_t h = tower.h, h1 = tower.widths[0];
    const T* p = tower.p.template data_ptr<T>();
    const T* q = tower.q.template data_ptr<T>();
    const T* w4 = tower.w4.template data_ptr<T>();
    std::copy(tower.bias(0), tower.bias(0) + h1, first_bias.data());
    for (int64_t i = 0; i < h; ++i) {
      const T qi = query[i];
      T* __restrict c = first_bias.data();
      T* __restrict a = a_kernel.data() + i * h1;
      for (int64_t j = 0; j < h1; ++j) {
        c[j] += qi * p[i * h1 + j];
        a[j] = q[i * h1 + j] + qi * w4[i * h1 + j];
      }
    }
    for (int64_t l = 0; l < tower.layers(); ++l) {
      const int64_t width = tower.widths[l];
      T* z = acts[l];
      const T* bias = l == 0 ? first_bias.data() : tower.bias(l);
      for (int64_t t = 0; t < steps; ++t) std::copy(bias, bias + width, z + t * width);
      if (l == 0)
        gemm_rows(k, h, a_kernel.data(), h, width, z, width, steps);
      else
        gemm_rows(output(tower, l - 1), tower.widths[l - 1], tower.kernel(l), tower.widths[l - 1],
                  width, z, width, steps);
      if (l + 1 < tower.layers()) activate_layer(tower, l);
    }
    return acts.back();
  }
};

// Each row's first position in the packed (P, .) buffers, and P, from the mask.
std::vector<int64_t> row_offsets(const at::Tensor& mask, int64_t batch, int64_t t_size) {
  std::vector<int64_t> offsets(batch + 1, 0);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t count = t_size;
    if (mask.defined()) {
      const bool* m = mask.data_ptr<bool>() + b * mask.stride(0);
      count = std::count(m, m + t_size, true);
    }
    offsets[b + 1] = offsets[b] + count;
  }
  return offsets;
}

const bool* row_flags(const at::Tensor& mask, int64_t b) {
  return mask.defined() ? mask.data_ptr<bool>() + b * mask.stride(0) : nullptr;
}

template <typename T>
void din_forward_impl(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& mask,
                      const DinTower<T>& tower, bool sum_mode, double decay,
                      const at::Tensor& out, const at::Tensor& weights,
                      const std::vector<int64_t>& offsets, const std::vector<T*>& saved) {
  const int64_t batch = keys.size(0), t_size = keys.size(1), h = keys.size(2);
  const T* q_p = queries.data_ptr<T>();
  const T* k_p = keys.data_ptr<T>();
  T* out_p = out.data_ptr<T>();
  T* w_p = weights.data_ptr<T>();
  int64_t per_row = 0;
  for (int64_t l = 0, in = h; l < tower.layers(); in = tower.widths[l++])
    per_row += t_size * in * tower.widths[l];
  row_chunks(batch, per_row, [&](int64_t begin, int64_t end) {
    DinRow<T> row(tower, t_size);
    for (int64_t b = begin; b < end; ++b) {
      row.gather(k_p + b * t_size * h, row_flags(mask, b), t_size, h);
      row.place(saved, offsets[b], tower);
      const T* logits = row.forward(tower, q_p + b * h);
      T* w = w_p + b * t_size;
      std::fill(w, w + t_size, T(0));
      for (int64_t s = 0; s < row.steps; ++s) w[row.positions[s]] = logits[s] / T(decay);
      if (sum_mode) {
        T* __restrict o = out_p + b * h;
        std::fill(o, o + h, T(0));
        for (int64_t s = 0; s < row.steps; ++s) {
          const T ws = w[row.positions[s]];
          const T* __restrict ks = row.k + s * h;
          for (int64_t i = 0; i < h; ++i) o[i] += ws * ks[i];
        }
      } else {
        T* o = out_p + b * t_size * h;
        std::fill(o, o + t_size * h, T(0));
        for (int64_t s = 0; s < row.steps; ++s) {
          const int64_t t = row.positions[s];
          const T* __restrict ks = row.k + s * h;
          T* __restrict ot = o + t * h;
          for (int64_t i = 0; i < h; ++i) ot[i] = ks[i] * w[t];
        }
      }
    }
  });
}

// The weights' gradients one thread sums: dP, dQ, dW4 (H, h1), db_l, dK_l.
template <typename T>
struct DinGrads {
  std::vector<T> p, q, w4;
  std::vector<std::vector<T>> kernels, biases, slopes;  // slopes: PReLU layers only

  explicit DinGrads(const DinTower<T>& tower) {
    for (size_t l = 0; l < tower.slopes.size(); ++l)
      slopes.emplace_back(tower.slopes[l] ? tower.widths[l] : 0, T(0));
    const int64_t first = tower.h * tower.widths[0];
    p.assign(first, T(0));
    q.assign(first, T(0));
    w4.assign(first, T(0));
    for (int64_t l = 0; l < tower.layers(); ++l) {
      biases.emplace_back(tower.widths[l], T(0));
      if (l) kernels.emplace_back(tower.widths[l - 1] * tower.widths[l], T(0));
    }
  }
};

template <typename T>
void add_column_sums(const T* __restrict rows, int64_t n, int64_t width, T* __restrict sums) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < width; ++j) sums[j] += rows[r * width + j];
}

// d *= PReLU'(z) over (n, width) values, and d_alpha += sum over rows of
// d * min(z, 0) (torch's convention at z = 0: the slope side).
template <typename T>
void prelu_backward(T* __restrict d, const T* __restrict z, const T* __restrict alpha, int64_t n,
                    int64_t width, T* __restrict d_alpha) {
  for (int64_t s = 0; s < n; ++s)
    for (int64_t j = 0; j < width; ++j) {
      const T v = z[s * width + j];
      T& g = d[s * width + j];
      if (v > T(0)) continue;
      d_alpha[j] += g * v;
      g *= alpha[j];
    }
}

template <typename T>
void din_backward_impl(const at::Tensor& d_out, const at::Tensor& queries,
                       const at::Tensor& keys, const at::Tensor& mask, const DinTower<T>& tower,
                       bool sum_mode, double decay, const at::Tensor& weights,
                       const std::vector<int64_t>& offsets, const std::vector<T*>& saved,
                       const at::Tensor& d_queries, const at::Tensor& d_keys,
                       std::vector<DinGrads<T>>& grads) {
  const int64_t batch = keys.size(0), t_size = keys.size(1), h = keys.size(2);
  const int64_t h1 = tower.widths[0], widest = std::max(tower.widest(), h);
  const T* g_p = d_out.data_ptr<T>();
  const T* q_p = queries.data_ptr<T>();
  const T* k_p = keys.data_ptr<T>();
  const T* w_p = weights.data_ptr<T>();
  T* dq_p = d_queries.defined() ? d_queries.data_ptr<T>() : nullptr;
  T* dk_p = d_keys.defined() ? d_keys.data_ptr<T>() : nullptr;
  const T* p = tower.p.template data_ptr<T>();
  const T* w4 = tower.w4.template data_ptr<T>();
  const T* qt = tower.qt.template data_ptr<T>();
  const T* w4t = tower.w4t.template data_ptr<T>();
  int64_t per_row = 0;
  for (int64_t l = 0, in = h; l < tower.layers(); in = tower.widths[l++])
    per_row += 2 * t_size * in * tower.widths[l];
  row_chunks(batch, per_row, [&](int64_t begin, int64_t end) {
    DinGrads<T>& sums = grads[at::get_thread_num()];
    DinRow<T> row(tower, t_size);
    std::vector<T> dz(t_size * widest), da(t_size * widest), dc(h1), d_a(h * h1);
    std::vector<T> a_t(h1 * h), dk_rows(t_size * h);
    for (int64_t b = begin; b < end; ++b) {
      const T* query = q_p + b * h;
      row.gather(k_p + b * t_size * h, row_flags(mask, b), t_size, h);
      row.place(saved, offsets[b], tower);
      const int64_t n = row.steps;
      const T* w = w_p + b * t_size;
      // dL/dw_t through the pooling, then through the decay.
      for (int64_t s = 0; s < n; ++s) {
        const int64_t t = row.positions[s];
        const T* __restrict g = sum_mode ? g_p + b * h : g_p + (b * t_size + t) * h;
        const T* __restrict ks = row.k + s * h;
        T total = 0;
        for (int64_t i = 0; i < h; ++i) total += g[i] * ks[i];
        dz[s] = total / T(decay);
        if (dk_p) {
          T* __restrict dks = dk_rows.data() + s * h;
          for (int64_t i = 0; i < h; ++i) dks[i] = g[i] * w[t];
        }
      }
      for (int64_t l = tower.layers() - 1; l >= 1; --l) {
        const int64_t in = tower.widths[l - 1], width = tower.widths[l];
        if (tower.slopes[l - 1]) row.activate_layer(tower, l - 1);  // act(z) from the saved z
        const T* a_in = row.output(tower, l - 1);
        gemm_rows<T, true>(a_in, in, dz.data(), n, width, sums.kernels[l - 1].data(), width, in);
        add_column_sums(dz.data(), n, width, sums.biases[l].data());
        std::fill(da.begin(), da.begin() + n * in, T(0));
        gemm_rows(dz.data(), width, tower.kernel_t(l), width, in, da.data(), in, n);
        if (tower.slopes[l - 1])
          prelu_backward(da.data(), row.acts[l - 1], tower.slopes[l - 1], n, in,
                         sums.slopes[l - 1].data());
        else
          times_derivative(da.data(), a_in, n * in, tower.acts[l - 1]);
        std::swap(dz, da);
      }
      // Layer 1: dz holds dZ1 (T_b, h1).
      std::fill(dc.begin(), dc.end(), T(0));
      add_column_sums(dz.data(), n, h1, dc.data());
      for (int64_t j = 0; j < h1; ++j) sums.biases[0][j] += dc[j];
      std::fill(d_a.begin(), d_a.end(), T(0));
      gemm_rows<T, true>(row.k, h, dz.data(), n, h1, d_a.data(), h1, h);  // K_b^T dZ1
      for (int64_t i = 0; i < h; ++i) {
        const T qi = query[i];
        T* __restrict dp_i = sums.p.data() + i * h1;
        T* __restrict dq_i = sums.q.data() + i * h1;
        T* __restrict dw4_i = sums.w4.data() + i * h1;
        const T* __restrict da_i = d_a.data() + i * h1;
        for (int64_t j = 0; j < h1; ++j) {
          dp_i[j] += qi * dc[j];
          dq_i[j] += da_i[j];
          dw4_i[j] += qi * da_i[j];
        }
      }
      if (dq_p) {
        T* __restrict dq = dq_p + b * h;
        for (int64_t i = 0; i < h; ++i) {
          T total = 0;
          for (int64_t j = 0; j < h1; ++j) total += dc[j] * p[i * h1 + j] + d_a[i * h1 + j] * w4[i * h1 + j];
          dq[i] = total;
        }
      }
      if (dk_p) {
        // dk_t += dz1_t A_b^T, A_b^T = Q^T + W4^T diag(q).
        for (int64_t j = 0; j < h1; ++j)
          for (int64_t i = 0; i < h; ++i) a_t[j * h + i] = qt[j * h + i] + w4t[j * h + i] * query[i];
        gemm_rows(dz.data(), h1, a_t.data(), h1, h, dk_rows.data(), h, n);
        T* dk = dk_p + b * t_size * h;
        for (int64_t s = 0; s < n; ++s)
          std::copy(dk_rows.data() + s * h, dk_rows.data() + (s + 1) * h,
                    dk + row.positions[s] * h);
      }
    }
  });
}

std::vector<int64_t> check_din(const at::Tensor& queries, const at::Tensor& keys,
                               const c10::optional<at::Tensor>& mask,
                               const std::vector<at::Tensor>& layers,
                               const std::vector<int64_t>& acts,
                               const std::vector<at::Tensor>& slopes) {
  check_cpu(keys, "keys");
  TORCH_CHECK(keys.dim() == 3 && keys.is_contiguous(), "keys must be a contiguous (B, T, H) tensor");
  const int64_t batch = keys.size(0), t_size = keys.size(1), h = keys.size(2);
  TORCH_CHECK(queries.sizes() == at::IntArrayRef({batch, h}) && queries.is_contiguous(),
              "queries must be a contiguous (B, H) tensor");
  TORCH_CHECK(!mask.has_value() || !mask->defined() ||
                  (mask->scalar_type() == at::kBool &&
                   mask->sizes() == at::IntArrayRef({batch, t_size}) && mask->stride(1) == 1),
              "mask must be a (B, T) bool tensor with unit last stride");
  TORCH_CHECK(!layers.empty() && layers.size() % 3 == 0 && acts.size() == layers.size() / 3 - 1,
              "the tower must be V, g, b per layer and one activation per hidden layer");
  int64_t in = 4 * h;
  for (size_t i = 0; i < layers.size(); i += 3) {
    const at::Tensor &v = layers[i], &g = layers[i + 1], &b = layers[i + 2];
    TORCH_CHECK(v.dim() == 2 && v.size(0) == in && g.numel() == v.size(1) &&
                    b.numel() == v.size(1) && v.scalar_type() == keys.scalar_type() &&
                    g.scalar_type() == keys.scalar_type() && b.scalar_type() == keys.scalar_type(),
                "the tower's layers must chain from 4H inputs, in the keys' dtype");
    in = v.size(1);
  }
  TORCH_CHECK(in == 1, "the tower must end in one unit");
  TORCH_CHECK(slopes.size() == acts.size(), "slopes must hold one tensor per hidden layer");
  for (size_t l = 0; l < acts.size(); ++l)
    TORCH_CHECK(acts[l] != kPrelu ||
                    (slopes[l].is_contiguous() && slopes[l].numel() == layers[3 * l].size(1) &&
                     slopes[l].scalar_type() == keys.scalar_type()),
                "a PReLU layer's slopes must be a contiguous (h_l) tensor in the keys' dtype");
  return {batch, t_size, h};
}

at::Tensor defined_mask(const c10::optional<at::Tensor>& mask) {
  return mask.has_value() && mask->defined() ? *mask : at::Tensor();
}

template <typename T>
std::vector<T*> saved_pointers(const std::vector<at::Tensor>& hidden, size_t layers) {
  std::vector<T*> saved(layers, nullptr);
  for (size_t l = 0; l < hidden.size(); ++l) saved[l] = hidden[l].data_ptr<T>();
  return saved;
}

}  // namespace

// queries (B, H), keys (B, T, H), mask (B, T) or None, the tower's raw layers
// [V1, g1, b1, V2, ...] and hidden activations' codes. Returns out ((B, H) for
// 'sum', else (B, T, H)), the attention weights (B, T) after decay (zero at
// padded positions) and, when save, each hidden layer's activations at the
// real positions, packed row after row: (P, h_l) (a PReLU layer's z instead).
std::vector<at::Tensor> din_forward(const at::Tensor& queries, const at::Tensor& keys,
                                    const c10::optional<at::Tensor>& mask,
                                    const std::vector<at::Tensor>& layers,
                                    const std::vector<int64_t>& acts,
                                    const std::vector<at::Tensor>& slopes, bool sum_mode,
                                    double decay, double eps, bool save) {
  const auto dims = check_din(queries, keys, mask, layers, acts, slopes);
  const at::Tensor flags = defined_mask(mask);
  at::Tensor out = sum_mode ? at::empty({dims[0], dims[2]}, keys.options()) : at::empty_like(keys);
  at::Tensor weights = at::empty({dims[0], dims[1]}, keys.options());
  std::vector<at::Tensor> results{out, weights};
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "din_forward", [&] {
    const auto tower = make_tower<scalar_t>(dims[2], layers, acts, slopes, eps);
    const auto offsets = row_offsets(flags, dims[0], dims[1]);
    if (save)
      for (int64_t l = 0; l + 1 < tower.layers(); ++l)
        results.push_back(at::empty({offsets.back(), tower.widths[l]}, keys.options()));
    const std::vector<at::Tensor> hidden(results.begin() + 2, results.end());
    din_forward_impl<scalar_t>(queries, keys, flags, tower, sum_mode, decay, out, weights, offsets,
                               saved_pointers<scalar_t>(hidden, tower.layers()));
  });
  return results;
}

// From what din_forward saved (weights, hidden): d_queries and d_keys
// (undefined unless asked for), then per layer dV, dg, db, then per hidden
// layer d_slopes (empty for a layer that is not PReLU).
std::vector<at::Tensor> din_backward(const at::Tensor& d_out, const at::Tensor& queries,
                                     const at::Tensor& keys, const c10::optional<at::Tensor>& mask,
                                     const std::vector<at::Tensor>& layers,
                                     const std::vector<int64_t>& acts,
                                     const std::vector<at::Tensor>& slopes, bool sum_mode,
                                     double decay, double eps, const at::Tensor& weights,
                                     const std::vector<at::Tensor>& hidden, bool need_queries,
                                     bool need_keys) {
  const auto dims = check_din(queries, keys, mask, layers, acts, slopes);
  const at::Tensor flags = defined_mask(mask);
  TORCH_CHECK(d_out.is_contiguous() &&
                  d_out.sizes() == (sum_mode ? at::IntArrayRef({dims[0], dims[2]}) : keys.sizes()),
              "d_out must be contiguous, shaped like the output");
  TORCH_CHECK(hidden.size() == layers.size() / 3 - 1, "hidden must be what din_forward saved");
  at::Tensor d_queries = need_queries ? at::empty_like(queries) : at::Tensor();
  at::Tensor d_keys = need_keys ? at::zeros_like(keys) : at::Tensor();
  std::vector<at::Tensor> results{d_queries, d_keys};
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "din_backward", [&] {
    const auto tower = make_tower<scalar_t>(dims[2], layers, acts, slopes, eps);
    const auto offsets = row_offsets(flags, dims[0], dims[1]);
    for (int64_t l = 0; l + 1 < tower.layers(); ++l)
      TORCH_CHECK(hidden[l].is_contiguous() &&
                      hidden[l].sizes() == at::IntArrayRef({offsets.back(), tower.widths[l]}),
                  "hidden must be what din_forward saved");
    std::vector<DinGrads<scalar_t>> grads(at::get_num_threads(), DinGrads<scalar_t>(tower));
    din_backward_impl<scalar_t>(d_out, queries, keys, flags, tower, sum_mode, decay, weights,
                                offsets, saved_pointers<scalar_t>(hidden, tower.layers()),
                                d_queries, d_keys, grads);
    DinGrads<scalar_t> total(tower);
    for (const auto& g : grads) {
      add_into(total.p, g.p);
      add_into(total.q, g.q);
      add_into(total.w4, g.w4);
      for (size_t l = 0; l < total.biases.size(); ++l) add_into(total.biases[l], g.biases[l]);
      for (size_t l = 0; l < total.kernels.size(); ++l) add_into(total.kernels[l], g.kernels[l]);
      for (size_t l = 0; l < total.slopes.size(); ++l) add_into(total.slopes[l], g.slopes[l]);
    }
    const auto as_tensor = [&](const std::vector<scalar_t>& v, at::IntArrayRef shape) {
      return to_tensor(v, shape, keys.options());
    };
    const int64_t h = dims[2], h1 = tower.widths[0];
    const at::Tensor d_p = as_tensor(total.p, {h, h1}), d_q = as_tensor(total.q, {h, h1});
    for (int64_t l = 0; l < tower.layers(); ++l) {
      const at::Tensor d_kernel =
          l == 0 ? at::cat({d_p, d_q, d_p - d_q, as_tensor(total.w4, {h, h1})}, 0)
                 : as_tensor(total.kernels[l - 1], {tower.widths[l - 1], tower.widths[l]});
      const DenseWeights dense{layers[3 * l].contiguous(), layers[3 * l + 1].contiguous(),
                               layers[3 * l + 2]};
      const auto [d_v, d_g] = effective_kernel_backward<scalar_t>(dense, d_kernel, eps);
      results.insert(results.end(), {d_v, d_g, as_tensor(total.biases[l], {tower.widths[l]})});
    }
    for (size_t l = 0; l < total.slopes.size(); ++l)
      results.push_back(as_tensor(total.slopes[l], {int64_t(total.slopes[l].size())}));
  });
  return results;
}
