"""compressed-tensors' side of the sparse-bitmask interop tests (BitmaskCompressor).

usage: sparse_bitmask.py decompress COMPRESSED.safetensors OUT.safetensors
       sparse_bitmask.py compress DENSE.safetensors OUT.safetensors

decompress: reads tchprune's file with the config from its `compression_config` metadata and
writes every tensor compressed-tensors gives back. compress: compresses every `*.weight` of a
dense state_dict and writes the result with its config in the metadata, as tchprune reads it.
"""
import json
import sys

from compressed_tensors.compressors import BitmaskCompressor
from compressed_tensors.config import BitmaskConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file

command, source, out = sys.argv[1:]
if command == "decompress":
    with safe_open(source, framework="pt") as f:
        config = json.loads(f.metadata()["compression_config"])
    compressor = BitmaskCompressor(config=BitmaskConfig(**config))
    dense = {name: t.contiguous() for name, t in compressor.decompress(source)}
    save_file(dense, out)
elif command == "compress":
    config = BitmaskConfig(global_sparsity=0.0, sparsity_structure="unstructured")
    compressed = BitmaskCompressor(config=config).compress(load_file(source))
    compressed = {name: t.contiguous() for name, t in compressed.items()}
    save_file(compressed, out, metadata={"compression_config": config.model_dump_json()})
else:
    sys.exit(f"unknown command {command}")
