"""``monolith-layers demo | train | evaluate``: CTR models on behaviour data.

The CLI only turns arguments into the plain configs of
:mod:`monolith_layers.data`, :mod:`monolith_layers.models` and
:mod:`monolith_layers.train`, which work the same from Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, NoReturn

DEMO_MODELS = ("mean", "din", "dien", "dmr", "din+irazor")
# The demo's settings: 2 epochs of the default synthetic data take ~4 minutes on 2 cores.
DEMO_TRAIN = {"epochs": 2, "batch_size": 512, "lr": 3e-3}
DEMO_DATA = {"max_len": 30}
QUICK_TRAIN = {"epochs": 2, "batch_size": 512, "lr": 5e-3}
QUICK_DATA = {"max_len": 20}
QUICK_MODEL = {
    "embed_dim": 8,
    "hidden_units": [64, 32],
    "attention_units": [32, 16],
    "dmr_cmp_dim": 16,
}
QUICK_SYNTHETIC = {"num_users": 3000, "max_events": 40}
# A sample-log run keeps its vocabularies beside the model (evaluate and export read them).
FEATURES_FILE = "features.json"

# Set when this process trains data-parallel under torchrun (see entry()).
_joined_process_group = False

DATA_HELP = (
    "'synthetic' (default: generated, no files needed), 'ml-100k' (from the recbole "
    "distribution: pip install --no-deps recbole), or a file / folder: RecBole atomic files "
    "(<name>.inter [+ <name>.item]), MovieLens u.data / ratings.dat / ratings.csv, or Amazon "
    "5-core reviews JSON [+ meta*.json]"
)


class UsageError(ValueError):
    """Bad command-line input that is not a data or config error."""


# ------------------------------------------------------------------ pieces
def _load_log(spec: str, data_config, synthetic: dict[str, Any] | None, seed: int):
    from .data import SyntheticConfig, generate, load_dataset

    if spec == "synthetic":
        config = SyntheticConfig.from_dict({"seed": seed, **(synthetic or {})})
        return generate(config), config.to_dict()
    return load_dataset(spec, data_config.click_threshold), None


def _read_config_file(path: str | None) -> dict[str, Any]:
    from .config import ConfigError

    if path is None:
        return {}
    file = Path(path)
    try:
        values = json.loads(file.read_text())
    except FileNotFoundError:
        raise UsageError(f"{file}: no such config file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file}: not valid JSON ({err})") from None
    sections = {"model", "data", "train", "synthetic", "dataset", "schema"}
    if not isinstance(values, dict) or set(values) - sections:
        extra = sorted(set(values) - sections) if isinstance(values, dict) else values
        raise ConfigError(f"{file}: unknown keys {extra}; known sections are {sorted(sections)}")
    return values


def _data_config(values: dict[str, Any]):
    from .data import DataConfig

    return DataConfig.from_dict(values)


def _model_config(name: str, log, data_config, values: dict[str, Any]):
    from .models import ModelConfig

    merged = {
        **values,
        "num_users": log.num_users,
        "num_items": log.num_items,
        "num_categories": max(1, log.num_categories),
        "max_len": data_config.max_len,
    }
    if name:
        encoder, _, transform = name.partition("+")
        merged.update(encoder=encoder, transform=transform or None)
    return ModelConfig.from_dict(merged)


def _checked_splits(log, data_config):
    from .data import build_datasets

    splits = build_datasets(log, data_config)
    for part in splits[1:]:
        part.check_evaluable()
    return splits


def _build_native_step(say=print, device: str = "cpu") -> None:
    """Compile the native kernels now, on a line of their own, when this
    environment has not built them yet: never inside a progress bar, and never
    counted in a model's training time. Not for a GPU run (``device``): CUDA
    tensors run the Triton kernels, compiled by Triton on first use."""
    import warnings

    from ._ops import build
    from .train import resolve_device

    if resolve_device(device).type != "cpu" or not build.build_pending():
        return
    say(
        "building the native kernels (first use in this environment, needs a C++ compiler; "
        f"`monolith-layers build-kernels` does it ahead of time, {build.ENV_VAR}=0 skips them) ...",
        flush=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module, seconds = build.build_native()
    if module is not None:
        say(f"  done in {seconds:.0f} s", flush=True)
    else:
        why = str(caught[-1].message) if caught else "unknown reason"
        say(f"  failed after {seconds:.0f} s; the models run as tensor ops instead ({why})")


def _needs_native(names) -> bool:
    from .models import ModelConfig

    return any(ModelConfig.from_name(name).uses_native_kernels for name in names)


def _print_table(dataset: str, runs) -> None:
    from .train.report import _table

    print(f"\nResults on {dataset} (test split):\n")
    print(_table(runs))


def _fixed_model(name, log, data_config, model_values, seed):
    """The CTR model of an interaction log, its weights drawn from ``seed``."""
    from .models import CTRModel
    from .train import seed_everything

    seed_everything(seed)
    return CTRModel(_model_config(name, log, data_config, model_values))


def _train_one(model, splits, train_config, out_dir, extra, resume=False, say=print, sharded=None):
    from .train import Trainer
    from .train.report import ModelRun

    trainer = Trainer(model, train_config, out_dir, extra, sharded=sharded)
    train, valid, test = splits
    began = time.perf_counter()
    fit = trainer.fit(train, valid, resume=resume)
    result = trainer.evaluate(test)
    epochs = len(fit.history)
    say(
        f"  {model.config.name:<12} test AUC {result['auc']:.4f}  logloss {result['logloss']:.4f}  "
        f"({epochs} epoch{'' if epochs == 1 else 's'}, {time.perf_counter() - began:.1f} s)",
        flush=True,
    )
    return ModelRun(model.config.name, model, fit, result)


# ----------------------------------------------------------------- commands
def _demo_folder(out: Path, overwrite: bool) -> None:
    from .train.outputs import OutputError, check_folder, clear_run, holds_run
    from .train.report import REPORT_FILES

    check_folder(out)
    if holds_run(out, ("metrics.json", "models")):
        if not overwrite:
            raise OutputError(
                f"--out {out}: holds an earlier demo's results; add --overwrite to replace them "
                "or choose another --out"
            )
        clear_run(out, [*REPORT_FILES, *(f"models/{_model_folder(n)}" for n in DEMO_MODELS)])


def _model_folder(name: str) -> str:
    return name.replace("+", "_")


def cmd_demo(args) -> int:
    from .train import TrainConfig, resolve_device

    resolve_device(args.device)
    out = Path(args.out)
    _demo_folder(out, args.overwrite)
    data_config = _data_config({**(QUICK_DATA if args.quick else DEMO_DATA), "seed": args.seed})
    train_values = {
        **(QUICK_TRAIN if args.quick else DEMO_TRAIN),
        "seed": args.seed,
        "progress": not args.no_progress,
        "device": args.device,
        "precision": args.precision,
    }
    if args.epochs is not None:
        train_values["epochs"] = args.epochs
    train_config = TrainConfig(**train_values)
    synthetic = QUICK_SYNTHETIC if args.quick else None
    log, synthetic_config = _load_log(args.data, data_config, synthetic, args.seed)
    splits = _checked_splits(log, data_config)
    print(log.summary())
    print(f"samples: train {len(splits[0]):,}, valid {len(splits[1]):,}, test {len(splits[2]):,}")
    if _needs_native(DEMO_MODELS):
        _build_native_step(device=args.device)
    print(f"training {len(DEMO_MODELS)} models into {out}/ ...", flush=True)
    model_values = QUICK_MODEL if args.quick else {}
    extra = {"data": data_config.to_dict(), "dataset": args.data, "synthetic": synthetic_config}
    runs = [
        _train_one(
            _fixed_model(name, log, data_config, model_values, train_config.seed),
            splits,
            train_config,
            out / "models" / _model_folder(name),
            extra,
        )
        for name in DEMO_MODELS
    ]
    _print_table(log.name, runs)
    from .train.report import write_report

    settings = {
        "data": data_config.to_dict(),
        "train": train_config.to_dict(),
        "model": model_values,
        "synthetic": synthetic_config,
    }
    write_report(out, log.name, runs, splits[2], settings)
    print(f"\nreport: {out / 'report.md'} (metrics.json and plots beside it)")
    return 0


def cmd_train(args) -> int:
    """Train one model; under torchrun, data parallel over the launched processes."""
    from .train import init_distributed, resolve_device

    global _joined_process_group
    device = args.device or _read_config_file(args.config).get("train", {}).get("device", "auto")
    rank, world = init_distributed(resolve_device(device))
    _joined_process_group = world > 1
    try:
        return _train(args, rank, world)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _restarted_by_torchrun() -> bool:
    """torchrun --max-restarts restarted this process group after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def _train_folder(out: Path, resume: bool, overwrite: bool, rank: int, say) -> bool:
    """Check --out before any work; returns whether to resume the run saved there.

    After torchrun restarts a failed group, the run saved in --out (if any) is
    resumed with no flag: the restarted processes get the same command line.
    """
    from .train.outputs import OutputError, check_folder, clear_run, holds_run
    from .train.trainer import STATE_FILE

    if resume and overwrite:
        raise UsageError(
            "--resume continues the run in --out and --overwrite replaces it: pick one"
        )
    check_folder(out)
    saved = (out / STATE_FILE).is_file()
    if _restarted_by_torchrun():
        if saved:
            say(f"restarted by torchrun: resuming the run saved in {out}", flush=True)
        return saved
    if resume:
        if not saved:
            raise OutputError(f"--out {out}: nothing to resume (no {STATE_FILE})")
        return True
    if holds_run(out):
        if not overwrite:
            raise OutputError(
                f"--out {out}: holds an earlier run; add --resume to continue it, --overwrite to "
                "replace it, or choose another --out"
            )
        if rank == 0:
            clear_run(out)
    return False


