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

// The recurrences over a padded batch, forward and backward: inputs (B, T, D),
// mask (B, T) (None: every step real), h0 (B, U); only real steps are
// computed (see recurrences.cpp). The forwards return outputs (B, T, U) (zero
// at padded steps) and the final states (B, U).
std::vector<at::Tensor> gru_forward(const at::Tensor& inputs, const c10::optional<at::Tensor>& mask,
                                    const at::Tensor& kernel, const at::Tensor& bias,
                                    const at::Tensor& recurrent_kernel, const at::Tensor& h0,
                                    int64_t act);

// -> d_inputs (undefined unless need_x), d_h0, d_kernel, d_recurrent_kernel, d_bias
std::vector<at::Tensor> gru_backward(const c10::optional<at::Tensor>& d_outputs,
                                     const c10::optional<at::Tensor>& d_final,
                                     const at::Tensor& inputs, const c10::optional<at::Tensor>& mask,
                                     const at::Tensor& kernel, const at::Tensor& bias,
                                     const at::Tensor& recurrent_kernel, const at::Tensor& h0,
                                     const at::Tensor& outputs, int64_t act, bool need_x);

// att_scores (B, T) or None; the cell's gates kernel (D + U, 2U) and bias, candidate kernel (D + U, U) and bias.
std::vector<at::Tensor> agru_forward(const at::Tensor& inputs,
                                     const c10::optional<at::Tensor>& att_scores,
                                     const c10::optional<at::Tensor>& mask,
                                     const at::Tensor& gates_kernel, const at::Tensor& gates_bias,
                                     const at::Tensor& candidate_kernel,
                                     const at::Tensor& candidate_bias, const at::Tensor& h0,
                                     int64_t mode, int64_t act);

// -> d_inputs (undefined unless need_x), d_att_scores (undefined without scores), d_h0,
//    d_gates_kernel, d_gates_bias, d_candidate_kernel, d_candidate_bias
std::vector<at::Tensor> agru_backward(
    const c10::optional<at::Tensor>& d_outputs, const c10::optional<at::Tensor>& d_final,
    const at::Tensor& inputs, const c10::optional<at::Tensor>& att_scores,
    const c10::optional<at::Tensor>& mask, const at::Tensor& gates_kernel,
    const at::Tensor& gates_bias, const at::Tensor& candidate_kernel,
    const at::Tensor& candidate_bias, const at::Tensor& h0, const at::Tensor& outputs, int64_t mode,
    int64_t act, bool need_x);
