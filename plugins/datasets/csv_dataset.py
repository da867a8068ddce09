"""``csv``: any user CSV with a date column, numeric feature columns and a target column."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from plugins.datasets import files
from plugins.datasets import timefeatures as tf
from plugins.datasets.files import RemoteFile
from plugins.datasets.reader import FillPolicy, read_csv_table
from plugins.datasets.splits import Borders, DatasetParams, build_splits
from tsbench_core.data import DatasetSplits, Windows
from tsbench_core.errors import DataError
from tsbench_core.protocols import DataLayout


class CsvParams(DatasetParams):
    path: str = Field(description="The CSV file: absolute, or relative to the data folders / working directory")
    date_column: str = Field("date", description="Column holding the timestamps")
    columns: list[str] | None = Field(None, description="Value columns to use (default: all but the date)")
    freq: tf.Freq = Field("h", description="Time-feature frequency code: s, t, h, d, b, w, m")
    borders: tuple[int, int, int] | None = Field(
        None, description="End rows (exclusive) of train, val and test; default: the 70/10/20 protocol"
    )
    train_ratio: float = Field(0.7, gt=0, lt=1, description="Train fraction when borders are not given")
    test_ratio: float = Field(0.2, gt=0, lt=1, description="Test fraction when borders are not given")
    fill: FillPolicy = Field("error", description="Missing/infinite values: error, ffill, interpolate, zero")
    data_dir: str | None = Field(None, description="Folder searched first for a relative path")
    url: str | None = Field(None, description="Download the file from here into the cache when it is missing")
    sha256: str | None = Field(None, description="Expected SHA-256 of the file (checked when given)")


    @model_validator(mode="after")
    def _ratios(self) -> CsvParams:
        if self.train_ratio + self.test_ratio >= 1:
            raise ValueError("train_ratio + test_ratio must leave rows for validation (sum below 1)")
        return self


def resolve(p: CsvParams, data_dir: Path | None) -> Path:
    """The file of ``p.path``: as given when absolute, else under the data folders or the working directory;
    with ``url``, a missing file is downloaded into the cache."""
    path = Path(p.path).expanduser()
    dirs = [path.parent] if path.is_absolute() else [*files.search_dirs(p.data_dir, data_dir), Path.cwd()]
    for d in dirs:
        if (d / path).is_file():
            return d / path
    looked = ", ".join(map(str, dirs))
    if not p.url:
        raise DataError(f"data file {p.path} not found; looked in {looked}. Check `path`, or pass --data-dir / "
                        f"set {files.DATA_ENV} to the folder that holds it")
    cached = files.cache_dir() / path.name
    if cached.is_file():
        return cached
    remote = RemoteFile(path.name, (p.url,), (p.sha256.lower(),) if p.sha256 else ())
    return files.fetch(remote, files.cache_dir(), looked_in=looked)


def value_columns(p: CsvParams) -> list[str]:
    """The value columns read when ``columns`` is given: those, and the target (always read)."""
    return list(dict.fromkeys([*(p.columns or []), p.target]))


class CsvDataset:
    name = "csv"
    description = "Any CSV file: a date column, numeric features and a target; 70/10/20 or explicit borders"
    params_model = CsvParams

    def layout(self, params: BaseModel) -> DataLayout:
        """The channels are those of ``columns`` (the target included) when given; otherwise only the file
        tells."""
        p = params if isinstance(params, CsvParams) else CsvParams.model_validate(params)
        n_vars = len(value_columns(p)) if p.columns is not None else None
        return DataLayout(n_vars, p.features, tf.freq_code(p.freq))

    def load(self, params: BaseModel, windows: Windows, data_dir: Path | None = None) -> DatasetSplits:
        p = params if isinstance(params, CsvParams) else CsvParams.model_validate(params)
        path = resolve(p, data_dir)
        digest = files.sha256_of(path)
        if p.sha256 and digest != p.sha256.lower():
            raise DataError(f"{path}: checksum mismatch: sha256 {digest}, expected {p.sha256}; replace the file "
                            "or update `sha256`")
        columns = value_columns(p) if p.columns is not None else None
        table = read_csv_table(path, date_column=p.date_column, columns=columns, fill=p.fill)
        n = len(table.values)
        borders = Borders(*p.borders) if p.borders else Borders.ratios(n, p.train_ratio, p.test_ratio)
        info = {"dataset": self.name, "file": str(path), "sha256": digest, "fill": p.fill,
                "original_scale_metrics": p.original_scale_metrics}
        return build_splits(table, windows=windows, borders=borders, features=p.features, target=p.target,
                            freq=p.freq, info=info)


PLUGINS = (CsvDataset(),)
