//! custom_from_mask: pruning with a mask the caller already has.

mod common;

use tchprune::prune;

#[test]
fn a_custom_mask_combines_with_the_existing_mask() {
    let t = common::tensor2(&[&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]]);
    let mut m = common::module_with_weight(&t);
    prune::l1_unstructured(&mut m, "weight", 2, None).unwrap();
    let custom = common::tensor2(&[&[1.0, 1.0, 1.0], &[0.0, 1.0, 1.0]]);
    prune::custom_from_mask(&mut m, "weight", &custom).unwrap();
    assert_eq!(
        common::mask_values(&m, "weight"),
        [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    );
}

#[test]
fn a_custom_mask_must_be_binary_and_of_the_right_shape() {
    let (_vs, mut m) = common::linear_model(3, 2);
    assert!(prune::custom_from_mask(
        &mut m,
        "weight",
        &common::tensor2(&[&[0.5, 1.0, 1.0], &[1.0, 1.0, 1.0]])
    )
    .is_err());
    assert!(prune::custom_from_mask(&mut m, "weight", &common::tensor2(&[&[1.0, 1.0]])).is_err());
    assert!(!m.is_pruned());
}
