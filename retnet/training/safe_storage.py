"""A ``torch.distributed.checkpoint`` storage format that never unpickles: safetensors shards + JSON metadata.

DCP's own ``FileSystemWriter`` pickles its metadata (``.metadata``) and any non-tensor value, and its reader
unpickles both: a crafted checkpoint folder runs code on load. This format keeps what DCP is good at (every rank
writes its shards; a checkpoint saved on N ranks loads on M, sharded or not) and stores it safely:

    state/
      __0.safetensors, __1.safetensors, ...   # each saving rank's tensor chunks (one file per rank)
      metadata.json                           # for every tensor: dtype, global size, its chunks and their files

Only tensors go through DCP; callers keep non-tensor values (optimizer hyper-parameters, steps stored as ints)
in JSON (:func:`split_tensors` / :func:`join_tensors`). Reading parses JSON and safetensors headers only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

METADATA_NAME = "metadata.json"
FORMAT = "retnet-dcp-safetensors"
FORMAT_VERSION = 1
_DTYPES = {
    str(dt).removeprefix("torch."): dt
    for dt in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.bool,
    )
}  # fmt: skip


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write one safetensors file (the single place that writes checkpoint tensors, so tests can fail it)."""
    save_file(tensors, str(path), metadata=metadata)


# ---- non-tensor values travel as JSON -----------------------------------------------------------------------
_TENSOR = "__tensor__"


def split_tensors(tree, prefix: str = "") -> tuple[dict[str, torch.Tensor], object]:
    """Separate the tensors of a nested dict/list from the rest.

    Args:
        tree: nested dicts (string keys), lists/tuples, tensors and JSON values.
        prefix: key prefix of the tensors.

    Returns:
        ``(tensors, skeleton)``: the tensors under dotted keys, and the tree with each tensor replaced by
        ``{"__tensor__": key}`` (JSON-serialisable).

    Raises:
        TypeError: a value that is neither a tensor nor JSON (str, int, float, bool, None).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node, key):
        if isinstance(node, torch.Tensor):
            tensors[key] = node
            return {_TENSOR: key}
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError(f"cannot store key {k!r} of {key or 'the state'} in JSON")
                out[str(k)] = walk(v, f"{key}.{k}" if key else str(k))
            return out
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (str, int, float, bool)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} at {key} in a checkpoint (tensors and JSON values only)")

    skeleton = walk(tree, prefix)
    return tensors, skeleton


def join_tensors(skeleton, tensors: dict[str, torch.Tensor], template=None):
    """Inverse of :func:`split_tensors`: put ``tensors`` back into ``skeleton``.

    ``template`` (the live state the skeleton was saved from, e.g. a fresh optimizer's) restores integer dict
    keys and tuples where JSON turned them into strings and lists.

    Raises:
        ValueError: a tensor the skeleton names is missing.
    """

    def walk(node, tmpl):
        if isinstance(node, dict) and set(node) == {_TENSOR}:
            key = node[_TENSOR]
            if key not in tensors:
                raise ValueError(f"checkpoint is missing tensor {key}")
            return tensors[key]
        if isinstance(node, dict):
            keys = {str(k): k for k in tmpl} if isinstance(tmpl, dict) else {}
            return {
                keys.get(k, k): walk(v, tmpl.get(keys.get(k, k)) if isinstance(tmpl, dict) else None)
                for k, v in node.items()
            }
        if isinstance(node, list):
            items = [
                walk(v, tmpl[i] if isinstance(tmpl, (list, tuple)) and i < len(tmpl) else None)
                for i, v in enumerate(node)
            ]
            return tuple(items) if isinstance(tmpl, tuple) else items
        return node

    return walk(skeleton, template)


# ---- writing ----------------------------------------------------------------------------------------------
class SafeTensorsWriter(StorageWriter):
    """DCP storage writer: one safetensors file per saving rank, metadata as JSON (written by the coordinator)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None:
            self.path = Path(checkpoint_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args, **kwargs) -> None:
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        self.path.mkdir(parents=True, exist_ok=True)
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return [dataclasses.replace(plan, storage_data=f"__{i}.safetensors") for i, plan in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        file_name: str = plan.storage_data
        tensors, results = {}, []
        for item in plan.items:
            if item.tensor_data is None:
                raise TypeError(f"{item.index.fqn} is not a tensor; keep non-tensor values out of the DCP state")
            data = planner.resolve_data(item)
            tensor = data.detach().to("cpu").contiguous().clone()  # own storage: safetensors refuses shared ones
            offsets = list(item.index.offset) if item.index.offset is not None else [0] * tensor.dim()
            key = f"{item.index.fqn}@{','.join(map(str, offsets))}"
            tensors[key] = tensor
            storage = {"file": file_name, "key": key}
            results.append(
                WriteResult(
                    index=item.index, size_in_bytes=tensor.numel() * tensor.element_size(), storage_data=storage
                )
            )
        write_safetensors(tensors, self.path / file_name, metadata={"format": FORMAT})
        fut: Future = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        tensors = {}
        for fqn, md in metadata.state_dict_metadata.items():
            if not isinstance(md, TensorStorageMetadata):
                raise TypeError(f"{fqn} is not a tensor; keep non-tensor values out of the DCP state")
            tensors[fqn] = {
                "dtype": str(md.properties.dtype).removeprefix("torch."),
                "size": list(md.size),
                "chunks": [{"offsets": list(c.offsets), "sizes": list(c.sizes)} for c in md.chunks],
            }
        storage = [{"fqn": r.index.fqn, "offset": list(r.index.offset), **r.storage_data} for rs in results for r in rs]
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "tensors": tensors, "storage": storage}
        (self.path / METADATA_NAME).write_text(json.dumps(doc) + "\n")

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=str(self.path))

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return True


