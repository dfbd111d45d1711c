//! The method history of a tensor and how new methods combine with the current mask.

mod common;

use common::{mask_values, tensor2, values};
use std::sync::Arc;
use tchprune::method::{Identity, L1Unstructured, LnStructured};
use tchprune::{prune, Norm, PruneError, PruningContainer};

fn t() -> tch::Tensor {
    tensor2(&[&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]])
}

fn mask() -> tch::Tensor {
    tensor2(&[&[1.0, 1.0, 1.0, 0.0], &[1.0, 1.0, 0.0, 1.0]]).to_kind(tch::Kind::Bool)
}

fn combined(method: Arc<dyn tchprune::PruningMethod>) -> Vec<f64> {
    let mut container = PruningContainer::new("test");
    container.add_pruning_method("test", method).unwrap();
    values(&container.compute_mask(&t(), &mask()).unwrap())
}

#[test]
fn unstructured_methods_see_only_unpruned_entries() {
    assert_eq!(
        combined(Arc::new(L1Unstructured::new(2).unwrap())),
        [0., 0., 1., 0., 1., 1., 0., 1.]
    );
}

#[test]
fn structured_methods_see_only_unpruned_slices() {
    let dim0 = Arc::new(LnStructured::new(1, Norm::P(2.0), 0).unwrap());
    assert_eq!(combined(dim0), [0., 0., 0., 0., 1., 1., 0., 1.]);
    let dim1 = Arc::new(LnStructured::new(1, Norm::P(2.0), 1).unwrap());
    assert_eq!(combined(dim1), [0., 1., 1., 0., 0., 1., 0., 1.]);
}

#[test]
fn a_container_rejects_methods_for_another_tensor() {
    let mut container = PruningContainer::new("test");
    container
        .add_pruning_method("test", Arc::new(Identity))
        .unwrap();
    let err = container
        .add_pruning_method("other", Arc::new(Identity))
        .unwrap_err();
    assert!(matches!(err, PruneError::ContainerTensorMismatch { .. }));
    assert_eq!(container.history().len(), 1);
}

#[test]
fn multiple_prunings_build_the_history() {
    let (_vs, mut model) = common::linear_model(4, 3);
    prune::l1_unstructured(&mut model, "weight", 2, None).unwrap();
    assert_eq!(
        model.pruning_hook("weight").unwrap().method_names(),
        ["l1_unstructured"]
    );
    prune::ln_structured(&mut model, "weight", 1, Norm::P(2.0), 0, None).unwrap();
    prune::random_unstructured(&mut model, "weight", 0.5).unwrap();
    let hook = model.pruning_hook("weight").unwrap();
    assert_eq!(
        hook.method_names(),
        ["l1_unstructured", "ln_structured", "random_unstructured"]
    );
    assert_eq!(model.pruning_hooks().count(), 1, "one hook per tensor");
}

#[test]
fn iterative_fractions_are_relative_to_what_remains() {
    let (_vs, mut model) = common::linear_model(10, 10);
    prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap();
    prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap();
    assert_eq!(mask_values(&model, "weight").iter().sum::<f64>(), 25.0);
}

#[test]
fn structured_methods_prune_again_tensors_without_entries() {
    // As PyTorch: every slice of a tensor without entries counts as pruned, so a second
    // structured pruning sees none and keeps the (empty) mask.
    for (shape, dim) in [([0, 3], 0), ([3, 0], 1), ([0, 3], 1), ([3, 0], 0)] {
        let mut m = common::module_with_weight(&tch::Tensor::zeros(
            shape,
            (tch::Kind::Float, tch::Device::Cpu),
        ));
        prune::l1_unstructured(&mut m, "weight", 0.5, None).unwrap();
        prune::ln_structured(&mut m, "weight", 0.5, Norm::P(2.0), dim, None).unwrap();
        prune::random_structured(&mut m, "weight", 0.5, dim).unwrap();
        assert_eq!(m.buffer("weight_mask").unwrap().size(), shape);
        assert_eq!(
            m.pruning_hook("weight").unwrap().method_names(),
            ["l1_unstructured", "ln_structured", "random_structured"],
            "{shape:?} along {dim}"
        );
    }
}
