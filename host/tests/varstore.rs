//! The `VarStore` front end: tch models pruned as they are, by variable name.

mod common;

use common::values;
use std::sync::Arc;
use tch::nn::{ModuleT, OptimizerConfig};
use tch::{nn, Device, Kind, Tensor};
use tchprune::checkpoint::{self, MaskDtype};
use tchprune::method::L1Unstructured;
use tchprune::{layers, prune, Norm, PruneError, VarStorePruner};

/// A network written the way tch's `examples/mnist` writes one: tch's own layers in a struct.
#[derive(Debug)]
struct Net {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    fc1: nn::Linear,
    head: nn::Sequential,
}

impl Net {
    fn new(vs: &nn::Path) -> Net {
        Net {
            conv1: nn::conv2d(vs / "conv1", 1, 4, 3, Default::default()),
            bn1: nn::batch_norm2d(vs / "bn1", 4, Default::default()),
            fc1: nn::linear(vs / "fc1", 4 * 13 * 13, 32, Default::default()),
            head: nn::seq().add_fn(|x| x.relu()).add(nn::linear(
                vs / "head" / "0",
                32,
                10,
                Default::default(),
            )),
        }
    }
}

impl nn::ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .max_pool2d_default(2)
            .flatten(1, -1)
            .apply(&self.fc1)
            .apply(&self.head)
    }
}

fn net() -> (nn::VarStore, Net) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root());
    (vs, net)
}

fn zeros(t: &Tensor) -> i64 {
    t.eq(0).sum(Kind::Int64).int64_value(&[])
}

fn input() -> Tensor {
    Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu))
}

/// Every variable's values and every mask: what must not change when an operation fails.
fn snapshot(vs: &nn::VarStore, pruner: &VarStorePruner) -> Vec<(String, Vec<f64>)> {
    let mut state: Vec<(String, Vec<f64>)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, values(&t)))
        .collect();
    for name in pruner.pruned_names() {
        let history = format!("{:?}", pruner.history(name).unwrap());
        state.push((
            format!("{name} mask {history}"),
            values(pruner.mask(name).unwrap()),
        ));
    }
    state.sort_by(|a, b| a.0.cmp(&b.0));
    state
}

#[test]
fn prunes_the_variables_of_tch_layers_in_place() {
    let (vs, net) = net();
    let conv1 = vs.variables()["conv1.weight"].shallow_clone();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "conv1.weight", 0.5, None).unwrap();
    prune::ln_structured(&mut pruner, "fc1.weight", 8, Norm::P(2.0), 0, None).unwrap();
    prune::random_unstructured(&mut pruner, "head.0.weight", 0.25).unwrap();
    prune::l1_unstructured(&mut pruner, "bn1.weight", 1, None).unwrap();

    // The model's own variables hold the zeros: the forward pass is tch's, unchanged.
    assert_eq!(zeros(&conv1), 18);
    assert_eq!(zeros(&net.fc1.ws), 8 * 676);
    assert_eq!(zeros(&vs.variables()["head.0.weight"]), 80);
    assert_eq!(zeros(&net.bn1.ws.as_ref().unwrap().shallow_clone()), 1);
    assert_eq!(pruner.mask("conv1.weight").unwrap().kind(), Kind::Bool);
    assert_eq!(
        pruner.pruned_names(),
        ["bn1.weight", "conv1.weight", "fc1.weight", "head.0.weight"]
    );
    assert_eq!(net.forward_t(&input(), true).size(), [8, 10]);

    // Iterative pruning follows the container's rules: only what is left is pruned.
    prune::l1_unstructured(&mut pruner, "conv1.weight", 0.5, None).unwrap();
    assert_eq!(zeros(&conv1), 27);
    assert_eq!(
        pruner.history("conv1.weight").unwrap().method_names(),
        ["l1_unstructured", "l1_unstructured"]
    );
    let rows_pruned = pruner
        .mask("fc1.weight")
        .unwrap()
        .logical_not()
        .all_dim(1, false)
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert_eq!(rows_pruned, 8);
}

