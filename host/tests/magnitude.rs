//! L1 (magnitude) pruning, iterative, with and without importance scores.

mod common;

use common::tensor2;
use tchprune::prune;

fn module() -> tchprune::Module {
    common::module_with_weight(&tensor2(&[
        &[1.0, 2.0, 3.0, 4.0],
        &[-4.0, -3.0, -2.0, -1.0],
    ]))
}

fn weight(m: &tchprune::Module) -> Vec<f64> {
    common::values(&m.get("weight"))
}

#[test]
fn l1_twice_prunes_the_smallest_remaining_entries() {
    let mut m = module();
    prune::l1_unstructured(&mut m, "weight", 2, None).unwrap();
    assert_eq!(weight(&m), [0.0, 2.0, 3.0, 4.0, -4.0, -3.0, -2.0, 0.0]);
    prune::l1_unstructured(&mut m, "weight", 2, None).unwrap();
    assert_eq!(weight(&m), [0.0, 0.0, 3.0, 4.0, -4.0, -3.0, 0.0, 0.0]);
}

#[test]
fn importance_scores_rank_the_entries_instead() {
    let scores = tensor2(&[&[4.0, 2.0, 1.0, 3.0], &[-3.0, -1.0, -2.0, -4.0]]);
    let mut m = module();
    prune::l1_unstructured(&mut m, "weight", 2, Some(&scores)).unwrap();
    assert_eq!(weight(&m), [1.0, 2.0, 0.0, 4.0, -4.0, 0.0, -2.0, -1.0]);
    prune::l1_unstructured(&mut m, "weight", 2, Some(&scores)).unwrap();
    assert_eq!(weight(&m), [1.0, 0.0, 0.0, 4.0, -4.0, 0.0, 0.0, -1.0]);
}

#[test]
fn scores_equal_to_the_tensor_behave_like_no_scores() {
    let (mut a, mut b) = (module(), module());
    let scores = a.get("weight").copy();
    prune::l1_unstructured(&mut a, "weight", 3, Some(&scores)).unwrap();
    prune::l1_unstructured(&mut b, "weight", 3, None).unwrap();
    assert_eq!(weight(&a), weight(&b));
}

#[test]
fn scores_of_another_shape_are_an_error() {
    let mut m = module();
    let scores = tensor2(&[&[1.0, 2.0]]);
    assert!(prune::l1_unstructured(&mut m, "weight", 1, Some(&scores)).is_err());
    assert!(!m.is_pruned());
}