def _train(args, rank: int, world: int) -> int:
    from .train import TrainConfig

    say = print if rank == 0 else (lambda *a, **k: None)
    out = Path(args.out)
    resume = _train_folder(out, args.resume, args.overwrite, rank, say)

    file_values = _read_config_file(args.config)
    data_values = {**file_values.get("data", {})}
    for flag, key in (("max_len", "max_len"), ("seed", "seed"), ("workers", "workers")):
        if getattr(args, flag) is not None:
            data_values[key] = getattr(args, flag)
    data_config = _data_config(data_values)
    train_values = {**file_values.get("train", {}), "progress": not args.no_progress}
    for flag in ("epochs", "batch_size", "lr", "seed", "device", "precision", "max_steps"):
        if getattr(args, flag) is not None:
            train_values[flag] = getattr(args, flag)
    train_config = TrainConfig.from_dict(train_values)
    model_values = dict(file_values.get("model", {}))
    if args.embed_dim is not None:
        model_values["embed_dim"] = args.embed_dim
    for key in ("num_users", "num_items", "num_categories", "max_len"):
        model_values.pop(key, None)  # taken from the data
    name = args.model or ""
    if not name and "encoder" not in model_values:
        name = "din"
    schema_file = args.schema or file_values.get("schema")
    if schema_file is not None:
        return _train_sample_log(
            args,
            schema_file,
            name,
            data_config,
            train_config,
            model_values,
            out,
            resume,
            say,
            rank,
            world,
        )
    if args.valid or args.test or args.shard:
        flag = "--valid / --test" if args.valid or args.test else "--shard"
        raise UsageError(f"{flag} works with a sample log: add --schema FILE")
    spec = args.data or file_values.get("dataset", "synthetic")
    log, synthetic_config = _load_log(
        spec, data_config, file_values.get("synthetic"), train_config.seed
    )
    # Every config and data error before any file is written.
    model_config = _model_config(name, log, data_config, model_values)
    splits = _checked_splits(log, data_config)
    say(log.summary() + (f"; data parallel over {world} processes" if world > 1 else ""))
    if model_config.uses_native_kernels:
        _build_native_step(say, train_config.device)
    extra = {"data": data_config.to_dict(), "dataset": spec, "synthetic": synthetic_config}
    model = _fixed_model(name, log, data_config, model_values, train_config.seed)
    run = _train_one(model, splits, train_config, out, extra, resume, say)
    _finish_train(
        out, log.name, run, splits[2], data_config.to_dict(), train_config, world, rank, say
    )
    return 0


