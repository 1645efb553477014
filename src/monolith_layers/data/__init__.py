"""Behaviour data for CTR models: loaders, a synthetic generator, samples and splits.

from monolith_layers.data import DataConfig, build_datasets, generate, load_dataset

log = load_dataset("ml-100k")            # or generate(), or a path to your files
train, valid, test = build_datasets(log, DataConfig(max_len=50))
for batch in train.loader(batch_size=256, shuffle=True):
    ...                                  # a dict of tensors, see CTRDataset
"""

from .interactions import DataError, Interactions, from_columns
from .loaders import load_amazon, load_dataset, load_movielens, load_recbole, ml100k_dir
from .samples import CTRDataset, DataConfig, build_datasets
from .synthetic import SyntheticConfig, generate

__all__ = [
    "CTRDataset",
    "DataConfig",
    "DataError",
    "Interactions",
    "SyntheticConfig",
    "build_datasets",
    "from_columns",
    "generate",
    "load_amazon",
    "load_dataset",
    "load_movielens",
    "load_recbole",
    "ml100k_dir",
]
