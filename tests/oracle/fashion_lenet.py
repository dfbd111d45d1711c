"""PyTorch oracle for the Fashion-MNIST example: the tutorial's LeNet loads its checkpoints.

usage: fashion_lenet.py DENSE.safetensors PRUNED.safetensors INPUTS.safetensors OUT.safetensors

Loads DENSE (plain keys) into the tutorial's LeNet, and PRUNED (`_orig`/`_mask` keys) into
another after `prune.identity` on its five weights, both strictly; writes their eval-mode logits
on INPUTS["x"] as "dense" and "pruned", and the pruned model's weights as the forward pass sees
them ("conv1.weight", ...).
"""
import os
import sys

import torch
import torch.nn.utils.prune as prune
from safetensors.torch import load_file, save_file

ORACLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../cli/tests/oracle")
sys.path.insert(0, ORACLES)
from interop import LeNet  # noqa: E402  (the tutorial's LeNet, shared with the CLI's tests)


dense_path, pruned_path, inputs_path, out_path = sys.argv[1:]
dense = LeNet()
dense.load_state_dict(load_file(dense_path), strict=True)
pruned = LeNet()
for name in ["conv1", "conv2", "fc1", "fc2", "fc3"]:
    prune.identity(getattr(pruned, name), "weight")
pruned.load_state_dict(load_file(pruned_path), strict=True)
x = load_file(inputs_path)["x"]
with torch.no_grad():
    out = {"dense": dense.eval()(x), "pruned": pruned.eval()(x)}
    for name in ["conv1", "conv2", "fc1", "fc2", "fc3"]:
        out[f"{name}.weight"] = getattr(pruned, name).weight.contiguous()
save_file(out, out_path)
