"""llm-compressor 0.14's `oneshot` on a Hugging Face Llama directory with given calibration ids:
the peer of `tchprune oneshot` in the benchmark and in the accuracy comparison. Runs in the venv
of scripts/llmcompressor_venv.sh.

Usage: llmcompressor_bench.py MODEL_DIR IDS.safetensors METHOD SPARSITY NM OUT.safetensors [DEVICE]
METHOD: sparsegpt or wanda; NM: none or 2:4. Writes the decoder blocks' pruned *_proj weights with
the wall time of `oneshot` (model already loaded) in the metadata ("seconds").
"""
import json
import sys
import time

import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


def processor(model_dir, vocab_size):
    """The model's tokenizer, or for a byte-level model without one, a tokenizer of the 256 byte
    values (the calibration ids come tokenized; llm-compressor wants a processor anyway)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except Exception:
        from tokenizers import Tokenizer, models
        vocab = {f"<{i:02x}>": i for i in range(vocab_size)}
        tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<00>"))
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<00>", pad_token="<00>")


def main():
    model_dir, ids_file, method, sparsity, nm, out = sys.argv[1:7]
    device = sys.argv[7] if len(sys.argv) > 7 else "cpu"
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    ids = load_file(ids_file)["input_ids"]
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).to(device)
    structure = "0:0" if nm == "none" else nm
    kind = SparseGPTModifier if method == "sparsegpt" else WandaPruningModifier
    recipe = kind(sparsity=float(sparsity), mask_structure=structure, targets=["Linear"], ignore=["lm_head"])
    tokenizer = processor(model_dir, model.config.vocab_size)
    start = time.perf_counter()
    oneshot(model=model, dataset=dataset, recipe=recipe, processor=tokenizer, num_calibration_samples=ids.shape[0],
            max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if ".layers." in k and k.endswith("_proj.weight")}
    save_file(state, out, metadata={"seconds": json.dumps(seconds)})
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
