"""Torch-Pruning (the version scripts/bootstrap.sh pins) removes given channels from
torchvision's resnet18, for tchprune's differential test of channel removal.

usage: depgraph_oracle.py STATE.safetensors PLAN.json OUT.safetensors GROUPS_OUT.json

STATE: the masked model's dense state_dict (tch names = torchvision's, no num_batches_tracked).
PLAN: {"num_classes": N, "groups": [{"writers": [...], "removed": [channel, ...]}, ...]}; the
input batch is the tensor "input" of STATE's file.
OUT: the pruned model's state_dict and its logits ("logits") on the input.
GROUPS_OUT: for each plan group, the tensors Torch-Pruning's DepGraph pruned with it, as
"module:out" or "module:in".
"""
import json
import sys

import torch
import torch_pruning as tp
import torchvision
from safetensors.torch import load_file, save_file

state_path, plan_path, out_path, groups_path = sys.argv[1:5]
state = load_file(state_path)
inputs = state.pop("input")
with open(plan_path) as f:
    plan = json.load(f)

model = torchvision.models.resnet18(num_classes=plan["num_classes"]).eval()
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected, unexpected
assert all(k.endswith("num_batches_tracked") for k in missing), missing

graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs[:1])
names = {module: name for name, module in model.named_modules()}
members = []
for group in plan["groups"]:
    layer = model.get_submodule(group["writers"][0].removesuffix(".weight"))
    pruning = graph.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=group["removed"])
    pruned = set()
    for dep, _ in pruning:
        module = dep.target.module
        if module not in names:
            continue  # additions and activations: no tensors
        # A BatchNorm's inputs are its outputs: tchprune lists it with the writers.
        out = graph.is_out_channel_pruning_fn(dep.handler) or isinstance(module, torch.nn.BatchNorm2d)
        side = "out" if out else "in"
        pruned.add(f"{names[module]}:{side}")
    members.append(sorted(pruned))
    pruning.prune()

with torch.no_grad():
    logits = model(inputs)
out = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
out["logits"] = logits
save_file(out, out_path)
with open(groups_path, "w") as f:
    json.dump(members, f)
