"""PyTorch's side of tchprune's benchmark: the same workloads on the same tensors.

Usage: pytorch_bench.py RUNS [WORKLOAD ...]
Prints one JSON object: workload id -> {"seconds": median} for timings, or {"ratio": r, ...}
for overheads and sizes. The tensors come from the same seeds as the Rust side (libtorch's CPU
generator draws the same numbers for both).
"""

import io
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune


def median_time(setup, run, runs):
    times = []
    for _ in range(runs):
        state = setup()
        start = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def holder(t):
    m = nn.Module()
    m.weight = nn.Parameter(t)
    return m


def big_tensor():
    torch.manual_seed(0)
    return torch.randn(4096, 4096)


def resnet50_shapes():
    shapes = [("conv1.weight", (64, 3, 7, 7))]
    inplanes = 64
    for layer, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512]), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            shapes += [
                (f"{p}.conv1.weight", (width, inplanes, 1, 1)),
                (f"{p}.conv2.weight", (width, width, 3, 3)),
                (f"{p}.conv3.weight", (width * 4, width, 1, 1)),
            ]
            if b == 0:
                shapes.append((f"{p}.downsample.0.weight", (width * 4, inplanes, 1, 1)))
            inplanes = width * 4
    shapes.append(("fc.weight", (1000, 2048)))
    return shapes


def resnet50_tensors():
    torch.manual_seed(0)
    return [(k, torch.randn(*s)) for k, s in resnet50_shapes()]


def module_tree(tensors):
    root = nn.Module()
    params = []
    for key, t in tensors:
        module = root
        *path, name = key.split(".")
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(name, nn.Parameter(t))
        params.append((module, name))
    return root, params


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
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class FooBarPruningMethod(prune.BasePruningMethod):
    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def tutorial(_):
    torch.manual_seed(1)
    model = LeNet()
    prune.random_unstructured(model.conv1, name="weight", amount=0.3)
    prune.l1_unstructured(model.conv1, name="bias", amount=3)
    prune.ln_structured(model.conv1, name="weight", amount=0.5, n=2, dim=0)
    prune.remove(model.conv1, "weight")
    model = LeNet()
    for _, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, name="weight", amount=0.2)
        elif isinstance(module, nn.Linear):
            prune.l1_unstructured(module, name="weight", amount=0.4)
    model = LeNet()
    parameters = [(getattr(model, n), "weight") for n in ["conv1", "conv2", "fc1", "fc2", "fc3"]]
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=0.2)
    FooBarPruningMethod.apply(model.fc3, "bias")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048))


def prune_mlp(model):
    for i in (0, 2, 4):
        prune.l1_unstructured(model[i], "weight", amount=0.9)


def interleaved(dense_step, pruned_step, calls):
    """Median seconds per call of each step, the two alternating (in both orders) so that drift
    in the machine's speed or memory state weighs on both alike."""
    for _ in range(3):
        dense_step()
        pruned_step()
    dense, pruned = [], []
    for i in range(calls):
        order = [(dense_step, dense), (pruned_step, pruned)]
        for step, times in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return statistics.median(dense), statistics.median(pruned)


def mlp_overhead(make_optimizer, calls):
    """A step of the MLP, 90% pruned against unpruned: a forward pass without gradients when
    `make_optimizer` is None, else forward, backward and the optimizer it makes."""
    x = torch.randn(64, 2048)
    target = torch.randn(64, 2048)

    def make_step(pruned):
        model = mlp()
        if pruned:
            prune_mlp(model)
        if make_optimizer is None:
            model.eval()

            def step():
                with torch.no_grad():
                    model(x)
        else:
            opt = make_optimizer(model.parameters())

            def step():
                opt.zero_grad()
                F.mse_loss(model(x), target).backward()
                opt.step()

        return step

    dense, pruned = interleaved(make_step(False), make_step(True), calls)
    return {"ratio": pruned / dense, "dense_seconds": dense, "pruned_seconds": pruned}


def sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.01)


def adam(parameters):
    return torch.optim.Adam(parameters, lr=1e-3)