def _finish_train(out, dataset, run, test, data_settings, train_config, world, rank, say) -> None:
    from .train.report import write_report

    if rank == 0:
        settings = {
            "data": data_settings,
            "train": train_config.to_dict(),
            "model": {k: v for k, v in run.model.config.to_dict().items() if k != "features"},
            "world_size": world,
        }
        write_report(out, dataset, [run], test, settings)
    say(f"checkpoint: {out / 'model.safetensors'}; report: {out / 'report.md'}")


def _fit_bar(enabled: bool):
    """A progress bar for the passes over a sample log before training."""
    from .train.trainer import progress_bar

    def start(description: str, total: int):
        bar = progress_bar(total, description, enabled)
        return lambda rows: (bar.update(rows), bar.n >= total and bar.close())

    return start


def _sample_log_splits(schema, spec, valid, test, data_config, progress, encoder=None):
    from .data.stream import schema_datasets

    fractions = (data_config.valid_fraction, data_config.test_fraction)
    return schema_datasets(
        schema,
        spec,
        valid,
        test,
        fractions=fractions,
        seed=data_config.seed,
        encoder=encoder,
        shuffle_buffer=data_config.shuffle_buffer,
        workers=data_config.workers,
        progress=progress,
    )


def _train_sample_log(
    args, schema_file, name, data_config, train_config, model_values, out, resume, say, rank, world
) -> int:
    """``train --schema``: a sample log streamed from Parquet / CSV (see data.stream)."""
    from .data.encoding import describe
    from .data.schema import Schema
    from .models import ModelConfig
    from .models.features import FeatureCTRModel, feature_spec
    from .train import seed_everything

    schema = Schema.load(schema_file)
    if args.max_len is not None:
        schema = Schema.from_dict({**schema.to_dict(), "max_len": args.max_len})
    if args.data is None:
        raise UsageError(
            "--schema needs --data PATH: a Parquet file, a folder of them, or a CSV file"
        )
    encoder_name, _, transform = (name or "din").partition("+")
    settings = {
        **model_values,
        "encoder": model_values.get("encoder", encoder_name) if not name else encoder_name,
        "transform": model_values.get("transform") if not name else (transform or None),
        "max_len": schema.history_len or 1,
    }
    ModelConfig.from_dict(settings)  # a bad model name fails before the passes over the data
    bars = _fit_bar(train_config.progress and rank == 0)
    # Every data error (a missing column, a bad label, a corrupt file) before anything is written.
    train, valid, test, encoder = _sample_log_splits(
        schema, args.data, args.valid, args.test, data_config, bars
    )
    for part in (valid, test):
        part.check_evaluable()
    config = ModelConfig.from_dict({**settings, "features": feature_spec(encoder)})
    seed_everything(train_config.seed)
    model = FeatureCTRModel(config)
    say(
        f"{args.data}: rows train {len(train):,}, valid {len(valid):,}, test {len(test):,}; "
        f"click rate {train.positives():.3f}"
        + (f"; data parallel over {world} processes" if world > 1 else "")
    )
    for line in describe(encoder):
        say(line)
    if config.uses_native_kernels:
        _build_native_step(say, train_config.device)
    sharded = None
    if args.shard:
        if resume:
            raise UsageError("--resume is not available with --shard: start the run again")
        sharded = _sharded_model(model, args.shard, train_config, world)
        model = sharded.module
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        encoder.save(out / FEATURES_FILE)
    extra = {
        "data": data_config.to_dict(),
        "sample_log": {"data": args.data, "valid": args.valid, "test": args.test},
        "shard": args.shard,
    }
    run = _train_one(model, (train, valid, test), train_config, out, extra, resume, say, sharded)
    # The report names what a sample-log run read: the schema, the files, the stream settings.
    stream = ("seed", "valid_fraction", "test_fraction", "shuffle_buffer", "workers")
    data_settings = {
        "schema": schema.to_dict(),
        **extra["sample_log"],
        **{k: v for k, v in data_config.to_dict().items() if k in stream},
    }
    _finish_train(out, str(args.data), run, None, data_settings, train_config, world, rank, say)
    return 0


