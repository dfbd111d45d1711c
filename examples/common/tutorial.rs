//! The ten steps of PyTorch's pruning tutorial on LeNet, printing what the tutorial prints.

use crate::foobar::FooBarPruningMethod;
use std::io::Write;
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use tchprune::layers::LENET_WEIGHTS;
use tchprune::method::L1Unstructured;
use tchprune::sparsity::sparsity;
use tchprune::{layers, prune, Module, Norm};

fn names(entries: &[(String, Tensor)]) -> Vec<&str> {
    entries.iter().map(|(name, _)| name.as_str()).collect()
}

fn hooks(module: &Module) -> String {
    let hooks: Vec<String> = module.pruning_hooks().map(|h| format!("{h:?}")).collect();
    format!("[{}]", hooks.join(", "))
}

fn print_sparsity(out: &mut dyn Write, model: &Module) -> anyhow::Result<()> {
    for row in sparsity(model, &LENET_WEIGHTS)? {
        let label = if row.name == "global" {
            "Global sparsity".to_owned()
        } else {
            format!("Sparsity in {}", row.name)
        };
        writeln!(
            out,
            "  {label}: {:.2}% ({} of {})",
            row.percent(),
            row.zeros,
            row.total
        )?;
    }
    Ok(())
}

fn fresh_lenet(seed: i64) -> (nn::VarStore, Module) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = layers::lenet(&vs.root());
    (vs, model)
}

/// Runs the walkthrough, writing its report to `out`.
pub fn run(out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "== 1. LeNet")?;
    let (_vs, mut model) = fresh_lenet(0);
    let x = Tensor::randn([1, 1, 28, 28], (Kind::Float, Device::Cpu));
    writeln!(
        out,
        "  output for a 1x1x28x28 input: {:?}",
        model.forward(&x).size()
    )?;

    writeln!(out, "\n== 2. Inspect conv1")?;
    let conv1 = model.child_mut("conv1").expect("LeNet has conv1");
    for (name, t) in conv1.named_parameters() {
        writeln!(out, "  parameter {name} {:?}:\n{t}", t.size())?;
    }
    writeln!(out, "  buffers: {:?}", names(&conv1.named_buffers()))?;

    writeln!(
        out,
        "\n== 3. random_unstructured(conv1, \"weight\", amount=0.3)"
    )?;
    prune::random_unstructured(conv1, "weight", 0.3)?;
    writeln!(out, "  parameters: {:?}", names(&conv1.named_parameters()))?;
    writeln!(out, "  buffers: {:?}", names(&conv1.named_buffers()))?;
    writeln!(
        out,
        "  weight_mask:\n{}",
        conv1
            .buffer("weight_mask")
            .expect("pruned")
            .to_kind(Kind::Float)
    )?;
    writeln!(
        out,
        "  weight (= weight_orig * weight_mask):\n{}",
        conv1.get("weight")
    )?;
    writeln!(out, "  forward pre-hooks: {}", hooks(conv1))?;

    writeln!(out, "\n== 4. l1_unstructured(conv1, \"bias\", amount=3)")?;
    prune::l1_unstructured(conv1, "bias", 3, None)?;
    writeln!(out, "  parameters: {:?}", names(&conv1.named_parameters()))?;
    writeln!(out, "  buffers: {:?}", names(&conv1.named_buffers()))?;
    writeln!(
        out,
        "  bias_orig: {}",
        conv1.parameter("bias_orig").expect("pruned")
    )?;
    writeln!(out, "  bias: {}", conv1.get("bias"))?;
    writeln!(out, "  forward pre-hooks: {}", hooks(conv1))?;

    writeln!(
        out,
        "\n== 5. ln_structured(conv1, \"weight\", amount=0.5, n=2, dim=0): iterative pruning"
    )?;
    prune::ln_structured(conv1, "weight", 0.5, Norm::P(2.0), 0, None)?;
    writeln!(out, "  weight:\n{}", conv1.get("weight"))?;
    let history = conv1.pruning_hook("weight").expect("pruned").method_names();
    writeln!(out, "  weight's PruningContainer history: {history:?}")?;
    writeln!(out, "  forward pre-hooks: {}", hooks(conv1))?;

    writeln!(out, "\n== 6. state_dict keys")?;
    writeln!(out, "  {:?}", names(&model.state_dict()))?;

    writeln!(
        out,
        "\n== 7. remove(conv1, \"weight\"): make the pruning permanent"
    )?;
    prune::remove(&mut model, "conv1.weight")?;
    let conv1 = model.child("conv1").expect("LeNet has conv1");
    writeln!(out, "  parameters: {:?}", names(&conv1.named_parameters()))?;
    writeln!(out, "  buffers: {:?}", names(&conv1.named_buffers()))?;
    writeln!(out, "  forward pre-hooks: {}", hooks(conv1))?;

    writeln!(
        out,
        "\n== 8. Prune by layer type: 20% of every Conv2d weight, 40% of every Linear weight (L1)"
    )?;
    let (_vs, mut model) = fresh_lenet(1);
    let by_kind: Vec<(String, f64)> = model
        .named_modules()
        .into_iter()
        .filter_map(|(path, m)| match m.kind() {
            "Conv2d" => Some((path, 0.2)),
            "Linear" => Some((path, 0.4)),
            _ => None,
        })
        .collect();
    for (path, amount) in &by_kind {
        prune::l1_unstructured(&mut model, &format!("{path}.weight"), *amount, None)?;
    }
    let masks: Vec<String> = model
        .named_buffers()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    writeln!(out, "  masks: {masks:?}")?;
    print_sparsity(out, &model)?;

    writeln!(
        out,
        "\n== 9. global_unstructured over the five weights, L1, amount=0.2"
    )?;
    let (_vs, mut model) = fresh_lenet(2);
    prune::global_unstructured(
        &mut model,
        &LENET_WEIGHTS,
        Arc::new(L1Unstructured::new(0.2)?),
        &[],
    )?;
    print_sparsity(out, &model)?;

    writeln!(
        out,
        "\n== 10. A custom method: FooBar (zero every other entry) on fc3.bias"
    )?;
    prune::apply(&mut model, "fc3.bias", Arc::new(FooBarPruningMethod), None)?;
    let fc3 = model.child("fc3").expect("LeNet has fc3");
    let mask: Vec<f32> = Vec::try_from(
        fc3.buffer("bias_mask")
            .expect("pruned")
            .to_kind(Kind::Float),
    )?;
    writeln!(out, "  fc3.bias_mask: {mask:?}")?;
    writeln!(out, "  forward pre-hooks: {}", hooks(fc3))?;
    Ok(())
}
