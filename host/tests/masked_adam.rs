//! `MaskedAdam`: libtorch's Adam, fused, over the kept entries of pruned variables only.

use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};
use tchprune::optim::MaskedAdam;
use tchprune::{prune, Norm, PruneError, VarStorePruner};

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
fn amsgrad_is_refused() {
    let vs = nn::VarStore::new(Device::Cpu);
    let config = nn::Adam {
        amsgrad: true,
        ..Default::default()
    };
    let err = MaskedAdam::new(&vs, config, 1e-3).unwrap_err();
    assert!(matches!(err, PruneError::InvalidArgument { .. }), "{err}");
}
