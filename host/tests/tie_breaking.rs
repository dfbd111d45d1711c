//! Ties: exactly the requested number of entries is pruned, whatever the ties.

mod common;

use tch::{Device, Kind, Tensor};
use tchprune::prune;

#[test]
fn ties_prune_exactly_the_requested_count() {
    let t = Tensor::ones([10, 10], (Kind::Float, Device::Cpu));
    for k in [0, 1, 37, 99, 100] {
        let mut m = common::module_with_weight(&t);
        prune::l1_unstructured(&mut m, "weight", k, None).unwrap();
        let kept: f64 = common::mask_values(&m, "weight").iter().sum();
        assert_eq!(kept, (100 - k) as f64, "k = {k}");
    }
}

#[test]
fn partial_ties_prune_all_smaller_entries_and_some_tied_ones() {
    let t = Tensor::from_slice(&[3.0f32, 1.0, 2.0, 2.0, 2.0, 5.0, -2.0, 0.5]);
    let mut m = common::module_with_weight(&t);
    prune::l1_unstructured(&mut m, "weight", 4, None).unwrap();
    let mask = common::mask_values(&m, "weight");
    assert_eq!(mask.iter().sum::<f64>(), 4.0);
    assert_eq!((mask[1], mask[7], mask[0], mask[5]), (0.0, 0.0, 1.0, 1.0));
    let tied_pruned = [2, 3, 4, 6].iter().filter(|&&i| mask[i] == 0.0).count();
    assert_eq!(tied_pruned, 2);
}

#[test]
fn half_precision_ties_keep_the_count() {
    for kind in [Kind::Half, Kind::BFloat16] {
        let t = (Tensor::randint(4, [64], (Kind::Int64, Device::Cpu)) - 2).to_kind(kind);
        let mut m = common::module_with_weight(&t);
        prune::l1_unstructured(&mut m, "weight", 0.4, None).unwrap();
        prune::random_unstructured(&mut m, "weight", 0.25).unwrap();
        let kept: f64 = common::mask_values(&m, "weight").iter().sum();
        assert_eq!(kept, 64.0 - 26.0 - 10.0, "{kind:?}");
    }
}

#[test]
fn nan_ranks_above_every_number() {
    let t = Tensor::from_slice(&[f32::NAN, 1.0, -3.0, 2.0]);
    let mut m = common::module_with_weight(&t);
    prune::l1_unstructured(&mut m, "weight", 3, None).unwrap();
    assert_eq!(common::mask_values(&m, "weight"), [1.0, 0.0, 0.0, 0.0]);
}