#[test]
fn errors_name_the_variable_and_change_nothing() {
    let (vs, _net) = net();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "fc1.weight", 0.3, None).unwrap();
    let before = snapshot(&vs, &pruner);

    let err = prune::l1_unstructured(&mut pruner, "conv1.weights", 0.5, None).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, PruneError::UnknownParameter { .. })
            && message.contains("'conv1.weights'")
            && message.contains("conv1.bias, conv1.weight"),
        "{message}"
    );
    let err = prune::l1_unstructured(&mut pruner, "fc1.weight", 100_000, None).unwrap_err();
    assert!(err.to_string().starts_with("'fc1.weight': "), "{err}");
    assert!(matches!(err.innermost(), PruneError::AmountTooLarge { .. }));
    let err = prune::ln_structured(&mut pruner, "fc1.bias", 1, Norm::P(1.0), 0, None).unwrap_err();
    assert!(err.to_string().contains("'fc1.bias'"), "{err}");
    let err = prune::remove(&mut pruner, "conv1.weight").unwrap_err();
    assert_eq!(
        err.to_string(),
        "'conv1.weight' has to be pruned before pruning can be removed"
    );
    // A global pruning that fails on its last tensor leaves the first ones as they were.
    let paths = ["conv1.weight", "fc1.weight", "nothing.weight"];
    let method = Arc::new(L1Unstructured::new(0.5).unwrap());
    prune::global_unstructured(&mut pruner, &paths, method, &[]).unwrap_err();
    let too_many = Arc::new(L1Unstructured::new(1_000_000).unwrap());
    prune::global_unstructured(&mut pruner, &paths[..2], too_many, &[]).unwrap_err();

    assert_eq!(snapshot(&vs, &pruner), before);
}

#[test]
fn global_pruning_with_importance_scores_spans_the_listed_variables() {
    let (vs, _net) = net();
    let mut pruner = VarStorePruner::new(&vs);
    let paths = ["conv1.weight", "fc1.weight", "head.0.weight"];
    // Zero for conv1's first half (the smallest of all), 100 for the rest (the largest).
    let scores = Tensor::arange(36, (Kind::Float, Device::Cpu))
        .ge(18)
        .to_kind(Kind::Float)
        .view([4, 1, 3, 3])
        * 100;
    let method = Arc::new(L1Unstructured::new(0.5).unwrap());
    prune::global_unstructured(&mut pruner, &paths, method, &[("conv1.weight", &scores)]).unwrap();
    let rows = pruner.sparsity(&paths).unwrap();
    let global = rows.last().unwrap();
    assert_eq!(global.zeros, global.total / 2);
    let conv1_mask = values(pruner.mask("conv1.weight").unwrap());
    assert_eq!(conv1_mask, [vec![0.0; 18], vec![1.0; 18]].concat());
    assert_eq!(
        pruner.history("fc1.weight").unwrap().method_names(),
        ["custom_from_mask"]
    );
}

#[test]
fn saves_pytorchs_layout_and_loads_it_back_into_a_fresh_store() {
    let (vs, net) = net();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "fc1.weight", 0.7, None).unwrap();
    prune::ln_structured(&mut pruner, "conv1.weight", 2, Norm::P(1.0), 0, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pruned.safetensors");
    pruner.save(&path).unwrap();

    let file = checkpoint::read(&path).unwrap();
    let keys: Vec<&str> = file.tensors.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        "fc1.weight_orig",
        "fc1.weight_mask",
        "conv1.weight_orig",
        "fc1.bias",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert!(!keys.contains(&"fc1.weight"));
    let mask = &file.tensors[keys.iter().position(|k| *k == "fc1.weight_mask").unwrap()].1;
    assert_eq!(
        mask.kind(),
        Kind::Float,
        "PyTorch keeps masks in the parameter's dtype"
    );
    assert!(file.metadata["tchprune.history"].contains("ln_structured"));

    let fresh_vs = nn::VarStore::new(Device::Cpu);
    let fresh_net = Net::new(&fresh_vs.root());
    let mut fresh = VarStorePruner::new(&fresh_vs);
    let report = fresh.load(&path, true).unwrap();
    assert_eq!(report.restored, ["conv1.weight", "fc1.weight"]);
    for name in ["conv1.weight", "fc1.weight"] {
        assert!(fresh.mask(name).unwrap().equal(pruner.mask(name).unwrap()));
    }
    let x = input();
    assert!(fresh_net
        .forward_t(&x, false)
        .equal(&net.forward_t(&x, false)));

    // Plain weights with the masks applied, loadable by a model that was never pruned.
    let plain = dir.path().join("plain.safetensors");
    pruner.save_plain(&plain).unwrap();
    let mut never_pruned = nn::VarStore::new(Device::Cpu);
    let never_pruned_net = Net::new(&never_pruned.root());
    never_pruned.load(&plain).unwrap();
    assert!(never_pruned_net
        .forward_t(&x, false)
        .equal(&net.forward_t(&x, false)));

    // Strict loading names what does not fit, and changes nothing.
    let before = snapshot(&fresh_vs, &fresh);
    let partial: Vec<(String, Tensor)> = file.tensors.into_iter().skip(1).collect();
    let err = fresh.load_state_dict(&partial, true).unwrap_err();
    assert!(err.to_string().contains("missing keys"), "{err}");
    assert_eq!(snapshot(&fresh_vs, &fresh), before);
}

