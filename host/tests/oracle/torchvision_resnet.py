"""PyTorch oracle: a checkpoint of tch's resnet18 loaded into torchvision's resnet18.

usage: torchvision_resnet.py CHECKPOINT.safetensors INPUT.safetensors OUT.safetensors

For every pruned pair `P_orig` + `P_mask` in CHECKPOINT, the module of `P` is reparametrized
with `prune.identity` first (as the tutorial's LeNet loads a pruned state_dict); then the
checkpoint loads into torchvision's resnet18. tch keeps no `num_batches_tracked`, so those are
the only keys allowed to be missing; nothing may be unexpected. Writes the eval-mode output on
INPUT["x"] as "output", and each pruned tensor as the forward pass sees it as "<P>".
"""
import sys

import torch
import torch.nn.utils.prune as prune
import torchvision
from safetensors.torch import load_file, save_file

checkpoint_path, input_path, out_path = sys.argv[1:]
state = load_file(checkpoint_path)
model = torchvision.models.resnet18()
pruned = [key[: -len("_orig")] for key in state if key.endswith("_orig")]
for key in pruned:
    module_path, name = key.rsplit(".", 1)
    prune.identity(model.get_submodule(module_path), name)
result = model.load_state_dict(state, strict=False)
assert not result.unexpected_keys, result.unexpected_keys
assert all(k.endswith("num_batches_tracked") for k in result.missing_keys), result.missing_keys
model.eval()
out = {}
with torch.no_grad():
    out["output"] = model(load_file(input_path)["x"])
    for key in pruned:
        module_path, name = key.rsplit(".", 1)
        out[key] = getattr(model.get_submodule(module_path), name).contiguous()
save_file(out, out_path)