def _sharded_model(model, sharding_type: str, train_config, world: int):
    """``--shard``: the model's tables in TorchRec, placed across the torchrun
    ranks, starting from ``model``'s weights (the unsharded model's, same seed).
    Table-wise and column-wise tables train with TorchRec's fused Adagrad at --lr."""
    from .models.sharded import TorchRecFeatureModel, fused_adagrad, load_whole_state, shard
    from .train import resolve_device

    if world < 2:
        raise UsageError(
            f"--shard {sharding_type} places tables across processes: launch with torchrun"
        )
    sharded = shard(
        TorchRecFeatureModel(model.config, device="meta"),
        sharding_type,
        resolve_device(train_config.device),
        fused_params=fused_adagrad(train_config.lr),
    )
    load_whole_state(sharded, model.state_dict())
    return sharded


def cmd_evaluate(args) -> int:
    from .train import (
        TrainConfig,
        Trainer,
        load_model,
        read_checkpoint_config,
        resolve_device,
    )

    resolve_device(args.device)
    weights, saved = read_checkpoint_config(args.checkpoint)
    model = load_model(args.checkpoint)
    data_config = _data_config(saved.get("data", {}))
    if "sample_log" in saved:
        spec, dataset = _sample_log_split(args, weights, saved, data_config)
    else:
        if args.split == "all":
            raise UsageError("--split all is for models trained on a sample log (--schema)")
        spec, dataset = _log_split(args, saved, model, data_config)
    if model.config.uses_native_kernels:
        _build_native_step(lambda *a, **k: print(*a, **{**k, "file": sys.stderr}), args.device)
    settings = TrainConfig(eval_batch_size=2048, progress=not args.no_progress, device=args.device)
    trainer = Trainer(model, settings)
    result = trainer.evaluate(dataset)
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "data": spec,
                "split": args.split,
                "model": model.config.name,
                **result,
            },
            indent=2,
        )
    )
    return 0


