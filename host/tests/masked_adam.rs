//! `MaskedAdam`: libtorch's Adam, fused, over the kept entries of pruned variables only.

use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};
use tchprune::optim::MaskedAdam;
use tchprune::{prune, Module, Norm, PruneError, VarStorePruner};

const STEPS: usize = 30;

fn adam() -> nn::Adam {
    nn::Adam {
        wd: 1e-2,
        ..Default::default()
    }
}

/// Two stores holding the same variables (a 64x48 weight and a 48 bias) in `kind`.
fn twins(kind: Kind) -> (nn::VarStore, nn::VarStore) {
    let make = || {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().randn("weight", &[64, 48], 0.0, 1.0);
        let _ = vs.root().randn("bias", &[48], 0.0, 1.0);
        vs.set_kind(kind);
        vs
    };
    let (first, mut second) = (make(), make());
    // A copy, not a second draw: other tests draw from the same generator meanwhile.
    second.copy(&first).unwrap();
    (first, second)
}

/// A loss whose gradient is `gradient` for every variable, whatever their values.
fn linear_loss(vs: &nn::VarStore, gradients: &[(String, Tensor)]) -> Tensor {
    let variables = vs.variables();
    gradients
        .iter()
        .map(|(name, g)| (&variables[name] * g).sum(Kind::Double))
        .fold(Tensor::zeros([], (Kind::Double, Device::Cpu)), |a, b| a + b)
}

fn gradients(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut names: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, Tensor::randn(t.size(), (t.kind(), Device::Cpu))))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    names
}

fn assert_close(ours: &Tensor, theirs: &Tensor, what: &str) {
    let (ours, theirs) = (ours.to_kind(Kind::Double), theirs.to_kind(Kind::Double));
    let worst = (&ours - &theirs).abs().max().double_value(&[]);
    assert!(
        ours.allclose(&theirs, 1e-5, 1e-6, false),
        "{what}: differs from libtorch's Adam by up to {worst}"
    );
}

#[test]
fn dense_variables_follow_libtorchs_adam() {
    for kind in [Kind::Float, Kind::Double, Kind::BFloat16] {
        let (ours_vs, theirs_vs) = twins(kind);
        let pruner = VarStorePruner::new(&ours_vs);
        let mut ours = MaskedAdam::new(&ours_vs, adam(), 1e-2).unwrap();
        let mut theirs = adam().build(&theirs_vs, 1e-2).unwrap();
        for _ in 0..STEPS {
            let g = gradients(&ours_vs);
            ours.backward_step(&pruner, &linear_loss(&ours_vs, &g))
                .unwrap();
            theirs.backward_step(&linear_loss(&theirs_vs, &g));
        }
        for (name, theirs) in theirs_vs.variables() {
            let tolerance_kind = if kind == Kind::BFloat16 { 1e-2 } else { 1e-5 };
            let ours = &ours_vs.variables()[&name];
            assert!(
                ours.to_kind(Kind::Double).allclose(
                    &theirs.to_kind(Kind::Double),
                    tolerance_kind,
                    1e-6,
                    false
                ),
                "{name} ({kind:?}): {}",
                (ours.to_kind(Kind::Double) - theirs.to_kind(Kind::Double))
                    .abs()
                    .max()
            );
        }
    }
}

#[test]
fn pruned_entries_stay_zero_and_kept_ones_follow_adam_with_the_pruners_step() {
    let (ours_vs, theirs_vs) = twins(Kind::Float);
    let mut ours_pruner = VarStorePruner::new(&ours_vs);
    let mut theirs_pruner = VarStorePruner::new(&theirs_vs);
    let mut ours = MaskedAdam::new(&ours_vs, adam(), 1e-2).unwrap();
    let mut theirs = adam().build(&theirs_vs, 1e-2).unwrap();
    let step = |ours: &mut MaskedAdam,
                theirs: &mut nn::Optimizer,
                ours_pruner: &VarStorePruner,
                theirs_pruner: &mut VarStorePruner| {
        let g = gradients(&ours_vs);
        ours.backward_step(ours_pruner, &linear_loss(&ours_vs, &g))
            .unwrap();
        theirs_pruner
            .backward_step(theirs, &linear_loss(&theirs_vs, &g))
            .unwrap();
    };
    // Dense first: Adam's moments are not zero where pruning cuts.
    for _ in 0..5 {
        step(&mut ours, &mut theirs, &ours_pruner, &mut theirs_pruner);
    }
    for pruner in [&mut ours_pruner, &mut theirs_pruner] {
        prune::l1_unstructured(pruner, "weight", 0.9, None).unwrap();
    }
    for round in 0..2 {
        for _ in 0..STEPS {
            step(&mut ours, &mut theirs, &ours_pruner, &mut theirs_pruner);
        }
        let mask = ours_pruner.mask("weight").unwrap();
        assert!(
            mask.equal(theirs_pruner.mask("weight").unwrap()),
            "round {round}"
        );
        let weight = &ours_vs.variables()["weight"];
        let pruned = weight.masked_select(&mask.logical_not());
        assert!(
            pruned.eq(0).all().int64_value(&[]) == 1,
            "round {round}: a pruned entry moved"
        );
        assert_close(weight, &theirs_vs.variables()["weight"], "weight");
        assert_close(
            &ours_vs.variables()["bias"],
            &theirs_vs.variables()["bias"],
            "bias",
        );
        // A second pruning on top: the entries still kept keep their moments.
        for pruner in [&mut ours_pruner, &mut theirs_pruner] {
            prune::ln_structured(pruner, "weight", 16, Norm::P(1.0), 0, None).unwrap();
        }
    }
    // Removing the pruning trains every entry again, from the moments kept so far.
    for pruner in [&mut ours_pruner, &mut theirs_pruner] {
        prune::remove(pruner, "weight").unwrap();
    }
    for _ in 0..3 {
        step(&mut ours, &mut theirs, &ours_pruner, &mut theirs_pruner);
    }
    let weight = &ours_vs.variables()["weight"];
    assert!(weight.eq(0).sum(Kind::Int64).int64_value(&[]) < 100);
}

