"""HDF5 conventions shared by every file format of the workflow: ids are UTF-8 strings."""

from __future__ import annotations

import h5py

STRING = h5py.string_dtype(encoding="utf-8")  # dtype of id datasets; read them with .asstr()