def _sample_log_split(args, weights: Path, saved, data_config):
    """The split of a sample log to evaluate a schema model on, encoded with the
    vocabularies it was trained with. ``--data`` replaces the training log (split
    as in training, or whole with ``--split all``)."""
    from .data.columnar import SampleFiles
    from .data.encoding import FeatureEncoder
    from .data.stream import SampleStream, SplitRule, count_rows

    encoder = FeatureEncoder.load(weights.with_name(FEATURES_FILE))
    log = saved["sample_log"]
    if args.split == "all":
        spec = args.data or log["data"]
        files = SampleFiles(spec, encoder.schema)
        rule = SplitRule("all", encoder.schema)
        rows, positives = count_rows(files, rule)
        stream = SampleStream(
            str(spec),
            files,
            encoder,
            rule,
            0,
            rows[:, 0],
            positives[:, 0].sum(),
            workers=data_config.workers,
        )
        return spec, stream
    spec = args.data or log["data"]
    valid, test = (None, None) if args.data else (log.get("valid"), log.get("test"))
    splits = _sample_log_splits(encoder.schema, spec, valid, test, data_config, None, encoder)
    return spec, splits[("train", "valid", "test").index(args.split)]


def _log_split(args, saved, model, data_config):
    """The split of an interaction log to evaluate a fixed-shape model on."""
    from .data import build_datasets
    from .train import CheckpointLoadError

    spec = args.data or saved.get("dataset", "synthetic")
    log, _ = _load_log(spec, data_config, saved.get("synthetic"), data_config.seed)
    config = model.config
    if (
        log.num_users > config.num_users
        or log.num_items > config.num_items
        or log.num_categories > config.num_categories
    ):
        raise CheckpointLoadError(
            f"{spec}: {log.num_users} users / {log.num_items} items / {log.num_categories} categories "
            f"do not fit the checkpoint's vocabulary ({config.num_users} / {config.num_items} / "
            f"{config.num_categories}); evaluate on the data it was trained on"
        )
    splits = dict(zip(("train", "valid", "test"), build_datasets(log, data_config), strict=True))
    return spec, splits[args.split]


def _recbole_location(spec: str) -> tuple[Path | None, str | None]:
    """Where a RecBole log's .user / .item side files are: (folder, name), or (None, None)."""
    from .data import ml100k_dir

    if spec == "ml-100k":
        return ml100k_dir(), "ml-100k"
    path = Path(spec)
    if path.is_file() and path.suffix == ".inter":
        return path.parent, path.stem
    inter = sorted(path.glob("*.inter")) if path.is_dir() else []
    return (path, inter[0].stem) if len(inter) == 1 else (None, None)


def cmd_samples(args) -> int:
    """Write an interaction log as a sample log (Parquet splits + schema.json)."""
    from .data.sample_log import write_sample_log
    from .train.outputs import OutputError, check_folder

    out = Path(args.out)
    check_folder(out)
    written = [out / n for n in ("train.parquet", "valid.parquet", "test.parquet", "schema.json")]
    if any(p.exists() for p in written) and not args.overwrite:
        raise OutputError(f"--out {out}: holds a sample log; add --overwrite to replace it")
    data_config = _data_config({"max_len": args.max_len, "seed": args.seed})
    log, _ = _load_log(args.data, data_config, None, args.seed)
    folder, name = _recbole_location(args.data) if args.data != "synthetic" else (None, None)
    schema = write_sample_log(log, out, data_config, folder, name)
    features = json.loads(schema.read_text())["features"]
    print(log.summary())
    print(f"wrote {out}/train.parquet, valid.parquet, test.parquet and {schema.name}:")
    print("  " + ", ".join(f"{f['name']} ({f['kind']})" for f in features))
    print(
        f"train on it: monolith-layers train --schema {schema} --data {out}/train.parquet "
        f"--valid {out}/valid.parquet --test {out}/test.parquet --out runs/samples"
    )
    return 0