#[test]
fn a_variable_that_changed_shape_since_its_pruning_is_an_error_naming_it() {
    let shapes = [
        ([2, 4], "fewer entries"),
        ([16, 8], "more entries"),
        ([48, 64], "as many entries"),
    ];
    for (shape, what) in shapes {
        let (vs, _) = twins(Kind::Float);
        let mut adam = MaskedAdam::new(&vs, adam(), 1e-2).unwrap();
        let mut weight = vs.variables()["weight"].shallow_clone();
        let mut pruner = VarStorePruner::new(&vs);
        prune::l1_unstructured(&mut pruner, "weight", 0.5, None).unwrap();
        let mut module = module_on(&vs);
        prune::l1_unstructured(&mut module, "weight", 0.5, None).unwrap();
        weight.set_data(&Tensor::ones(shape, (Kind::Float, Device::Cpu)));
        for (front_end, result) in [
            (
                "VarStorePruner",
                adam.backward_step(&pruner, &weight.sum(Kind::Float)),
            ),
            (
                "Module",
                adam.backward_step(&module, &weight.sum(Kind::Float)),
            ),
        ] {
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains("weight") && err.contains("changed shape"),
                "{front_end}, {what}: {err}"
            );
        }
    }
}

#[test]
fn amsgrad_is_refused() {
    let vs = nn::VarStore::new(Device::Cpu);
    let config = nn::Adam {
        amsgrad: true,
        ..Default::default()
    };
    let err = MaskedAdam::new(&vs, config, 1e-3).unwrap_err();
    assert!(matches!(err, PruneError::InvalidArgument { .. }), "{err}");
}

/// Whether `after` and `before` hold the same values at the entries `selected` marks.
fn same_at(after: &Tensor, before: &Tensor, selected: &Tensor) -> bool {
    after
        .masked_select(selected)
        .equal(&before.masked_select(selected))
}

/// A module holding `vs`'s variables as its parameters (the same tensors), as `layers` builds
/// them.
fn module_on(vs: &nn::VarStore) -> Module {
    let variables = vs.variables();
    Module::new("Holder")
        .with_parameter("weight", variables["weight"].shallow_clone())
        .with_parameter("bias", variables["bias"].shallow_clone())
}

/// A loss through the module's forward view of its tensors (`orig * mask` where pruned), whose
/// gradient there is `gradients`.
fn module_loss(module: &Module, gradients: &[(String, Tensor)]) -> Tensor {
    gradients
        .iter()
        .map(|(name, g)| (module.get(name) * g).sum(Kind::Double))
        .fold(Tensor::zeros([], (Kind::Double, Device::Cpu)), |a, b| a + b)
}

/// `orig` of the module's pruned `weight`, copied.
fn weight_orig(module: &Module) -> Tensor {
    module.parameter("weight_orig").unwrap().detach().copy()
}

#[test]
fn a_module_pruned_before_training_without_decay_trains_as_with_libtorchs_adam() {
    let (ours_vs, theirs_vs) = twins(Kind::Float);
    let (mut ours_model, mut theirs_model) = (module_on(&ours_vs), module_on(&theirs_vs));
    for model in [&mut ours_model, &mut theirs_model] {
        prune::l1_unstructured(model, "weight", 0.9, None).unwrap();
    }
    let before = weight_orig(&ours_model);
    let config = nn::Adam::default();
    let mut ours = MaskedAdam::new(&ours_vs, config, 1e-2).unwrap();
    let mut theirs = config.build(&theirs_vs, 1e-2).unwrap();
    for _ in 0..STEPS {
        let g = gradients(&ours_vs);
        ours.backward_step(&ours_model, &module_loss(&ours_model, &g))
            .unwrap();
        theirs.backward_step(&module_loss(&theirs_model, &g));
    }
    // Every entry of `orig`, the pruned ones (untouched by both) included.
    let (ours_orig, theirs_orig) = (weight_orig(&ours_model), weight_orig(&theirs_model));
    assert_close(&ours_orig, &theirs_orig, "weight_orig");
    let mask = ours_model.buffer("weight_mask").unwrap();
    assert!(same_at(&ours_orig, &before, &mask.logical_not()));
    assert!(!ours_orig.equal(&before), "the kept entries were trained");
    assert_close(
        &ours_vs.variables()["bias"],
        &theirs_vs.variables()["bias"],
        "bias",
    );
}

