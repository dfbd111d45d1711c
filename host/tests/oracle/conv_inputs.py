"""PyTorch oracle: where the convolutions of a built-in model sit.

usage: conv_inputs.py MODEL HEIGHT WIDTH OUT.json

MODEL is lenet (the seed tutorial's LeNet), resnet18 or resnet34 (torchvision's). A forward
pre-hook on every Conv2d records the height and width of its input for one image of
HEIGHT x WIDTH; OUT.json maps each convolution's weight key to its input size, stride and
padding, in the order the forward pass reaches them.
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3)
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return x.flatten(1)


name, height, width, out_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = {"lenet": LeNet, "resnet18": torchvision.models.resnet18,
         "resnet34": torchvision.models.resnet34}[name]().eval()
channels = 1 if name == "lenet" else 3
sites = []
for key, module in model.named_modules():
    if isinstance(module, nn.Conv2d):
        def record(module, inputs, key=key):
            sites.append({"weight": key + ".weight", "input_size": list(inputs[0].shape[2:]),
                          "stride": module.stride[0], "padding": module.padding[0]})
        module.register_forward_pre_hook(record)
with torch.no_grad():
    model(torch.zeros(1, channels, height, width))
with open(out_path, "w") as f:
    json.dump(sites, f)