def many_keys(runs):
    """tchprune's many_keys: a plan's L1 pruning of every weight of a checkpoint of 100,000 small
    tensors, file to file, with torch.nn.utils.prune; then the output's sparsity."""
    import tempfile
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    tensors = {}
    for i in range(50_000):
        tensors[f"layers.{i}.weight"] = torch.randn(4, 4)
        tensors[f"layers.{i}.bias"] = torch.randn(4)
    with tempfile.TemporaryDirectory() as tmp:
        source, target = f"{tmp}/in.safetensors", f"{tmp}/out.safetensors"
        save_file(tensors, source)

        def apply(_):
            root, params = module_tree(sorted(load_file(source).items()))
            for module, name in params:
                if name == "weight":
                    prune.l1_unstructured(module, name, amount=0.5)
            state = {k: v.detach().contiguous() for k, v in root.state_dict().items()}
            save_file(state, target)

        def stats(_):
            state = load_file(target)
            for key, t in state.items():
                if key.endswith("_mask"):
                    continue
                if key.endswith("_orig"):
                    t = t * state[key[: -len("_orig")] + "_mask"]
                int((t == 0).sum())

        slow = max(3, runs // 2)
        return {
            "apply": {"seconds": median_time(lambda: None, apply, slow)},
            "stats": {"seconds": median_time(lambda: None, stats, slow)},
        }


def state_bytes(_runs):
    tensors = resnet50_tensors()
    dense_root, _ = module_tree(tensors)
    dense = sum(t.numel() * t.element_size() for t in dense_root.state_dict().values())
    root, params = module_tree(tensors)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.8)
    pruned = sum(t.numel() * t.element_size() for t in root.state_dict().values())

    def saved(module):
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        return buffer.tell()

    return {
        "memory": {"ratio": pruned / dense},
        "disk": {"ratio": saved(root) / saved(dense_root)},
    }


def shrink_latency(model_name, batch, calls):
    """The masked model (dense shapes) against Torch-Pruning's (half of every group's channels
    removed by L2 magnitude), eval forward without gradients; with each one's weight count."""
    import torch_pruning as tp
    import torchvision

    torch.manual_seed(0)
    if model_name == "lenet":
        model, shape = LeNet(), (1, 1, 28, 28)
        ignored = [model.fc3]
    else:
        model, shape = torchvision.models.resnet18(num_classes=10), (1, 3, 112, 112)
        ignored = [model.fc]
    model.eval()
    small = __import__("copy").deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(
        small, torch.randn(shape), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=[dict(small.named_modules())[n] for n, m in model.named_modules() if m in ignored],
    )
    pruner.step()
    small.eval()
    x = torch.randn(batch, *shape[1:])

    def forward(m):
        def step():
            with torch.no_grad():
                m(x)
        return step

    dense, shrunk = interleaved(forward(model), forward(small), calls)
    count = lambda m: sum(p.numel() for p in m.parameters())
    return {"ratio": shrunk / dense, "dense_seconds": dense, "pruned_seconds": shrunk,
            "parameters": [count(model), count(small)]}


def sparse_weight(shape, sparsity):
    keep = torch.rand(shape) >= sparsity
    return torch.randn(shape) * keep


def sparse_speed(shape, sparsity, batch, calls):
    """The dense `linear` against libtorch's CSR matmul (MKL) of the same weight."""
    torch.manual_seed(0)
    weight = sparse_weight(shape, sparsity)
    csr = weight.to_sparse_csr()
    x = torch.randn(batch, shape[1])

    def dense_step():
        with torch.no_grad():
            F.linear(x, weight)

    def sparse_step():
        with torch.no_grad():
            torch.mm(csr, x.t()).t()

    dense, sparse = interleaved(dense_step, sparse_step, calls)
    return {"dense_seconds": dense, "sparse_seconds": sparse}


def sparse_conv_speed(channels, size, calls, batch=1):
    """A 3x3 convolution at 95%: the dense `conv2d` against the unfolded input times the CSR
    weight (PyTorch has no sparse convolution of its own)."""
    torch.manual_seed(0)
    weight = sparse_weight((channels, channels, 3, 3), 0.95)
    csr = weight.reshape(channels, -1).to_sparse_csr()
    x = torch.randn(batch, channels, size, size)

    def dense_step():
        with torch.no_grad():
            F.conv2d(x, weight, padding=1)

    def sparse_step():
        with torch.no_grad():
            patches = F.unfold(x, 3, padding=1)  # [batch, channels * 9, positions]
            columns = patches.transpose(0, 1).reshape(channels * 9, -1)
            y = torch.mm(csr, columns).reshape(channels, batch, size, size)
            y.transpose(0, 1)

    dense, sparse = interleaved(dense_step, sparse_step, calls)
    return {"dense_seconds": dense, "sparse_seconds": sparse}


