"""PyTorch's side of the interop tests: the tutorial's LeNet, pruned checkpoints in and out.

Usage:
  interop.py make DIR          LeNet's state_dict (lenet.safetensors) and an input (x.safetensors)
  interop.py load DIR          loads tchprune's outputs into PyTorch models: pruned.safetensors (and
                               pruned_bool.safetensors, masks as bool) into a LeNet whose pruned
                               tensors were prune.identity'd, final.safetensors
                               into a plain LeNet; writes load.json: whether their outputs equal
                               PyTorch's own pruning of lenet.safetensors by plan.json
  interop.py prune DIR         prunes lenet.safetensors by first.json (torch_pruned.safetensors),
                               then by second.json too (torch_both.safetensors, and its output on x
                               as torch_out.safetensors)
"""

import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plan_oracle  # noqa: E402


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3)
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, int(x.nelement() / x.shape[0]))
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def lenet_from(path):
    model = LeNet()
    model.load_state_dict(load_file(path))
    return model


def run_plan(model, plan_path, base):
    with open(plan_path) as f:
        plan = json.load(f)
    keys = plan_oracle.logical_keys(model)
    if "seed" in plan:
        torch.manual_seed(plan["seed"])
    for step in plan["steps"]:
        plan_oracle.run_step(model, step, keys, base)


def state(model):
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def make(d):
    torch.manual_seed(0)
    save_file(state(LeNet()), os.path.join(d, "lenet.safetensors"))
    save_file({"x": torch.randn(4, 1, 28, 28)}, os.path.join(d, "x.safetensors"))


def load(d):
    x = load_file(os.path.join(d, "x.safetensors"))["x"]
    reference = lenet_from(os.path.join(d, "lenet.safetensors"))
    run_plan(reference, os.path.join(d, "plan.json"), d)
    expected = reference(x)

    def identity_pruned(state):
        model = LeNet()
        for key in state:
            if key.endswith("_orig"):
                module, name = plan_oracle.locate(model, key[: -len("_orig")])
                prune.identity(module, name)
        model.load_state_dict(state, strict=True)
        return model

    pruned_state = load_file(os.path.join(d, "pruned.safetensors"))
    pruned = identity_pruned(pruned_state)
    bool_masks = identity_pruned(load_file(os.path.join(d, "pruned_bool.safetensors")))

    final = LeNet()
    final.load_state_dict(load_file(os.path.join(d, "final.safetensors")), strict=True)

    result = {
        "pruned_outputs_equal": torch.equal(pruned(x), expected),
        "final_outputs_equal": torch.equal(final(x), expected),
        "bool_mask_outputs_equal": torch.equal(bool_masks(x), expected),
        "pruned_masks_equal": all(
            torch.equal(pruned_state[k], v) for k, v in state(reference).items() if k.endswith("_mask")
        ),
    }
    with open(os.path.join(d, "load.json"), "w") as f:
        json.dump(result, f)


def prune_twice(d):
    model = lenet_from(os.path.join(d, "lenet.safetensors"))
    run_plan(model, os.path.join(d, "first.json"), d)
    save_file(state(model), os.path.join(d, "torch_pruned.safetensors"))
    run_plan(model, os.path.join(d, "second.json"), d)
    save_file(state(model), os.path.join(d, "torch_both.safetensors"))
    x = load_file(os.path.join(d, "x.safetensors"))["x"]
    save_file({"y": model(x).detach().contiguous()}, os.path.join(d, "torch_out.safetensors"))


if __name__ == "__main__":
    {"make": make, "load": load, "prune": prune_twice}[sys.argv[1]](sys.argv[2])
