import copy
import pickle

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monolith_layers import MLP, Dense, Layer, disable_summaries, enable_summaries
from monolith_layers.layer import keras_default_name


@pytest.mark.parametrize(
    "cls, name",
    [
        ("DMR_U2I", "dmr__u2i"),
        ("iRazor", "i_razor"),
        ("SeNet", "se_net"),
        ("AutoInt", "auto_int"),
        ("AGRUCell", "agru_cell"),
        ("DIN", "din"),
        ("MLP", "mlp"),
        ("PReLU", "p_re_lu"),
    ],
)
def test_keras_default_names(cls, name):
    assert keras_default_name(cls) == name


def test_copy_and_pickle_keep_config():
    mlp = MLP([3, 1], activations="tanh", input_dim=2)
    for clone in (copy.deepcopy(mlp), pickle.loads(pickle.dumps(mlp))):
        assert clone.get_config() == mlp.get_config()
        x = torch.randn(4, 2)
        torch.testing.assert_close(clone(x), mlp(x))


def test_unserialisable_argument_names_the_layer():
    dense = Dense(2, activation=lambda x: x, input_dim=2)
    with pytest.raises(TypeError, match="Dense.get_config: cannot serialise"):
        dense.get_config()


def test_bad_name():
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        Dense(2, input_dim=2, name="")


class _Recording(Layer):
    def __init__(self, *, name=None):
        super().__init__(name=name)

    def forward(self, x):
        self._summarize_histogram("values", x)
        return x


def test_summaries_off_by_default_and_written_when_on(tmp_path):
    layer = _Recording(name="rec")
    layer(torch.randn(5))  # no writer, nothing happens
    model = torch.nn.Sequential(layer)
    recorder = enable_summaries(model, log_dir=str(tmp_path))
    recorder.step = 7
    model(torch.randn(50))
    recorder.flush()
    assert recorder.tags_written == {"rec/values"}
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["histograms"] == ["rec/values"]
    assert events.Histograms("rec/values")[0].step == 7
    disable_summaries(model)
    assert layer._summary is None
    recorder.close()


def test_config_does_not_follow_later_edits_of_the_callers_list():
    dims = [3, 1]
    mlp = MLP(dims, input_dim=2)
    dims.append(7)
    assert mlp.get_config()["output_dims"] == [3, 1]
