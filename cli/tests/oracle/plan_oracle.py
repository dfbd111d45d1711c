"""PyTorch's answer to tchprune's plans: runs each case's plan with torch.nn.utils.prune.

Usage: plan_oracle.py CASES_DIR
Each subdirectory of CASES_DIR holds `in.safetensors` and `plan.json` (plus the side files the
plan names). The script writes `torch.safetensors` there, PyTorch's state_dict after the plan,
or `torch-error.txt` with PyTorch's exception when the plan fails.

The plan contract (see tchprune's `plan` module): a key P names tensor P or the pruned pair
P_orig + P_mask; patterns use * (dots included) and ?; each pattern's matches are taken in
sorted order, without repeats; `seed` seeds torch before the first step.
"""

import json
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from safetensors.torch import load_file, save_file


def build_module(state):
    """A module tree with one parameter per key; pruned pairs reparametrized again."""
    root = nn.Module()

    def owner(key):
        module = root
        *path, name = key.split(".")
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        return module, name

    pruned = {
        k[: -len("_orig")]
        for k in state
        if k.endswith("_orig") and k[: -len("_orig")] + "_mask" in state
    }
    for key in sorted(state):
        if any(key in (p + "_orig", p + "_mask") for p in pruned):
            continue
        t = state[key]
        module, name = owner(key)
        module.register_parameter(name, nn.Parameter(t, requires_grad=t.is_floating_point()))
    for key in sorted(pruned):
        orig, mask = state[key + "_orig"], state[key + "_mask"]
        module, name = owner(key)
        module.register_parameter(name, nn.Parameter(orig, requires_grad=orig.is_floating_point()))
        prune.custom_from_mask(module, name, mask)
    return root


def logical_keys(root):
    keys = []
    for prefix, module in root.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            base = name[: -len("_orig")] if name.endswith("_orig") and hasattr(module, name[: -len("_orig")] + "_mask") else name
            keys.append(f"{prefix}.{base}" if prefix else base)
    return sorted(keys)


def resolve(patterns, keys):
    matched = []
    for pattern in patterns:
        regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z")
        hits = [k for k in keys if regex.match(k)]
        if not hits:
            raise ValueError(f"'{pattern}' matches no parameter")
        matched += [h for h in hits if h not in matched]
    return matched


def locate(root, key):
    *path, name = key.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    return module, name


def norm(n):
    return {"inf": float("inf"), "-inf": float("-inf"), "fro": "fro"}.get(n, n) if isinstance(n, str) else n


UNSTRUCTURED = {
    "l1_unstructured": prune.L1Unstructured,
    "random_unstructured": prune.RandomUnstructured,
    "identity": prune.Identity,
}


def run_step(root, step, keys, base):
    args = {k: v for k, v in step.items() if k not in ("method", "params", "scores_file", "mask_file")}
    method = step["method"]
    targets = resolve(step["params"], keys)
    scores = load_file(os.path.join(base, step["scores_file"])) if "scores_file" in step else {}
    if method == "global_unstructured":
        pruning_method = UNSTRUCTURED[args.pop("pruning_method")]
        params = [locate(root, k) for k in targets]
        importance = {locate(root, k): scores[k] for k in targets} if scores else None
        prune.global_unstructured(params, pruning_method, importance_scores=importance, **args)
        return
    for key in targets:
        module, name = locate(root, key)
        if method == "remove":
            prune.remove(module, name)
        elif method == "identity":
            prune.identity(module, name)
        elif method == "custom_from_mask":
            masks = load_file(os.path.join(base, step["mask_file"]))
            prune.custom_from_mask(module, name, masks[key])
        elif method == "l1_unstructured":
            prune.l1_unstructured(module, name, importance_scores=scores.get(key), **args)
        elif method == "random_unstructured":
            prune.random_unstructured(module, name, **args)
        elif method == "ln_structured":
            args["n"] = norm(args["n"])
            prune.ln_structured(module, name, importance_scores=scores.get(key), **args)
        elif method == "random_structured":
            prune.random_structured(module, name, **args)
        else:
            raise ValueError(f"the oracle does not know method {method}")


def run_case(case):
    with open(os.path.join(case, "plan.json")) as f:
        plan = json.load(f)
    root = build_module(load_file(os.path.join(case, "in.safetensors")))
    keys = logical_keys(root)
    if "seed" in plan:
        torch.manual_seed(plan["seed"])
    for step in plan["steps"]:
        run_step(root, step, keys, case)
    state = {k: v.detach().contiguous() for k, v in root.state_dict().items()}
    save_file(state, os.path.join(case, "torch.safetensors"))


def main():
    cases = sys.argv[1]
    for name in sorted(os.listdir(cases)):
        case = os.path.join(cases, name)
        try:
            run_case(case)
        except Exception as err:  # noqa: BLE001 - the failure itself is the answer
            with open(os.path.join(case, "torch-error.txt"), "w") as f:
                f.write(f"{type(err).__name__}: {err}\n")


if __name__ == "__main__":
    main()