# ---- reading ----------------------------------------------------------------------------------------------
def is_safe_state(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a state written by :class:`SafeTensorsWriter`."""
    return (Path(path) / METADATA_NAME).is_file()


def _size(values, what: str) -> torch.Size:
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise ValueError(f"bad {what} in {METADATA_NAME}: {values!r}")
    return torch.Size(values)


def state_files(path: str | os.PathLike) -> list[str]:
    """The tensor files a state's metadata names (relative to the state folder)."""
    doc = _read_doc(Path(path))
    return sorted({entry["file"] for entry in doc["storage"]})


def _read_doc(path: Path) -> dict:
    try:
        doc = json.loads((path / METADATA_NAME).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path / METADATA_NAME}: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path / METADATA_NAME} is not a {FORMAT} v{FORMAT_VERSION} metadata file")
    for entry in doc.get("storage", []):
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
            raise ValueError(f"bad tensor file name in {path / METADATA_NAME}: {name!r}")
    return doc


class SafeTensorsReader(StorageReader):
    """DCP storage reader for :class:`SafeTensorsWriter` folders: JSON and safetensors only, nothing unpickled."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None:
            self.path = Path(checkpoint_id)

    def read_metadata(self, *args, **kwargs) -> Metadata:
        doc = _read_doc(self.path)
        tensors = {}
        for fqn, md in doc["tensors"].items():
            if md.get("dtype") not in _DTYPES:
                raise ValueError(f"unsupported dtype {md.get('dtype')!r} for {fqn} in {self.path / METADATA_NAME}")
            chunks = [
                ChunkStorageMetadata(_size(c["offsets"], "offsets"), _size(c["sizes"], "sizes")) for c in md["chunks"]
            ]
            props = TensorProperties(dtype=_DTYPES[md["dtype"]])
            tensors[fqn] = TensorStorageMetadata(props, _size(md["size"], "size"), chunks)
        storage = {
            MetadataIndex(e["fqn"], _size(e["offset"], "offset")): {"file": e["file"], "key": e["key"]}
            for e in doc["storage"]
        }
        return Metadata(state_dict_metadata=tensors, storage_data=storage, storage_meta=StorageMeta())

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args, **kwargs) -> None:
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        by_file: dict[str, list] = {}
        for item in plan.items:
            if item.type == LoadItemType.BYTE_IO:
                raise ValueError(f"{item.dest_index.fqn} is not a tensor in this format")
            by_file.setdefault(self.storage_data[item.storage_index]["file"], []).append(item)
        for name, items in by_file.items():
            with safe_open(str(self.path / name), framework="pt", device="cpu") as f:
                for item in items:
                    stored = f.get_tensor(self.storage_data[item.storage_index]["key"])
                    for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths)):
                        stored = stored.narrow(dim, start, length)
                    target = planner.resolve_tensor(item).detach()
                    if target.shape != stored.shape:
                        shapes = f"{tuple(stored.shape)} != expected {tuple(target.shape)}"
                        raise ValueError(f"{item.dest_index.fqn}: stored chunk {shapes}")
                    target.copy_(stored)
                    planner.commit_tensor(item, target)
        fut: Future = Future()
        fut.set_result(None)
        return fut

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return True
