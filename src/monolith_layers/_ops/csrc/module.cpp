// The Python module of the kernels: one extension built from every source in
// this folder (see _ops/build.py). The only translation unit that includes
// torch/extension.h; the kernels include ATen alone (kernels.h).
//
// No kernel touches a Python object, so each releases the GIL while it runs:
// other Python threads (an inference server calling models from several
// threads, a DataLoader thread) keep going meanwhile.

#include <torch/extension.h>

#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  module.def("din_forward", &din_forward, release());
  module.def("din_backward", &din_backward, release());
  module.def("autoint_forward", &autoint_forward, release());
  module.def("autoint_backward", &autoint_backward, release());
  module.def("senet_forward", &senet_forward, release());
  module.def("senet_backward", &senet_backward, release());
  module.def("gru_forward", &gru_forward, release());
  module.def("gru_backward", &gru_backward, release());
  module.def("agru_forward", &agru_forward, release());
  module.def("agru_backward", &agru_backward, release());
}