def cnn():
    torch.manual_seed(0)
    conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
    return nn.Sequential(
        conv(3, 64), nn.ReLU(), conv(64, 64), nn.ReLU(), nn.MaxPool2d(2),
        conv(64, 128), nn.ReLU(), conv(128, 128), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 14 * 14, 10))


def sparse_cnn(calls):
    """The VGG-style CNN at 95% (every layer but the first conv), eval forward at batch 1: dense
    against the pruned convolutions as unfold + CSR and the linear layer as CSR."""
    model = cnn().eval()
    for i in (2, 5, 7, 11):
        prune.l1_unstructured(model[i], "weight", amount=0.95)
        prune.remove(model[i], "weight")
    csr = {i: model[i].weight.reshape(model[i].weight.shape[0], -1).to_sparse_csr() for i in (2, 5, 7, 11)}
    x = torch.randn(1, 3, 56, 56)

    def dense_step():
        with torch.no_grad():
            model(x)

    def sparse_step():
        with torch.no_grad():
            h = x
            for i, layer in enumerate(model):
                if isinstance(layer, nn.Conv2d) and i in csr:
                    n, _, height, width = h.shape
                    patches = F.unfold(h, 3, padding=1)[0]
                    h = (torch.mm(csr[i], patches) + layer.bias[:, None]).reshape(n, -1, height, width)
                elif isinstance(layer, nn.Linear):
                    h = torch.mm(csr[i], h.t()).t() + layer.bias
                else:
                    h = layer(h)

    dense, sparse = interleaved(dense_step, sparse_step, calls)
    return {"dense_seconds": dense, "sparse_seconds": sparse}


def sparse_mlp(batch, calls, dtype=torch.float32):
    """The 3x2048 MLP in `dtype` at 95% in every layer, eval forward: dense against every
    layer's weight as a CSR matrix (in f32 for bf16: PyTorch's CPU CSR product has no bf16, so
    the input is widened once and the output narrowed once)."""
    torch.manual_seed(0)
    model = mlp().to(dtype).eval()
    weights = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in weights:
        prune.l1_unstructured(layer, "weight", amount=0.95)
        prune.remove(layer, "weight")
    csr = [(l.weight.float().to_sparse_csr(), l.bias.float()) for l in weights]
    x = torch.randn(batch, 2048).to(dtype)

    def dense_step():
        with torch.no_grad():
            model(x)

    def sparse_step():
        with torch.no_grad():
            h = x.float()
            for i, (w, b) in enumerate(csr):
                h = torch.mm(w, h.t()).t() + b
                if i + 1 < len(csr):
                    h = F.relu(h)
            h.to(dtype)

    dense, sparse = interleaved(dense_step, sparse_step, calls)
    return {"dense_seconds": dense, "sparse_seconds": sparse}


def cuda_run(setup, run, runs):
    def synchronized(state):
        run(state)
        torch.cuda.synchronize()

    return {"seconds": median_time(setup, synchronized, runs)}