def cmd_build_kernels(args) -> int:
    from ._ops import build

    if not build.switch_on():
        raise UsageError(f"{build.ENV_VAR}=0 switches the native kernels off; nothing to build")
    if not build.build_pending() and build.kernels(announce=False) is not None:
        print(f"the native kernels are built: {build.build_location()}")
        return 0
    _build_native_step()
    return 0 if build.kernels(announce=False) is not None else 1


def cmd_export(args) -> int:
    from .export import SUFFIXES, export_model
    from .models import ModelConfig
    from .train import load_model, read_checkpoint_config, resolve_device
    from .train.outputs import check_file

    device = resolve_device(args.device)
    _, saved = read_checkpoint_config(args.checkpoint)
    name = ModelConfig.from_dict(saved["model"]).name if args.out is None else ""
    out = Path(args.out) if args.out else Path(f"{_model_folder(name)}{SUFFIXES[args.format]}")
    check_file(out, args.overwrite)
    model = load_model(args.checkpoint, map_location=device)
    if model.config.uses_native_kernels:
        _build_native_step(device=str(device))  # the artefact is checked against the eager model
    path = export_model(model, args.format, out, args.max_len)
    print(
        f"{path}: {args.format} of {model.config.name}, dynamic batch, T = "
        f"{args.max_len or model.config.max_len}; checked against the eager model"
    )
    return 0


# ------------------------------------------------------------------- parser
def _add_data(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    text = DATA_HELP
    if default not in (None, "synthetic"):  # DATA_HELP names synthetic as the default
        text = text.replace(
            "'synthetic' (default: generated, no files needed)", "'synthetic' (generated)"
        )
        text += f" (default: {default})"
    parser.add_argument("--data", default=default, metavar="NAME_OR_PATH", help=text)


def _add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (display only: the results are the same)",
    )


def _add_device(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--device",
        default=default,
        metavar="DEVICE",
        help="auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; under "
        "torchrun each process takes the GPU of its LOCAL_RANK (default: auto)",
    )


def _add_precision(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--precision",
        default=default,
        choices=("fp32", "bf16", "fp16"),
        help="fp32, or the forward pass under autocast in bf16 / fp16 (fp16 with a gradient "
        "scaler); weights stay float32 (default: fp32)",
    )