#[test]
fn a_module_keeps_its_pruned_entries_and_trains_the_kept_ones_as_libtorchs_adam() {
    let (ours_vs, theirs_vs) = twins(Kind::Float);
    let (mut ours_model, mut theirs_model) = (module_on(&ours_vs), module_on(&theirs_vs));
    let mut ours = MaskedAdam::new(&ours_vs, adam(), 1e-2).unwrap();
    let mut theirs = adam().build(&theirs_vs, 1e-2).unwrap();
    let mut step = |ours_model: &Module, theirs_model: &Module| {
        let g = gradients(&ours_vs);
        ours.backward_step(ours_model, &module_loss(ours_model, &g))
            .unwrap();
        theirs.backward_step(&module_loss(theirs_model, &g));
    };
    // Dense first: Adam's moments are not zero where pruning cuts.
    for _ in 0..5 {
        step(&ours_model, &theirs_model);
    }
    for round in 0..2 {
        for model in [&mut ours_model, &mut theirs_model] {
            if round == 0 {
                prune::l1_unstructured(model, "weight", 0.9, None).unwrap();
            } else {
                prune::ln_structured(model, "weight", 16, Norm::P(1.0), 0, None).unwrap();
            }
        }
        let mask = ours_model.buffer("weight_mask").unwrap().shallow_clone();
        assert!(mask.equal(theirs_model.buffer("weight_mask").unwrap()));
        let before = weight_orig(&ours_model);
        for _ in 0..STEPS {
            step(&ours_model, &theirs_model);
        }
        let pruned = mask.logical_not();
        let ours_orig = weight_orig(&ours_model);
        assert!(
            same_at(&ours_orig, &before, &pruned),
            "round {round}: a pruned entry of weight_orig moved"
        );
        assert!(
            !same_at(&weight_orig(&theirs_model), &before, &pruned),
            "round {round}: libtorch's Adam moves pruned entries (decay, earlier momentum)"
        );
        // What the forward pass reads is libtorch's.
        assert_close(
            &ours_model.get("weight"),
            &theirs_model.get("weight"),
            "weight",
        );
        assert_close(
            &ours_vs.variables()["bias"],
            &theirs_vs.variables()["bias"],
            "bias",
        );
    }
}

#[test]
fn a_mask_written_in_place_is_followed_from_the_next_step() {
    let vs = twins(Kind::Float).0;
    let mut model = module_on(&vs);
    prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap();
    let mut adam = MaskedAdam::new(&vs, nn::Adam::default(), 1e-2).unwrap();
    let mut step = |model: &Module| {
        let g = gradients(&vs);
        adam.backward_step(model, &module_loss(model, &g)).unwrap();
    };
    step(&model);
    // Prune a kept entry by writing the buffer itself (same tensor, a new version).
    let mask = model.buffer("weight_mask").unwrap().shallow_clone();
    let kept_at = mask
        .flatten(0, -1)
        .to_kind(Kind::Int64)
        .argmax(0, false)
        .int64_value(&[]);
    let (row, col) = (kept_at / 48, kept_at % 48);
    let _ = tch::no_grad(|| mask.get(row).get(col).fill_(0));
    let before = weight_orig(&model).double_value(&[row, col]);
    for _ in 0..3 {
        step(&model);
    }
    assert_eq!(weight_orig(&model).double_value(&[row, col]), before);
    assert_eq!(model.get("weight").double_value(&[row, col]), 0.0);
}

#[test]
fn a_module_variable_libtorch_updates_keeps_its_pruned_entries() {
    // bf16 variables go to libtorch's Adam; `weight_orig` must not be multiplied by the mask.
    let vs = twins(Kind::BFloat16).0;
    let mut model = module_on(&vs);
    prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap();
    let before = weight_orig(&model);
    let mask = model.buffer("weight_mask").unwrap().shallow_clone();
    let mut adam = MaskedAdam::new(&vs, nn::Adam::default(), 1e-2).unwrap();
    for _ in 0..3 {
        let g = gradients(&vs);
        adam.backward_step(&model, &module_loss(&model, &g))
            .unwrap();
    }
    let pruned = mask.logical_not();
    let after = weight_orig(&model);
    assert!(same_at(&after, &before, &pruned));
    assert!(!after.equal(&before));
}
