"""Behaviour data for CTR models: loaders, a synthetic generator, samples and splits.

from monolith_layers.data import DataConfig, build_datasets, generate, load_dataset

log = load_dataset("ml-100k")            # or generate(), or a path to your files
train, valid, test = build_datasets(log, DataConfig(max_len=50))
for batch in train.loader(batch_size=256, shuffle=True):
    ...                                  # a dict of tensors, see CTRDataset

Sample logs (one row per impression, Parquet / CSV, any features) go through
a feature schema instead::

    schema = Schema.load("schema.json")
    train, valid, test, encoder = schema_datasets(schema, "samples.parquet")
    for batch in train.loader(batch_size=256, shuffle=True, epoch=1):
        ...                              # every feature by name, see SampleStream
"""

from .encoding import FeatureEncoder
from .interactions import DataError, Interactions, from_columns
from .loaders import load_amazon, load_dataset, load_movielens, load_recbole, ml100k_dir
from .sample_log import write_sample_log
from .samples import CTRDataset, DataConfig, build_datasets
from .schema import Feature, Schema
from .stream import SampleStream, schema_datasets
from .synthetic import SyntheticConfig, generate

__all__ = [
    "CTRDataset",
    "DataConfig",
    "DataError",
    "Feature",
    "FeatureEncoder",
    "Interactions",
    "SampleStream",
    "Schema",
    "SyntheticConfig",
    "build_datasets",
    "from_columns",
    "generate",
    "load_amazon",
    "load_dataset",
    "load_movielens",
    "load_recbole",
    "ml100k_dir",
    "schema_datasets",
    "write_sample_log",
]
