"""The benchmark datasets of the long-term-forecasting literature, with their exact split protocols.

ETT (``etth1``, ``etth2``, ``ettm1``, ``ettm2``): 12/4/4 months of train/val/test from the start of the file.
``weather``, ``electricity``, ``traffic``, ``exchange``, ``ili``: 70/10/20 by time. Files are located (or
downloaded and verified) by ``plugins.datasets.files``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from plugins.datasets import files
from plugins.datasets import timefeatures as tf
from plugins.datasets.files import RemoteFile
from plugins.datasets.reader import FillPolicy, read_csv_table
from plugins.datasets.splits import Borders, DatasetParams, build_splits
from tsbench_core.data import DatasetSplits, Windows
from tsbench_core.errors import DataError
from tsbench_core.protocols import DataLayout

ETT_BASE = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small"
# the Time-Series-Library authors' copy of the Autoformer data (the Autoformer release itself is a Drive folder)
TSLIB_BASE = "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main"

# "verified": computed here from the copies the project's tests use (ETDataset / Autoformer releases).
# "reported": what a third-party downloader records for the Hugging Face mirror copy of the same file, which
# differs byte for byte from the release; accepted as an alternative so the mirror works, not verified here.
ETTH1_SHA256 = (
    "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",  # verified
    "aaf53becad03ad8a7e93cf96452244f423480df960d769e12d66d4a5c570ddb0",  # reported
)
ETTH2_SHA256 = (
    "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",  # verified
    "ae5c99b925fb8b4e77d1bd6a897b311d1167766076f3d00e14a8654de38e7468",  # reported
)
EXCHANGE_SHA256 = (
    "d55e7aa2641009814a18ba3279431b13f6d413b0eab195b9ff21988d8cf94e97",  # verified
    "48b4d9d3d508f5104162e85b9a6042e3557fde11aa9f2944eba8c0d0efc89842",  # reported
)
ILI_SHA256 = (
    "8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395",  # verified
    "93601f64d2566dc796ca4305adad8b8560c2db1a1ff04543c3bd813a7263570a",  # reported
)

Protocol = Literal["ett_hour", "ett_minute", "ratio"]


def _remote(filename: str, primary: str, mirror: str, *digests: str) -> RemoteFile:
    return RemoteFile(filename, (primary, mirror), tuple(digests))


def _ett(name: str, *digests: str) -> RemoteFile:
    f = f"{name}.csv"
    return _remote(f, f"{ETT_BASE}/{f}", f"{TSLIB_BASE}/ETT-small/{f}", *digests)


def _tslib(folder: str, filename: str, *digests: str) -> RemoteFile:
    url = f"{TSLIB_BASE}/{folder}/{filename}"
    return RemoteFile(filename, (url,), tuple(digests))


REMOTES: dict[str, RemoteFile] = {
    "ETTh1.csv": _ett("ETTh1", *ETTH1_SHA256),
    "ETTh2.csv": _ett("ETTh2", *ETTH2_SHA256),
    "ETTm1.csv": _ett("ETTm1"),
    "ETTm2.csv": _ett("ETTm2"),
    "weather.csv": _tslib("weather", "weather.csv"),
    "electricity.csv": _tslib("electricity", "electricity.csv"),
    "traffic.csv": _tslib("traffic", "traffic.csv"),
    "exchange_rate.csv": _tslib("exchange_rate", "exchange_rate.csv", *EXCHANGE_SHA256),
    "national_illness.csv": _tslib("illness", "national_illness.csv", *ILI_SHA256),
}


class FileDatasetParams(DatasetParams):
    """Options of the named benchmark datasets."""

    data_dir: str | None = Field(None, description="Folder holding the file (searched before --data-dir)")
    fill: FillPolicy = Field("error", description="Missing/infinite values: error, ffill, interpolate, zero")
    freq: tf.Freq | None = Field(None, description="Time-feature frequency code (default: the dataset's own)")
    download: bool = Field(True, description="Download the file into the cache when it is not found")
    verify: bool = Field(True, description="Refuse a file whose SHA-256 differs from the known digest")



def ett_borders(protocol: Protocol) -> Borders:
    """12/4/4 months of 30 days: hours, or quarter hours (x4) for the 15-minute files."""
    per_month = 30 * 24 * (4 if protocol == "ett_minute" else 1)
    return Borders(12 * per_month, 16 * per_month, 20 * per_month)


@dataclass(frozen=True)
class FileDataset:
    """A named benchmark dataset: one CSV with a ``date`` column, split by its protocol."""

    name: str
    description: str
    filename: str
    protocol: Protocol
    freq: str  # default time-feature frequency (the literature's setting)
    n_vars: int  # variables besides the date, as published
    remote: RemoteFile | None
    params_model: type[FileDatasetParams] = FileDatasetParams

    def layout(self, params: BaseModel) -> DataLayout:
        p = params if isinstance(params, FileDatasetParams) else self.params_model.model_validate(params)
        return DataLayout(self.n_vars, p.features, tf.freq_code(p.freq or self.freq))

    def load(self, params: BaseModel, windows: Windows, data_dir: Path | None = None) -> DatasetSplits:
        p = params if isinstance(params, FileDatasetParams) else self.params_model.model_validate(params)
        path = files.locate(self.filename, files.search_dirs(p.data_dir, data_dir), self.remote,
                            download=p.download)
        digest = files.sha256_of(path)
        if p.verify and self.remote is not None and not self.remote.accepts(digest):
            raise DataError(
                f"{path}: checksum mismatch: sha256 {digest}, expected {' or '.join(self.remote.sha256)} for "
                f"the published {self.filename}; results on a different file are not comparable with the "
                "literature. Replace the file, or set verify=false to use it anyway"
            )
        table = read_csv_table(path, fill=p.fill)
        if p.verify and len(table.columns) != self.n_vars:
            raise DataError(
                f"{path}: {len(table.columns)} variables besides the date, but {self.name} has {self.n_vars}; "
                "is it the right file? (set verify=false to use it anyway)"
            )
        borders = Borders.ratios(len(table.values)) if self.protocol == "ratio" else ett_borders(self.protocol)
        info = {
            "dataset": self.name,
            "file": str(path),
            "sha256": digest,
            "sha256_known": bool(self.remote and self.remote.sha256),
            "fill": p.fill,
            "original_scale_metrics": p.original_scale_metrics,
        }
        return build_splits(table, windows=windows, borders=borders, features=p.features, target=p.target,
                            freq=p.freq or self.freq, info=info)


def _make(name: str, filename: str, protocol: Protocol, freq: str, n_vars: int, what: str) -> FileDataset:
    split = {"ett_hour": "12/4/4 months", "ett_minute": "12/4/4 months", "ratio": "70/10/20"}[protocol]
    return FileDataset(name, f"{what} ({filename}, {n_vars} variables, {split} split)", filename, protocol,
                       freq, n_vars, REMOTES[filename])


PLUGINS = (
    _make("etth1", "ETTh1.csv", "ett_hour", "h", 7, "Electricity transformer temperature, hourly, station 1"),
    _make("etth2", "ETTh2.csv", "ett_hour", "h", 7, "Electricity transformer temperature, hourly, station 2"),
    _make("ettm1", "ETTm1.csv", "ett_minute", "t", 7, "Electricity transformer temperature, 15-min, station 1"),
    _make("ettm2", "ETTm2.csv", "ett_minute", "t", 7, "Electricity transformer temperature, 15-min, station 2"),
    _make("weather", "weather.csv", "ratio", "h", 21, "Weather station, 10-minute, 2020"),
    _make("electricity", "electricity.csv", "ratio", "h", 321, "Electricity consumption (ECL), hourly"),
    _make("traffic", "traffic.csv", "ratio", "h", 862, "San Francisco road occupancy, hourly"),
    _make("exchange", "exchange_rate.csv", "ratio", "h", 8, "Daily exchange rates of 8 countries"),
    _make("ili", "national_illness.csv", "ratio", "h", 7, "US influenza-like illness, weekly"),
)
