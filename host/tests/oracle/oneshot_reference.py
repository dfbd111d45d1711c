"""Plain PyTorch references of one-shot LLM pruning, written from the papers, for the tests and the
benchmark to compare tchprune with.

- Wanda (Sun et al. 2023): score |W_ij| * sqrt(S_j), the floor(sparsity * in) smallest of each row
  by a stable sort, or the N smallest of every M columns (topk).
- SparseGPT (Frantar & Alistarh 2023), as the paper's code and llm-compressor run it: dead inputs,
  1% dampening, H^-1's upper Cholesky factor from three factorizations, blocks of 128 columns with
  lazy updates, the unstructured mask of a block at or below its int(sparsity * n)-th smallest
  w^2 / d^2, N:M chosen per row as the column loop reaches each group.
- The layer-sequential driver: every block of a transformers LlamaForCausalLM calibrated on the
  outputs of the blocks already pruned before it, its seven Linear layers' statistics collected in
  one pass, all seven pruned, then the block run again for the next.

Usage:
  layer IN.safetensors OUT.safetensors METHOD SPARSITY NM   (IN: weight, gram, mean_squares)
  logits MODEL_DIR IDS.safetensors OUT.safetensors          (IDS: input_ids)
  oneshot MODEL_DIR CALIB.safetensors OUT.safetensors METHOD SPARSITY NM [DEVICE]
  ppl MODEL_DIR EVAL.safetensors                            (prints the perplexity)
  table MODEL_DIR CALIB.safetensors OUT_DIR DEVICE          (every method at 50%, 2:4, 70%: one
                                                             OUT_DIR/METHOD-SETTING.safetensors each)
NM is "none" or "2:4"; METHOD is wanda, sparsegpt or magnitude.
"""
import json
import sys
import time

import torch
from safetensors.torch import load_file, save_file


def parse_nm(text):
    if text == "none":
        return 0, 0
    n, m = text.split(":")
    return int(n), int(m)


def nm_smallest(metric, n, m):
    """True at the n smallest of every m consecutive columns of each row (topk per group)."""
    pruned = torch.zeros_like(metric, dtype=torch.bool)
    for ii in range(0, metric.shape[1], m):
        tmp = metric[:, ii:ii + m]
        pruned.scatter_(1, ii + torch.topk(tmp, n, dim=1, largest=False)[1], True)
    return pruned


def wanda(weight, mean_squares, sparsity, n, m):
    metric = weight.float().abs() * torch.sqrt(mean_squares.reshape(1, -1))
    pruned = torch.zeros_like(metric, dtype=torch.bool)
    if n:
        pruned = nm_smallest(metric, n, m)
    else:
        order = torch.sort(metric, dim=-1, stable=True)[1]
        pruned.scatter_(1, order[:, : int(metric.shape[1] * sparsity)], True)
    w = weight.clone()
    w[pruned] = 0
    return ~pruned, w


def magnitude(weight, sparsity, n, m):
    metric = weight.float().abs()
    pruned = torch.zeros_like(metric, dtype=torch.bool)
    if n:
        pruned = nm_smallest(metric, n, m)
    else:
        flat = metric.flatten()
        order = torch.sort(flat, stable=True)[1]
        pruned.view(-1)[order[: int(flat.numel() * sparsity)]] = True
    w = weight.clone()
    w[pruned] = 0
    return ~pruned, w


