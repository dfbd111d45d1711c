"""What transformers and compressed-tensors make of a Hugging Face directory tchprune wrote.

  dense DIR OUT.safetensors         the decoder blocks' *_proj weights as transformers loads them
  decompress DIR OUT.safetensors    the same weights from a compressed-tensors directory, restored
                                    by compressed-tensors' ModelCompressor into a fresh model
"""
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, LlamaForCausalLM


def projections(model):
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()
            if ".layers." in k and k.endswith("_proj.weight")}


def main():
    mode, directory, out = sys.argv[1:4]
    if mode == "dense":
        model = LlamaForCausalLM.from_pretrained(directory)
        # A forward pass runs on the loaded weights.
        model(torch.zeros(1, 4, dtype=torch.long))
        save_file(projections(model), out)
    elif mode == "decompress":
        from compressed_tensors.compressors import ModelCompressor
        config = AutoConfig.from_pretrained(directory)
        compressor = ModelCompressor.from_pretrained(directory)
        assert compressor is not None and compressor.sparsity_config is not None, "no sparsity config"
        print(compressor.sparsity_config.format, compressor.sparsity_config.sparsity_structure)
        qc = config.quantization_config if isinstance(config.quantization_config, dict) else config.quantization_config.to_dict()
        del config.quantization_config
        model = LlamaForCausalLM(config)
        compressor.decompress(directory, model)
        save_file(projections(model), out)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