def _add_overwrite(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monolith-layers",
        description="Train and evaluate CTR models built on Monolith's layers (DIN, DIEN, DMR, iRazor, ...).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{demo,train,evaluate,export,samples,build-kernels}",
    )

    demo = commands.add_parser(
        "demo",
        help="train mean / din / dien / dmr / din+irazor on the same data and write a report",
        description="Train the same CTR model with the mean, DIN, DIEN and DMR behaviour encoders "
        "and DIN + iRazor on one dataset; print a results table and write metrics.json, report.md "
        "and plots into --out.",
    )
    _add_data(demo, default="synthetic")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="smaller data, model and fewer epochs: under a minute on 2 CPU cores",
    )
    demo.add_argument(
        "--out",
        default="monolith-demo",
        metavar="DIR",
        help="output folder (default: monolith-demo)",
    )
    demo.add_argument("--epochs", type=int, help="epochs per model (default: 2)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_device(demo, default="auto")
    _add_precision(demo, default="fp32")
    _add_overwrite(demo, "replace an earlier demo's results in --out")
    _add_no_progress(demo)
    demo.set_defaults(run=cmd_demo)

    train = commands.add_parser(
        "train",
        help="train one model; writes a checkpoint and a report",
        description="Train one CTR model. Settings come from --config (JSON with 'model', 'data', "
        "'train', 'synthetic' and 'dataset' sections) and then the flags. Writes model.safetensors "
        "+ config.json (the best epoch), trainer_state.pt (for --resume) and the "
        "report into --out.",
    )
    train.add_argument("--config", metavar="FILE", help="JSON config file")
    _add_data(train)
    train.add_argument(
        "--schema",
        metavar="FILE",
        help="a feature schema (JSON): --data is then a sample log, a Parquet file, a folder of "
        "Parquet files or a CSV file, streamed (see the README's 'Your own data')",
    )
    train.add_argument(
        "--valid", metavar="PATH", help="with --schema: a validation sample log (give --test too)"
    )
    train.add_argument(
        "--test", metavar="PATH", help="with --schema: a test sample log (give --valid too)"
    )
    train.add_argument(
        "--max-steps", type=int, help="stop after this many training steps in all (default: none)"
    )
    train.add_argument(
        "--workers",
        type=int,
        help="with --schema: data-loader processes building batches (default: 0, in the "
        "training process)",
    )
    train.add_argument(
        "--shard",
        choices=("table_wise", "column_wise", "data_parallel"),
        help="with --schema, under torchrun: the embedding tables in TorchRec, sharded this way "
        "across the processes (see docs/scaling-out.md)",
    )
    train.add_argument(
        "--model",
        metavar="NAME",
        help="encoder[+transform]: mean, din, dien, dmr; +senet, +autoint, +irazor (default: din)",
    )
    train.add_argument(
        "--epochs", type=int, help="at most this many epochs (early stopping on validation AUC)"
    )
    train.add_argument("--batch-size", type=int, help="training batch size (default: 256)")
    train.add_argument("--lr", type=float, help="learning rate (default: 2e-3)")
    train.add_argument("--embed-dim", type=int, help="embedding width E (default: 16)")
    train.add_argument("--max-len", type=int, help="history length cap T (default: 50)")
    train.add_argument("--seed", type=int, help="random seed (default: 0)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out (automatic after a torchrun restart)",
    )
    _add_device(train)
    _add_precision(train)
    _add_overwrite(train, "replace an earlier run in --out")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_no_progress(train)
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved model",
        description="Evaluate a checkpoint (a train output folder or its model.safetensors) on a "
        "split of the data it was trained on (default: the dataset recorded in its config.json).",
    )
    evaluate.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="train output folder or model.safetensors"
    )
    _add_data(evaluate)
    evaluate.add_argument(
        "--split",
        choices=("train", "valid", "test", "all"),
        default="test",
        help="default: test; 'all': every row of --data (a sample-log model's held-out file)",
    )
    _add_device(evaluate, default="auto")
    _add_no_progress(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    export = commands.add_parser(
        "export",
        help="write a serving artefact (ONNX, torch.export, TorchScript) of a saved model",
        description="Export a checkpoint for serving with a dynamic batch dimension. Inputs: user, "
        "item, category (B,), history, history_category (B, T) int64 and mask (B, T) bool; output: "
        "the click probability (B,). The artefact is loaded back and checked against the eager "
        "model before the command succeeds.",
    )
    export.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="train output folder or model.safetensors"
    )
    export.add_argument(
        "--format", required=True, choices=("onnx", "exported-program", "torchscript")
    )
    export.add_argument(
        "--max-len", type=int, help="history length T of the served inputs (default: the model's)"
    )
    export.add_argument(
        "--out", metavar="FILE", help="output file (default: <model>.onnx / .pt2 / .pt)"
    )
    export.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="cpu, cuda or cuda:N: where the model is traced and the artefact checked; an "
        "exported program or TorchScript file runs on that device (default: cpu)",
    )
    _add_overwrite(export, "replace an existing --out file")
    export.set_defaults(run=cmd_export)

    samples = commands.add_parser(
        "samples",
        help="write a dataset as a sample log: Parquet splits and a feature schema",
        description="Write an interaction log (any --data the other commands read) as a sample "
        "log: train / valid / test Parquet files with one row per sample (targets, history lists, "
        "label) and RecBole's .user / .item side columns (token -> sparse, float -> dense, "
        "token_seq -> sequence), plus schema.json and schema_no_side.json for train --schema.",
    )
    _add_data(samples, default="ml-100k")
    samples.add_argument("--out", required=True, metavar="DIR", help="output folder")
    samples.add_argument(
        "--max-len", type=int, default=50, help="history length cap T (default: 50)"
    )
    samples.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_overwrite(samples, "replace a sample log in --out")
    samples.set_defaults(run=cmd_samples)

    build = commands.add_parser(
        "build-kernels",
        help="compile the native kernels now (otherwise the first training run does)",
        description="Compile the C++ kernels of DIEN's recurrences, DIN, AutoInt and SeNet into "
        "torch's extension cache, once per environment (torch installation and CPU). Needs a C++ "
        "compiler; about a minute on a 2-core machine. Without them the layers run as tensor "
        "ops (same results, slower); MONOLITH_LAYERS_FUSED=0 keeps to those.",
    )
    build.set_defaults(run=cmd_build_kernels)
    parser.epilog = _commands_epilog(commands)
    return parser