def sparsegpt(weight, gram, sparsity, n, m, block_size=128, dampening=0.01):
    W = weight.clone().float()
    H = gram.clone().float()
    columns = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = dampening * torch.mean(torch.diag(H))
    diag = torch.arange(columns, device=H.device)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    pruned_all = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, columns, block_size):
        i2 = min(i1 + block_size, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if n == 0:
            if sparsity > 0:
                tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)] if int(tmp.numel() * sparsity) < tmp.numel() else float("inf")
                mask1 = tmp <= thresh
            else:
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if n != 0 and i % m == 0:
                tmp = W1[:, i:(i + m)] ** 2 / (torch.diag(Hinv1)[i:(i + m)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, n, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        pruned_all[:, i1:i2] = mask1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return ~pruned_all, W.to(weight.dtype)


LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def load_model(model_dir, device="cpu"):
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    return model.to(device).eval()


@torch.no_grad()
def oneshot(model, ids, method, sparsity, n, m, batch=8):
    """Prunes every Linear layer of the decoder blocks, block by block; returns the seconds taken."""
    start = time.perf_counter()
    inner = model.model
    hidden = inner.embed_tokens(ids)
    positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
    rope = inner.rotary_emb(hidden, positions)

    def run_block(layer, h):
        out = []
        for b in range(0, h.shape[0], batch):
            x = h[b:b + batch]
            res = layer(x, attention_mask=None, position_ids=positions, position_embeddings=rope)
            out.append(res[0] if isinstance(res, tuple) else res)
        return torch.cat(out)

    for layer in inner.layers:
        stats = {}
        hooks = []
        if method != "magnitude":
            for name in LINEARS:
                module = layer.get_submodule(name)

                def hook(mod, inputs, _out, name=name):
                    x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
                    s = stats.setdefault(name, {"gram": 0, "sq": 0, "samples": 0})
                    if method == "sparsegpt":
                        s["gram"] = s["gram"] + x.t() @ x
                    s["sq"] = s["sq"] + (x * x).sum(0)
                    s["samples"] += inputs[0].shape[0]
                hooks.append(module.register_forward_hook(hook))
            run_block(layer, hidden)
            for h in hooks:
                h.remove()
        for name in LINEARS:
            module = layer.get_submodule(name)
            weight = module.weight.data
            if method == "wanda":
                s = stats[name]
                _, w = wanda(weight, s["sq"] / s["samples"], sparsity, n, m)
            elif method == "sparsegpt":
                _, w = sparsegpt(weight, stats[name]["gram"], sparsity, n, m)
            else:
                _, w = magnitude(weight, sparsity, n, m)
            module.weight.data.copy_(w.to(weight.dtype))
        hidden = run_block(layer, hidden)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def perplexity(model, ids, batch=16):
    total, count = 0.0, 0
    for b in range(0, ids.shape[0], batch):
        x = ids[b:b + batch]
        logits = model(x).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += x[:, 1:].numel()
    return float(torch.exp(torch.tensor(total / count)))


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    mode = sys.argv[1]
    if mode == "layer":
        t = load_file(sys.argv[2])
        method, sparsity, (n, m) = sys.argv[4], float(sys.argv[5]), parse_nm(sys.argv[6])
        if method == "wanda":
            mask, w = wanda(t["weight"], t["mean_squares"], sparsity, n, m)
        elif method == "sparsegpt":
            mask, w = sparsegpt(t["weight"], t["gram"], sparsity, n, m)
        else:
            mask, w = magnitude(t["weight"], sparsity, n, m)
        save_file({"mask": mask.contiguous(), "weight": w.contiguous()}, sys.argv[3])
    elif mode == "logits":
        model = load_model(sys.argv[2])
        ids = load_file(sys.argv[3])["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits
        save_file({"logits": logits.contiguous()}, sys.argv[4])
    elif mode == "oneshot":
        device = sys.argv[8] if len(sys.argv) > 8 else "cpu"
        model = load_model(sys.argv[2], device)
        ids = load_file(sys.argv[3])["input_ids"].to(device)
        seconds = oneshot(model, ids, sys.argv[5], float(sys.argv[6]), *parse_nm(sys.argv[7]))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                 if ".layers." in k and k.endswith("_proj.weight")}
        save_file(state, sys.argv[4], metadata={"seconds": json.dumps(seconds)})
    elif mode == "table":
        import copy
        import os
        device = sys.argv[5]
        base = load_model(sys.argv[2], device)
        ids = load_file(sys.argv[3])["input_ids"].to(device)
        for method in ("magnitude", "wanda", "sparsegpt"):
            for title, sparsity, nm in (("50", 0.5, "none"), ("24", 0.5, "2:4"), ("70", 0.7, "none")):
                model = copy.deepcopy(base)
                seconds = oneshot(model, ids, method, sparsity, *parse_nm(nm))
                state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                         if ".layers." in k and k.endswith("_proj.weight")}
                out = os.path.join(sys.argv[4], f"{method}-{title}.safetensors")
                save_file(state, out, metadata={"seconds": json.dumps(seconds)})
    elif mode == "ppl":
        model = load_model(sys.argv[2])
        ids = load_file(sys.argv[3])["input_ids"]
        print(perplexity(model, ids))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
