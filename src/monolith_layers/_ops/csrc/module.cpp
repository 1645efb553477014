// The Python module of the native kernels: one extension built from every
// source in this folder (see _native.py).
//
// No kernel touches a Python object, so each releases the GIL while it runs:
// other Python threads (an inference server calling models from several
// threads, a DataLoader thread) keep going meanwhile.

#include <torch/extension.h>

void register_recurrences(pybind11::module& module);
void register_interactions(pybind11::module& module);
void register_din(pybind11::module& module);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  register_recurrences(module);
  register_interactions(module);
  register_din(module);
}