#[test]
fn bool_masks_load_too() {
    let (vs, _net) = net();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "fc1.weight", 0.5, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bool.safetensors");
    pruner.save_with(&path, MaskDtype::Bool).unwrap();
    let (fresh_vs, _) = net();
    let mut fresh = VarStorePruner::new(&fresh_vs);
    fresh.load(&path, true).unwrap();
    assert!(fresh
        .mask("fc1.weight")
        .unwrap()
        .equal(pruner.mask("fc1.weight").unwrap()));
}

#[test]
fn what_vs_save_holds_before_and_after_the_masks_are_applied() {
    let (vs, net) = net();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "fc1.weight", 0.5, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved_zeros = |name: &str| {
        let path = dir.path().join(name);
        vs.save(&path).unwrap();
        zeros(&common::read_tensors(&path)["fc1.weight"])
    };
    let half = net.fc1.ws.numel() as i64 / 2;
    assert_eq!(saved_zeros("after_pruning.safetensors"), half);

    // Adam's momentum from dense training moves pruned entries in a plain `opt.step()`...
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let x = input();
    for _ in 0..2 {
        opt.backward_step(&net.forward_t(&x, true).square().mean(Kind::Float));
    }
    assert!(saved_zeros("after_a_plain_step.safetensors") < half);
    // ... and the pruner's step puts them back to zero.
    pruner
        .backward_step(
            &mut opt,
            &net.forward_t(&x, true).square().mean(Kind::Float),
        )
        .unwrap();
    assert_eq!(saved_zeros("after_the_pruners_step.safetensors"), half);
}

#[test]
fn loading_plain_weights_keeps_the_masks() {
    let (vs, net) = net();
    let dir = tempfile::tempdir().unwrap();
    let initial = dir.path().join("initial.safetensors");
    vs.save(&initial).unwrap();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "fc1.weight", 0.5, None).unwrap();
    let mask = pruner.mask("fc1.weight").unwrap().shallow_clone();

    let report = pruner.load(&initial, true).unwrap();
    assert!(report.restored.is_empty());
    assert!(pruner.mask("fc1.weight").unwrap().equal(&mask));
    // The kept entries hold their initial values again, the pruned ones stay zero.
    let original = &common::read_tensors(&initial)["fc1.weight"];
    assert!(net.fc1.ws.equal(&(original * &mask)));
}

#[test]
fn remove_and_finalize_leave_plain_variables() {
    let (vs, net) = net();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "fc1.weight", 0.5, None).unwrap();
    prune::l1_unstructured(&mut pruner, "conv1.weight", 0.5, None).unwrap();
    prune::remove(&mut pruner, "fc1.weight").unwrap();
    assert_eq!(pruner.pruned_names(), ["conv1.weight"]);
    assert!(prune::is_pruned(&pruner));
    assert_eq!(zeros(&net.fc1.ws), net.fc1.ws.numel() as i64 / 2);
    pruner.finalize().unwrap();
    assert!(!prune::is_pruned(&pruner));
    assert_eq!(zeros(&net.conv1.ws), 18);
    assert!(pruner
        .state_dict(MaskDtype::Parameter)
        .iter()
        .all(|(k, _)| !k.ends_with("_mask")));
}

