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

void gru_packed_forward(const at::Tensor& gi, const at::Tensor& w_r, const at::Tensor& b_r,
                        const at::Tensor& states, const at::Tensor& steps, int64_t act);

void gru_packed_backward(const at::Tensor& d_out, const at::Tensor& z, const at::Tensor& c1,
                         const at::Tensor& c2, const at::Tensor& grads, const at::Tensor& dh,
                         const at::Tensor& w_r, const at::Tensor& steps);

void agru_packed_forward(const at::Tensor& xp, const c10::optional<at::Tensor>& a,
                         const at::Tensor& w_gh, const at::Tensor& w_ch, const at::Tensor& states,
                         const at::Tensor& steps, int64_t mode, int64_t act);

void agru_packed_backward(const at::Tensor& d_out, const at::Tensor& z_act, const at::Tensor& coefs,
                          const at::Tensor& keep, const at::Tensor& r, const at::Tensor& pairs,
                          const at::Tensor& d_xp, const at::Tensor& dh, const at::Tensor& w_gh,
                          const at::Tensor& w_ch, const at::Tensor& steps);
