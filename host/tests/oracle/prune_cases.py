"""PyTorch oracle for the differential tests: runs pruning cases with torch.nn.utils.prune.

usage: prune_cases.py CASES.json TENSORS.safetensors OUT.safetensors OUT.json

Each case lists tensors (by key in TENSORS) that become the `weight` of one module each, and
steps applied in order. A step is {"method", "args", "targets": [index...], "scores": {index: key},
"seed"}; `global_unstructured` prunes all its targets together with args["pruning_method"].
The final mask of each target is written as "<case>/<index>"; OUT.json says which cases failed.
"""
import json
import sys

import torch
import torch.nn.utils.prune as prune
from safetensors.torch import load_file, save_file

METHODS = {
    "identity": prune.Identity,
    "random_unstructured": prune.RandomUnstructured,
    "l1_unstructured": prune.L1Unstructured,
    "random_structured": prune.RandomStructured,
    "ln_structured": prune.LnStructured,
}


def norm(n):
    return {"inf": float("inf"), "-inf": float("-inf")}.get(n, n)


def run_step(modules, step, tensors):
    args = dict(step["args"])
    if "n" in args:
        args["n"] = norm(args["n"])
    targets = [modules[i] for i in step["targets"]]
    scores = {int(i): tensors[key] for i, key in step.get("scores", {}).items()}
    torch.manual_seed(step["seed"])
    method = step["method"]
    if method == "global_unstructured":
        cls = METHODS[args.pop("pruning_method")]
        prune.global_unstructured(
            [(m, "weight") for m in targets],
            pruning_method=cls,
            importance_scores={(modules[i], "weight"): s for i, s in scores.items()} or None,
            **args,
        )
    elif method == "custom_from_mask":
        prune.custom_from_mask(targets[0], "weight", mask=tensors[args["mask"]])
    elif method == "remove":
        prune.remove(targets[0], "weight")
    else:
        if scores:
            args["importance_scores"] = scores[step["targets"][0]]
        METHODS[method].apply(targets[0], "weight", **args)


def main():
    cases_path, tensors_path, out_tensors, out_json = sys.argv[1:5]
    cases = json.load(open(cases_path))
    tensors = load_file(tensors_path)
    masks, report = {}, {}
    for case in cases:
        modules = []
        for key in case["tensors"]:
            m = torch.nn.Module()
            m.weight = torch.nn.Parameter(tensors[key].clone())
            modules.append(m)
        try:
            for step in case["steps"]:
                run_step(modules, step, tensors)
            report[case["id"]] = "ok"
            for i, m in enumerate(modules):
                mask = getattr(m, "weight_mask", None)
                if mask is None:
                    mask = torch.ones_like(m.weight)
                masks[f"{case['id']}/{i}"] = (mask != 0).to(torch.uint8).contiguous()
                masks[f"{case['id']}/{i}/effective"] = m.weight.detach().clone().contiguous()
        except Exception as e:  # the Rust side must fail too
            report[case["id"]] = f"error: {type(e).__name__}: {e}"
    save_file(masks, out_tensors)
    json.dump(report, open(out_json, "w"))


if __name__ == "__main__":
    main()
