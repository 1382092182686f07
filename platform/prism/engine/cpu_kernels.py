"""Prism's native CPU kernels: C++ sources built once per machine and loaded with ctypes.

The library is compiled on first use with the system C++ compiler (``$CXX``, else ``g++``)
for the CPU it runs on, into Prism's cache folder under a name that hashes the source, the
flags, the compiler and the CPU's flags; processes that start together race harmlessly (each
builds into its own file and renames it in place). Where no compiler is found, or
``PRISM_NATIVE_KERNELS=0``, :func:`native_kernels` returns None and callers keep their torch
path.

The kernel is compiled with ``-ffast-math`` (for vectorised ``exp`` and reductions) but linked
without it, so loading it never switches the process's floating-point modes.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from prism.models import cache_dir

logger = logging.getLogger(__name__)

SOURCES = tuple(
    Path(__file__).with_name("kernels") / name
    for name in ("paged_decode_attention.cpp", "quantized_matmul.cpp")
)
COMPILE_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-fopenmp", "-march=native", "-ffast-math")
LINK_FLAGS = ("-shared", "-fopenmp", "-lmvec")
DISABLE_ENV = "PRISM_NATIVE_KERNELS"
"""Set to ``0`` to run every kernel's torch path instead."""

_POINTER = ctypes.c_void_p
_INT64 = ctypes.c_int64
_DECODE_ARGS = [_POINTER] * 7 + [_INT64] * 7 + [ctypes.c_float, ctypes.c_int]
_QUANTIZED_MATMUL_ARGS = (
    [_POINTER, _INT64, _INT64]
    + [_POINTER] * 3
    + [_INT64] * 2
    + [ctypes.c_int]
    + [_POINTER] * 2
    + [ctypes.c_int]
)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _library_name(compiler: str) -> str:
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    digest = hashlib.sha256()
    for part in (
        *(source.read_bytes() for source in SOURCES),
        " ".join(COMPILE_FLAGS + LINK_FLAGS).encode(),
    ):
        digest.update(part)
    for text in (version, platform.machine(), _cpu_flags()):
        digest.update(text.encode())
    return f"prism_kernels_{digest.hexdigest()[:20]}.so"


def _build(compiler: str, target: Path) -> None:
    """Compile, then link without ``-ffast-math`` (whose start-up code would flush denormals)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        objects = [str(Path(scratch) / f"{source.stem}.o") for source in SOURCES]
        built = Path(scratch) / target.name
        for source, obj in zip(SOURCES, objects, strict=True):
            subprocess.run(
                [compiler, *COMPILE_FLAGS, "-c", str(source), "-o", obj],
                capture_output=True,
                text=True,
                check=True,
            )
        subprocess.run(
            [compiler, *objects, *LINK_FLAGS, "-o", str(built)],
            capture_output=True,
            text=True,
            check=True,
        )
        os.replace(built, target)


def _load(compiler: str) -> ctypes.CDLL:
    target = cache_dir() / "kernels" / _library_name(compiler)
    if not target.exists():
        _build(compiler, target)
    library = ctypes.CDLL(str(target))
    for name in ("prism_decode_attention_f32", "prism_decode_attention_bf16"):
        function = getattr(library, name)
        function.argtypes = _DECODE_ARGS
        function.restype = ctypes.c_int
    library.prism_quantized_matmul.argtypes = _QUANTIZED_MATMUL_ARGS
    library.prism_quantized_matmul.restype = ctypes.c_int
    return library


@functools.cache
def native_kernels() -> ctypes.CDLL | None:
    """The loaded kernel library, built first if this machine has none yet; None if off."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        logger.warning("no C++ compiler found: Prism's CPU kernels fall back to torch")
        return None
    try:
        return _load(compiler)
    except subprocess.CalledProcessError as error:
        logger.warning("building Prism's CPU kernels failed, torch runs instead:\n%s", error.stderr)
    except OSError as error:
        logger.warning(
            "Prism's CPU kernels could not be built or loaded, torch runs instead: %s", error
        )
    return None


_DECODE_FUNCTIONS = {
    torch.float32: "prism_decode_attention_f32",
    torch.bfloat16: "prism_decode_attention_bf16",
}


def supports_decode_attention(cache: torch.Tensor) -> bool:
    """Whether :func:`decode_attention` runs for this layer cache (CPU, fp32 or bf16)."""
    return (
        cache.device.type == "cpu"
        and cache.dtype in _DECODE_FUNCTIONS
        and cache.is_contiguous()
        and native_kernels() is not None
    )


def decode_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    context_starts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one query token per sequence over its keys and values, read in the cache.

    ``query`` [seqs, heads, dim]; ``k_cache``/``v_cache`` [kv_heads, blocks, block_size,
    dim]; ``block_tables`` [seqs, width] int64. Sequence i attends to the rows
    ``context_starts[i]`` (0 if None) to ``context_lens[i] - 1`` of its table, both [seqs]
    int64; blocks before its first row are never read. Returns [seqs, heads, dim] in the
    query's dtype, computed in fp32. Check :func:`supports_decode_attention` first.
    """
    library = native_kernels()
    if library is None:
        raise RuntimeError("Prism's CPU kernels are not available")
    function_name = _DECODE_FUNCTIONS.get(k_cache.dtype)
    if context_starts is None:
        context_starts = torch.zeros_like(context_lens)
    tensors = (query, k_cache, v_cache, block_tables, context_lens, context_starts)
    if function_name is None or any(tensor.device.type != "cpu" for tensor in tensors):
        raise ValueError("decode attention: CPU tensors and fp32 or bf16 caches only")
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads, num_blocks, block_size, cache_dim = k_cache.shape
    if (v_cache.shape, v_cache.dtype) != (k_cache.shape, k_cache.dtype) or cache_dim != head_dim:
        raise ValueError("decode attention: query, key and value caches do not match")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("decode attention: the caches must be contiguous")
    if (
        block_tables.dim() != 2
        or block_tables.shape[0] != num_seqs
        or context_lens.shape != (num_seqs,)
        or context_starts.shape != (num_seqs,)
    ):
        raise ValueError("decode attention: one block table and context range per sequence")
    wide_query = query.float().contiguous()
    out = torch.empty_like(wide_query)
    tables = block_tables.to(torch.int64).contiguous()
    starts = context_starts.to(torch.int64).contiguous()
    lengths = context_lens.to(torch.int64).contiguous()
    status = getattr(library, function_name)(
        wide_query.data_ptr(),
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        tables.data_ptr(),
        starts.data_ptr(),
        lengths.data_ptr(),
        out.data_ptr(),
        num_seqs,
        num_heads,
        num_kv_heads,
        head_dim,
        num_blocks,
        block_size,
        tables.shape[1],
        head_dim**-0.5,
        torch.get_num_threads(),
    )
    if status != 0:
        raise ValueError("decode attention: a context range or block id is out of range")
    return out.to(query.dtype)
