//! tch's own resnet18 (its variables have torchvision's names), pruned through a
//! `VarStorePruner` without touching its code, saved, and loaded by PyTorch into torchvision's
//! resnet18: the same masks, the same outputs.

mod common;

use common::{read_tensors, run_python};
use std::sync::Arc;
use tch::nn::ModuleT;
use tch::{nn, Device, Kind, Tensor};
use tchprune::method::L1Unstructured;
use tchprune::{prune, Norm, VarStorePruner};

#[test]
fn tchs_resnet18_pruned_globally_loads_into_torchvision_with_the_same_outputs() {
    tch::manual_seed(18);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = tch::vision::resnet::resnet18(&vs.root(), 1000);
    // Batch statistics that are not the initial ones.
    tch::no_grad(|| {
        for _ in 0..2 {
            let _ = net.forward_t(
                &Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu)),
                true,
            );
        }
    });
    let mut weights: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(name, t)| name.ends_with(".weight") && (t.dim() == 4 || name == "fc.weight"))
        .map(|(name, _)| name)
        .collect();
    weights.sort();
    assert_eq!(weights.len(), 21, "20 convolutions and the classifier");
    let paths: Vec<&str> = weights.iter().map(String::as_str).collect();

    let mut pruner = VarStorePruner::new(&vs);
    let method = Arc::new(L1Unstructured::new(0.7).unwrap());
    prune::global_unstructured(&mut pruner, &paths, method, &[]).unwrap();
    prune::ln_structured(
        &mut pruner,
        "layer1.0.conv1.weight",
        16,
        Norm::P(2.0),
        0,
        None,
    )
    .unwrap();
    let total = pruner.sparsity(&paths).unwrap().pop().unwrap();
    assert!(total.percent() >= 70.0, "{total:?}");

    let dir = tempfile::tempdir().unwrap();
    let (checkpoint, input, out) = (
        dir.path().join("resnet18.safetensors"),
        dir.path().join("input.safetensors"),
        dir.path().join("out.safetensors"),
    );
    pruner.save(&checkpoint).unwrap();
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("x", &x)], &input).unwrap();
    run_python("torchvision_resnet.py", &[&checkpoint, &input, &out]);
    let torch = read_tensors(&out);

    let variables = vs.variables();
    for path in &paths {
        assert!(
            variables[*path].equal(&torch[*path]),
            "{path}: PyTorch's orig * mask differs from the pruned variable"
        );
    }
    let ours = tch::no_grad(|| net.forward_t(&x, false));
    let theirs = &torch["output"];
    let worst = (&ours - theirs).abs().max().double_value(&[]);
    assert!(
        ours.allclose(theirs, 1e-5, 1e-5, false),
        "outputs differ by up to {worst}"
    );
}