def semi_structured(n, batch, calls):
    """A 2:4 fp16 [n, n] layer on CUDA (the 2 largest of every 4 inputs kept) as PyTorch's
    cuSPARSELt semi-structured tensor against the dense `linear`, each call synchronized."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    torch.manual_seed(0)
    groups = torch.randn(n, n // 4, 4, dtype=torch.half, device="cuda")
    order = groups.abs().argsort(-1, descending=True)
    keep = torch.zeros_like(groups).scatter_(-1, order[..., :2], 1.0)
    weight = (groups * keep).reshape(n, n)
    sparse = to_sparse_semi_structured(weight)
    x = torch.randn(batch, n, dtype=torch.half, device="cuda")

    def step(w):
        def run():
            with torch.no_grad():
                F.linear(x, w)
            torch.cuda.synchronize()

        return run

    dense, sparse_seconds = interleaved(step(weight), step(sparse), calls)
    return {"dense_seconds": dense, "sparse_seconds": sparse_seconds}


def oneshot_reference():
    """host/tests/oracle/oneshot_reference.py (or the copy beside this script on the GPU machine)."""
    import importlib.util
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "oneshot_reference.py"),
                 os.path.join(here, "..", "host", "tests", "oracle", "oneshot_reference.py")):
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("oneshot_reference", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError("oneshot_reference.py")


def oneshot_llama(method, device, runs):
    """The layer-sequential driver on the example's byte-level Llama (random weights), 128
    windows of 256 tokens: llm-compressor's `oneshot` where its venv is given
    (TCHPRUNE_LLMC_PYTHON, scripts/llmcompressor_venv.sh), else the PyTorch reference."""
    import os
    import subprocess
    import tempfile

    from transformers import LlamaConfig, LlamaForCausalLM

    reference = oneshot_reference()
    config = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         rms_norm_eps=1e-5, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    ids = torch.randint(256, (128, 256)).to(device)

    def setup():
        torch.manual_seed(1)
        return LlamaForCausalLM(config).to(device).eval()

    llmc = os.environ.get("TCHPRUNE_LLMC_PYTHON")
    if llmc and device == "cpu":
        from safetensors.torch import save_file
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llmcompressor_bench.py")
        with tempfile.TemporaryDirectory() as scratch:
            model_dir = os.path.join(scratch, "model")
            setup().save_pretrained(model_dir)
            ids_file = os.path.join(scratch, "ids.safetensors")
            save_file({"input_ids": ids.cpu().contiguous()}, ids_file)
            times = []
            for _ in range(runs):
                out = subprocess.run([llmc, script, model_dir, ids_file, method, "0.5", "none",
                                      os.path.join(scratch, "out.safetensors")],
                                     check=True, capture_output=True, text=True)
                times.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
        return {"seconds": statistics.median(times), "peer": "llm-compressor 0.14.0.1"}
    seconds = median_time(setup, lambda model: reference.oneshot(model, ids, method, 0.5, 0, 0), runs)
    return {"seconds": seconds, "peer": "PyTorch reference of the driver"}


def sparsegpt_layer(two_four, device, runs):
    """The reference's SparseGPT solve of a [4096, 11008] weight given its Hessian."""
    reference = oneshot_reference()
    torch.manual_seed(0)
    tokens = 4096 if device == "cpu" else 16384
    weight = torch.randn(4096, 11008, device=device)
    x = torch.randn(tokens, 11008, device=device)
    gram = x.t() @ x
    del x
    n, m = (2, 4) if two_four else (0, 0)

    def run(_):
        reference.sparsegpt(weight, gram, 0.5, n, m)
        if device != "cpu":
            torch.cuda.synchronize()

    if device != "cpu":
        run(None)
    return {"seconds": median_time(lambda: None, run, runs)}


# Calls per timed run of the CPU sparse rows: as many as tchprune-bench takes
# (SPARSE_CALLS_PER_RUN in workloads.rs).
SPARSE_CALLS_PER_RUN = 40


