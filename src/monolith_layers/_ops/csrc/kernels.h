// The kernels' entry points, as module.cpp binds them. Only ATen types
// appear here: the kernels' translation units stay free of torch/extension.h
// and pybind11 (about 25 s of parsing each on a 2-core machine); module.cpp
// alone includes them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

std::vector<at::Tensor> din_forward(const at::Tensor& queries, const at::Tensor& keys,
                                    const c10::optional<at::Tensor>& mask,
                                    const std::vector<at::Tensor>& layers,
                                    const std::vector<int64_t>& acts,
                                    const std::vector<at::Tensor>& slopes, bool sum_mode,
                                    double decay, double eps, bool save);

std::vector<at::Tensor> din_backward(const at::Tensor& d_out, const at::Tensor& queries,
                                     const at::Tensor& keys, const c10::optional<at::Tensor>& mask,
                                     const std::vector<at::Tensor>& layers,
                                     const std::vector<int64_t>& acts,
                                     const std::vector<at::Tensor>& slopes, bool sum_mode,
                                     double decay, double eps, const at::Tensor& weights,
                                     const std::vector<at::Tensor>& hidden, bool need_queries,
                                     bool need_keys);

std::vector<at::Tensor> autoint_forward(const at::Tensor& x,
                                        const c10::optional<at::Tensor>& present, int64_t rounds,
                                        double divisor, bool save);

at::Tensor autoint_backward(const at::Tensor& x, const at::Tensor& hidden,
                            const at::Tensor& weights, const at::Tensor& d_out,
                            const c10::optional<at::Tensor>& present, double divisor);

std::vector<at::Tensor> senet_forward(const at::Tensor& x, const c10::optional<at::Tensor>& v1,
                                      const c10::optional<at::Tensor>& g1,
                                      const c10::optional<at::Tensor>& b1,
                                      const c10::optional<at::Tensor>& v2,
                                      const c10::optional<at::Tensor>& g2,
                                      const c10::optional<at::Tensor>& b2, double eps);

std::vector<at::Tensor> senet_backward(
    const at::Tensor& d_out, const at::Tensor& x, const c10::optional<at::Tensor>& v1,
    const c10::optional<at::Tensor>& g1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& v2, const c10::optional<at::Tensor>& g2,
    const c10::optional<at::Tensor>& b2, double eps, const at::Tensor& squeezed,
    const at::Tensor& hidden, const at::Tensor& excitation, bool need_x_grad);

// The recurrences over packed rows (see recurrences.cpp): x (N, D), h0 (B, U)
// in sorted row order, sizes[t] the rows alive at step t. The forwards return
// the (B + N, U) states buffer; the backwards take its gradient.
at::Tensor gru_forward(const at::Tensor& x, const at::Tensor& kernel, const at::Tensor& bias,
                       const at::Tensor& recurrent_kernel, const at::Tensor& h0,
                       const std::vector<int64_t>& sizes, int64_t act);

// -> d_x (undefined unless need_x), d_h0 (sorted rows), d_kernel, d_recurrent_kernel, d_bias
std::vector<at::Tensor> gru_backward(const at::Tensor& d_states, const at::Tensor& x,
                                     const at::Tensor& kernel, const at::Tensor& bias,
                                     const at::Tensor& recurrent_kernel, const at::Tensor& states,
                                     const std::vector<int64_t>& sizes, int64_t act, bool need_x);

// a (N, 1) or None; w_x (D, 3U) = [W_gx | W_cx], b_x (3U).
at::Tensor agru_forward(const at::Tensor& x, const c10::optional<at::Tensor>& a,
                        const at::Tensor& w_x, const at::Tensor& b_x, const at::Tensor& w_gh,
                        const at::Tensor& w_ch, const at::Tensor& h0,
                        const std::vector<int64_t>& sizes, int64_t mode, int64_t act);

// -> d_x (undefined unless need_x), d_a (undefined without a), d_h0 (sorted rows), d_w_x, d_b_x, d_w_gh, d_w_ch
std::vector<at::Tensor> agru_backward(const at::Tensor& d_states, const at::Tensor& x,
                                      const c10::optional<at::Tensor>& a, const at::Tensor& w_x,
                                      const at::Tensor& b_x, const at::Tensor& w_gh,
                                      const at::Tensor& w_ch, const at::Tensor& states,
                                      const std::vector<int64_t>& sizes, int64_t mode, int64_t act,
                                      bool need_x);
