//! A failed pruning leaves the module exactly as it was, including already pruned tensors and
//! every tensor of a global pruning; a method's bad mask, or its panic, is an error naming the
//! method.

mod common;

use std::sync::Arc;
use tch::Tensor;
use tchprune::method::L1Unstructured;
use tchprune::{prune, Module, Norm, PruneError, PruningMethod, PruningType, Result};

type Entries = Vec<(String, Vec<f64>)>;

/// Names, values and histories: everything a failure must leave as it was.
fn snapshot(m: &Module) -> (Entries, Entries, Vec<String>) {
    let vals = |entries: Vec<(String, Tensor)>| {
        entries
            .into_iter()
            .map(|(n, t)| (n, common::values(&t)))
            .collect()
    };
    let hooks = m
        .named_modules()
        .iter()
        .flat_map(|(_, sub)| sub.pruning_hooks().map(|h| format!("{h:?}")))
        .collect();
    (vals(m.named_parameters()), vals(m.named_buffers()), hooks)
}

#[derive(Debug)]
enum Bad {
    Fails,
    WrongShape,
    NotBinary,
    Revives,
    Panics,
    /// Calls libtorch in a way it refuses, through a tch call that panics on that refusal.
    TchPanics,
}

impl PruningMethod for Bad {
    fn name(&self) -> &str {
        "bad"
    }
    fn pruning_type(&self) -> PruningType {
        PruningType::Global
    }
    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        match self {
            Bad::Fails => Err(PruneError::MethodFailed {
                method: "bad".into(),
                reason: "refuses".into(),
            }),
            Bad::WrongShape => Ok(default_mask.view(-1).slice(0, 0, 1, 1).copy()),
            Bad::NotBinary => Ok(default_mask.to_kind(tch::Kind::Float) * 0.5),
            Bad::Revives => Ok(default_mask.ones_like()),
            Bad::Panics => panic!("a bug in the method"),
            Bad::TchPanics => {
                let counts = t.to_kind(tch::Kind::Int64);
                Ok(counts.f_norm_scalaropt_dim(2.0, [0i64].as_slice(), false)?)
            }
        }
    }
}

#[test]
fn a_failing_first_pruning_leaves_no_orig_or_mask() {
    let (_vs, mut m) = common::linear_model(4, 3);
    let before = snapshot(&m);
    for bad in [Bad::Fails, Bad::WrongShape, Bad::NotBinary, Bad::Panics] {
        assert!(prune::apply(&mut m, "weight", Arc::new(bad), None).is_err());
        assert_eq!(snapshot(&m), before);
    }
}

#[test]
fn a_failing_repruning_leaves_the_pruned_tensor_as_it_was() {
    let (_vs, mut m) = common::linear_model(6, 4);
    prune::l1_unstructured(&mut m, "weight", 0.5, None).unwrap();
    let before = snapshot(&m);
    let errors = [
        prune::l1_unstructured(&mut m, "weight", 13, None).unwrap_err(),
        prune::ln_structured(&mut m, "weight", 1, Norm::P(2.0), 5, None).unwrap_err(),
        prune::apply(&mut m, "weight", Arc::new(Bad::Revives), None).unwrap_err(),
        prune::apply(&mut m, "weight", Arc::new(Bad::NotBinary), None).unwrap_err(),
        prune::apply(&mut m, "weight", Arc::new(Bad::WrongShape), None).unwrap_err(),
        prune::apply(&mut m, "weight", Arc::new(Bad::Panics), None).unwrap_err(),
        prune::apply(&mut m, "weight", Arc::new(Bad::TchPanics), None).unwrap_err(),
    ];
    assert!(
        matches!(errors[2].innermost(), PruneError::RevivedEntries(_)),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].to_string().contains("method bad"),
        "{}",
        errors[3]
    );
    assert!(
        errors[5]
            .to_string()
            .contains("method bad failed: it panicked: a bug in the method"),
        "{}",
        errors[5]
    );
    assert!(
        errors[6].to_string().contains(
            "method bad failed: cannot prune Float tensors (libtorch: norm(): input dtype \
             should be either floating point or complex. Got Long instead.)"
        ),
        "{}",
        errors[6]
    );
    assert_eq!(snapshot(&m), before);
}

#[test]
fn a_failing_global_pruning_changes_no_tensor() {
    let mut root = Module::new("Root")
        .with_child("a", common::linear_model(3, 3).1)
        .with_child("b", common::linear_model(3, 2).1);
    prune::l1_unstructured(&mut root, "a.weight", 2, None).unwrap();
    let before = snapshot(&root);
    let too_many = Arc::new(L1Unstructured::new(100).unwrap());
    assert!(
        prune::global_unstructured(&mut root, &["a.weight", "b.weight"], too_many, &[]).is_err()
    );
    let fine = Arc::new(L1Unstructured::new(1).unwrap());
    assert!(prune::global_unstructured(&mut root, &["a.weight", "b.nothing"], fine, &[]).is_err());
    assert_eq!(snapshot(&root), before);
}