def _commands_epilog(commands) -> str:
    """Every command's usage line: `monolith-layers --help` shows every option."""
    lines = ["every option of every command (details: monolith-layers COMMAND --help):", ""]
    for sub in commands.choices.values():
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        # One option per unit: never break inside "[--epochs EPOCHS]".
        units = [u.replace(" ", "\0") for u in re.findall(r"\[[^\]]*\]|\S+", usage)]
        text = textwrap.fill(
            " ".join(units),
            width=96,
            initial_indent="  ",
            subsequent_indent="      ",
            break_on_hyphens=False,
        )
        lines.append(text.replace("\0", " "))
    return "\n".join(lines)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError
    from .data import DataError
    from .export import ExportError
    from .interop import CheckpointError
    from .train import CheckpointLoadError, DistributedError
    from .train.outputs import OutputError

    return (
        OutputError,
        DataError,
        ConfigError,
        CheckpointLoadError,
        CheckpointError,
        UsageError,
        DistributedError,
        ExportError,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("monolith-layers")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


def _install_hint(err: ImportError) -> str:
    """What brings the missing package: the extra, from a clone of the repository
    (the package is not on PyPI), or the packages themselves."""
    missing = (err.name or "").split(".")[0]
    if missing in ("onnx", "onnxscript", "onnxruntime"):
        return 'in a clone: pip install -e ".[export]", or pip install onnx onnxscript onnxruntime'
    if missing in ("torchrec", "fbgemm_gpu"):
        return "see docs/scaling-out.md for the TorchRec install"
    return (
        'in a clone: pip install -e ".[demo]", or pip install matplotlib tqdm tensorboard '
        "pandas scikit-learn safetensors"
    )


def _interrupted_note(args) -> str:
    """What an interrupted command leaves, read from the disk, not assumed."""
    from .train.trainer import STATE_FILE, WEIGHTS_FILE

    out = getattr(args, "out", None)
    if out is None or args.command not in ("train", "demo"):
        return ""
    out = Path(out)
    if args.command == "train":
        if (out / STATE_FILE).is_file():
            return f"; the last complete epoch is saved in {out} (continue with --resume)"
        return "; no epoch had finished, nothing was saved"
    done = sorted(p.parent.name for p in (out / "models").glob(f"*/{WEIGHTS_FILE}"))
    if not done:
        return "; no epoch had finished, nothing was saved"
    return f"; checkpoints so far are in {out / 'models'}/ ({', '.join(done)})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_environment()
        return args.run(args)
    except _user_errors() as err:
        _complain(f"monolith-layers {args.command}: error: {err}")
        return 2
    except ImportError as err:
        _complain(f"monolith-layers {args.command}: error: {err} ({_install_hint(err)})")
        return 2
    except KeyboardInterrupt:
        _complain(f"\nmonolith-layers {args.command}: interrupted{_interrupted_note(args)}")
        return 130


def _check_environment() -> None:
    """The environment variables the layers read, checked before any work."""
    from ._ops.switch import cpu_backend_in_use

    try:
        cpu_backend_in_use()
    except ValueError as err:
        raise UsageError(str(err)) from None


def _complain(message: str) -> None:
    """One line on stderr, said once: under torchrun every rank meets the same
    bad input (or Ctrl-C), and rank 0 speaks for them."""
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print(message, file=sys.stderr)


def entry() -> NoReturn:
    """The ``monolith-layers`` command: :func:`main`, then leave with its exit code."""
    code = main()
    if _joined_process_group:
        # DDP keeps its gloo group's threads alive past destroy_process_group; met
        # by C++ static destruction at interpreter exit they now and then abort a
        # rank that has finished its work (SIGABRT, a failed torchrun). Everything
        # is written by now, so skip that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