def workloads(runs):
    slow = max(3, runs // 2)
    sparse_calls = runs * SPARSE_CALLS_PER_RUN

    def on_big(method):
        return lambda: {"seconds": median_time(lambda: holder(big_tensor()), method, slow)}

    def remove_run():
        def setup():
            m = holder(big_tensor())
            prune.l1_unstructured(m, "weight", amount=0.5)
            return m

        return {"seconds": median_time(setup, lambda m: prune.remove(m, "weight"), runs)}

    def global_run(second_round):
        tensors = resnet50_tensors()

        def setup():
            root, params = module_tree(tensors)
            if second_round:
                prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.8)
            return params

        amount = 0.5 if second_round else 0.8

        def run(params):
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)

        return {"seconds": median_time(setup, run, slow)}

    return {
        "l1_unstructured_4096": on_big(lambda m: prune.l1_unstructured(m, "weight", amount=0.5)),
        "random_unstructured_4096": on_big(lambda m: prune.random_unstructured(m, "weight", amount=0.5)),
        "ln_structured_4096": on_big(lambda m: prune.ln_structured(m, "weight", amount=0.5, n=2, dim=0)),
        "remove_4096": remove_run,
        "global_resnet50": lambda: global_run(False),
        "global_resnet50_round2": lambda: global_run(True),
        "tutorial_lenet": lambda: {"seconds": median_time(lambda: None, tutorial, runs * 4)},
        "mlp_eval_overhead": lambda: mlp_overhead(None, runs * 6),
        "mlp_train_overhead": lambda: mlp_overhead(sgd, runs * 6),
        "mlp_train_overhead_kept_memory": lambda: mlp_overhead(sgd, runs * 6),
        "train_step_varstore": lambda: mlp_overhead(adam, runs * 6),
        "train_step_varstore_tch_adam": lambda: mlp_overhead(adam, runs * 6),
        "train_step_module_adam": lambda: mlp_overhead(adam, runs * 6),
        "train_step_module_masked_adam": lambda: mlp_overhead(adam, runs * 6),
        "state_bytes": lambda: state_bytes(runs),
        "many_keys": lambda: many_keys(runs),
        "shrink_lenet_b1": lambda: shrink_latency("lenet", 1, runs * 20),
        "shrink_lenet_b32": lambda: shrink_latency("lenet", 32, runs * 20),
        "shrink_resnet18_b1": lambda: shrink_latency("resnet18", 1, runs * 4),
        "shrink_resnet18_b32": lambda: shrink_latency("resnet18", 32, max(runs, 5)),
        "sparse_linear_90_b1": lambda: sparse_speed((4096, 4096), 0.9, 1, sparse_calls),
        "sparse_linear_90_b8": lambda: sparse_speed((4096, 4096), 0.9, 8, sparse_calls),
        "sparse_linear_90_b64": lambda: sparse_speed((4096, 4096), 0.9, 64, sparse_calls),
        "sparse_linear_95_b1": lambda: sparse_speed((4096, 4096), 0.95, 1, sparse_calls),
        "sparse_linear_95_b8": lambda: sparse_speed((4096, 4096), 0.95, 8, sparse_calls),
        "sparse_linear_95_b64": lambda: sparse_speed((4096, 4096), 0.95, 64, sparse_calls),
        "l1_unstructured_4096_cuda": lambda: cuda_run(
            lambda: holder(big_tensor().cuda()), lambda m: prune.l1_unstructured(m, "weight", amount=0.5), slow),
        "ln_structured_4096_cuda": lambda: cuda_run(
            lambda: holder(big_tensor().cuda()), lambda m: prune.ln_structured(m, "weight", amount=0.5, n=2, dim=0), slow),
        "global_resnet50_cuda": lambda: cuda_run(
            lambda: module_tree([(k, t.cuda()) for k, t in resnet50_tensors()])[1],
            lambda params: prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.8), slow),
        "oneshot_wanda_llama": lambda: oneshot_llama("wanda", "cpu", slow),
        "oneshot_sparsegpt_llama": lambda: oneshot_llama("sparsegpt", "cpu", slow),
        "sparsegpt_layer_4096x11008": lambda: sparsegpt_layer(False, "cpu", 1),
        "oneshot_wanda_llama_cuda": lambda: oneshot_llama("wanda", "cuda", slow),
        "oneshot_sparsegpt_llama_cuda": lambda: oneshot_llama("sparsegpt", "cuda", slow),
        "sparsegpt_layer_4096x11008_cuda": lambda: sparsegpt_layer(False, "cuda", slow),
        "sparsegpt_layer_4096x11008_24_cuda": lambda: sparsegpt_layer(True, "cuda", slow),
        "semi_structured_4096_b4096": lambda: semi_structured(4096, 4096, runs * 4),
        "semi_structured_8192_b8192": lambda: semi_structured(8192, 8192, runs * 4),
        "semi_structured_16384_b4096": lambda: semi_structured(16384, 4096, runs * 4),
        "sparse_tall_95_b8": lambda: sparse_speed((16384, 256), 0.95, 8, sparse_calls),
        "sparse_tall_95_b64": lambda: sparse_speed((16384, 256), 0.95, 64, sparse_calls),
        "sparse_conv_95_64x56": lambda: sparse_conv_speed(64, 56, sparse_calls),
        "sparse_conv_95_128x28": lambda: sparse_conv_speed(128, 28, sparse_calls),
        "sparse_conv_95_256x14": lambda: sparse_conv_speed(256, 14, sparse_calls),
        "sparse_conv_95_512x7": lambda: sparse_conv_speed(512, 7, sparse_calls),
        "sparse_conv_95_256x7_b8": lambda: sparse_conv_speed(256, 7, sparse_calls, batch=8),
        "sparse_cnn_95": lambda: sparse_cnn(sparse_calls),
        "sparse_mlp_95": lambda: sparse_mlp(1, sparse_calls),
        "sparse_mlp_95_b8": lambda: sparse_mlp(8, sparse_calls),
        "sparse_mlp_95_bf16": lambda: sparse_mlp(1, sparse_calls, torch.bfloat16),
        "sparse_mlp_95_bf16_b8": lambda: sparse_mlp(8, sparse_calls, torch.bfloat16),
    }


def main():
    runs = int(sys.argv[1])
    wanted = sys.argv[2:]
    results = {}
    for name, run in workloads(runs).items():
        if not wanted or name in wanted:
            results[name] = run()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
