//! The built-in models as a checkpoint shows them: recognised by their tensors' names and
//! shapes, and their convolutions located where PyTorch's forward pass finds them (torchvision's
//! ResNets and the tutorial's LeNet, with hooks).

mod common;

use common::run_python;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Device};
use tchprune::layers::{self, builtin_model, convolution_sites};

fn shapes<M>(build: impl FnOnce(&nn::Path) -> M) -> BTreeMap<String, Vec<i64>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = build(&vs.root());
    (vs.variables().into_iter())
        .map(|(k, t)| (k, t.size()))
        .collect()
}

#[test]
fn convolutions_sit_where_pytorchs_forward_pass_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    for (model, size) in [
        ("lenet", [28, 28]),
        ("lenet", [32, 41]),
        ("resnet18", [224, 224]),
        ("resnet34", [97, 130]),
    ] {
        let out = dir
            .path()
            .join(format!("{model}-{}x{}.json", size[0], size[1]));
        let (h, w) = (size[0].to_string(), size[1].to_string());
        run_python(
            "conv_inputs.py",
            &[Path::new(model), Path::new(&h), Path::new(&w), &out],
        );
        let expected: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let sites = convolution_sites(model, size).unwrap();
        let ours: Vec<serde_json::Value> = (sites.iter())
            .map(|s| {
                serde_json::json!({"weight": s.weight, "input_size": s.input_size,
                    "stride": s.config.stride, "padding": s.config.padding})
            })
            .collect();
        let order = |mut v: Vec<serde_json::Value>| {
            v.sort_by_key(|s| s["weight"].as_str().unwrap().to_owned());
            v
        };
        assert_eq!(order(ours), order(expected), "{model} at {size:?}");
    }
    assert!(convolution_sites("vgg", [224, 224]).is_err());
}

#[test]
fn a_checkpoint_is_recognised_by_its_tensors() {
    let lenet = shapes(layers::lenet);
    let resnet18 = shapes(|p| tch::vision::resnet::resnet18(p, 7));
    let resnet34 = shapes(|p| tch::vision::resnet::resnet34(p, 1000));
    assert_eq!(builtin_model("auto", &lenet).unwrap(), "lenet");
    assert_eq!(builtin_model("auto", &resnet18).unwrap(), "resnet18");
    assert_eq!(builtin_model("auto", &resnet34).unwrap(), "resnet34");
    assert_eq!(builtin_model("resnet18", &resnet18).unwrap(), "resnet18");
    let err = builtin_model("resnet34", &resnet18)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not resnet34: no 'layer1.2.bn1.bias'"),
        "{err}"
    );
    let mut shrunk = lenet.clone();
    shrunk.insert("conv1.weight".to_owned(), vec![3, 1, 3, 3]);
    let err = builtin_model("auto", &shrunk).unwrap_err().to_string();
    assert!(
        err.contains("not lenet: 'conv1.weight' is [3, 1, 3, 3]"),
        "{err}"
    );
    let err = builtin_model("vgg", &lenet).unwrap_err().to_string();
    assert!(err.contains("no built-in model 'vgg'"), "{err}");
}
