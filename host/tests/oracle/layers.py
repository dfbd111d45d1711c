"""PyTorch oracle for the layer tests: the same Sequential in torch.nn, trained forward.

usage: layers.py STATE.safetensors DATA.safetensors OUT.safetensors

Builds Sequential(Conv2d(1, 4, 3), BatchNorm2d(4), ReLU(), MaxPool2d(2), AvgPool2d(2, 1),
AdaptiveAvgPool2d(4), Flatten(), Linear(64, 10), BatchNorm1d(10)), loads STATE (strictly), runs
the batches "train0", "train1", ... through it in train mode without gradients, then "eval" in
eval mode. Writes the state_dict after training and the eval output as "output".
"""
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

state_path, data_path, out_path = sys.argv[1:]
model = nn.Sequential(
    nn.Conv2d(1, 4, 3),
    nn.BatchNorm2d(4),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.AvgPool2d(2, 1),
    nn.AdaptiveAvgPool2d(4),
    nn.Flatten(),
    nn.Linear(64, 10),
    nn.BatchNorm1d(10),
)
model.load_state_dict(load_file(state_path), strict=True)
data = load_file(data_path)
with torch.no_grad():
    model.train()
    for i in range(sum(1 for k in data if k.startswith("train"))):
        model(data[f"train{i}"])
    model.eval()
    out = {k: v.contiguous() for k, v in model.state_dict().items()}
    out["output"] = model(data["eval"])
save_file(out, out_path)