/// The same LeNet twice, one pruned through the reparametrization and one through a
/// `VarStorePruner`, trained by Adam with weight decay on the same batches.
#[test]
fn adam_training_keeps_pruned_entries_zero_and_kept_entries_equal_to_the_module_path() {
    tch::manual_seed(11);
    let module_vs = nn::VarStore::new(Device::Cpu);
    let mut module = layers::lenet(&module_vs.root());
    let mut store_vs = nn::VarStore::new(Device::Cpu);
    let store_model = layers::lenet(&store_vs.root());
    store_vs.copy(&module_vs).unwrap();
    let adam = nn::Adam {
        wd: 1e-2,
        ..Default::default()
    };
    let mut module_opt = adam.build(&module_vs, 1e-2).unwrap();
    let mut store_opt = adam.build(&store_vs, 1e-2).unwrap();
    let batches: Vec<(Tensor, Tensor)> = (0..25)
        .map(|_| {
            (
                Tensor::randn([16, 1, 28, 28], (Kind::Float, Device::Cpu)),
                Tensor::randint(10, [16], (Kind::Int64, Device::Cpu)),
            )
        })
        .collect();
    let loss = |m: &tchprune::Module, (x, y): &(Tensor, Tensor)| {
        m.forward_t(x, true).cross_entropy_for_logits(y)
    };
    // Dense steps first, so that Adam's moments are not zero where pruning will cut.
    for batch in &batches[..5] {
        module_opt.backward_step(&loss(&module, batch));
        store_opt.backward_step(&loss(&store_model, batch));
    }
    let mut pruner = VarStorePruner::new(&store_vs);
    let weights = layers::LENET_WEIGHTS;
    let global = Arc::new(L1Unstructured::new(0.8).unwrap());
    prune::global_unstructured(&mut module, &weights, global.clone(), &[]).unwrap();
    prune::global_unstructured(&mut pruner, &weights, global, &[]).unwrap();
    prune::ln_structured(&mut module, "fc1.weight", 30, Norm::P(2.0), 0, None).unwrap();
    prune::ln_structured(&mut pruner, "fc1.weight", 30, Norm::P(2.0), 0, None).unwrap();
    for batch in &batches[5..] {
        module_opt.backward_step(&loss(&module, batch));
        pruner
            .backward_step(&mut store_opt, &loss(&store_model, batch))
            .unwrap();
    }

    let variables = store_vs.variables();
    for (name, seen) in module.state_dict() {
        let Some(weight) = name.strip_suffix("_orig") else {
            if !name.ends_with("_mask") {
                assert!(variables[&name].equal(&seen), "{name}");
            }
            continue;
        };
        let (module_path, tensor) = tchprune::split_tensor_path(weight);
        let expected = module.submodule(module_path).unwrap().get(tensor);
        let mask = pruner.mask(weight).unwrap();
        let ours = &variables[weight];
        assert!(
            module
                .submodule(module_path)
                .unwrap()
                .buffer(&format!("{tensor}_mask"))
                .unwrap()
                .equal(mask),
            "{weight}: the masks differ"
        );
        let pruned = ours.masked_select(&mask.logical_not());
        assert_eq!(
            zeros(&pruned),
            pruned.numel() as i64,
            "{weight}: a pruned entry moved"
        );
        assert!(
            ours.masked_select(mask)
                .equal(&expected.masked_select(mask)),
            "{weight}: kept entries differ from the Module path's"
        );
    }
}

#[test]
fn a_variable_given_another_shape_after_its_pruning_is_an_error_naming_it() {
    let (vs, _net) = net();
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "conv1.weight", 0.5, None).unwrap();
    prune::l1_unstructured(&mut pruner, "fc1.weight", 0.5, None).unwrap();
    let mut fc1 = vs.variables()["fc1.weight"].shallow_clone();
    let changed = Tensor::ones([5, 5], (Kind::Float, Device::Cpu));
    tch::no_grad(|| fc1.set_data(&changed));
    // An optimizer step wrote into conv1's pruned entries: they stay as they are on error
    // (conv1's mask comes first, and is not written before fc1's is found not to fit).
    let conv1 = vs.variables()["conv1.weight"].shallow_clone();
    let _ = tch::no_grad(|| conv1.shallow_clone().fill_(1.0));
    let before = snapshot(&vs, &pruner);

    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("pruned.safetensors");
    let errors = [
        pruner.apply_masks().unwrap_err(),
        prune::l1_unstructured(&mut pruner, "fc1.weight", 0.5, None).unwrap_err(),
        prune::remove(&mut pruner, "fc1.weight").unwrap_err(),
        pruner.sparsity(&["fc1.weight"]).unwrap_err(),
        pruner.save(&saved).unwrap_err(),
        pruner.finalize().unwrap_err(),
    ];
    for err in errors {
        assert_eq!(
            err.to_string(),
            "'fc1.weight' changed shape since it was pruned: its mask: expected shape \
             [5, 5], got [32, 676]"
        );
    }
    assert!(!saved.exists());
    assert_eq!(snapshot(&vs, &pruner), before);
    assert_eq!(pruner.pruned_names(), ["conv1.weight", "fc1.weight"]);
}

#[test]
fn a_module_parameter_given_another_shape_after_its_pruning_is_an_error_naming_it() {
    let (vs, mut model) = common::linear_model(4, 3);
    prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap();
    let mut orig = vs.variables()["weight"].shallow_clone();
    tch::no_grad(|| orig.set_data(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu))));
    for err in [
        prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap_err(),
        prune::remove(&mut model, "weight").unwrap_err(),
    ] {
        assert_eq!(
            err.to_string(),
            "'weight' changed shape since it was pruned: its mask: expected shape [2, 2], got \
             [3, 4]"
        );
    }
    let err = model.try_get("weight").unwrap_err();
    assert!(
        err.to_string()
            .contains("changed shape since it was pruned"),
        "{err}"
    );
    assert!(model.is_pruned());
}
