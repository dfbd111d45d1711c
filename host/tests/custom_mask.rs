//! custom_from_mask: pruning with a mask the caller already has.

mod common;

use tch::{Kind, Tensor};
use tchprune::{checkpoint, prune, VarStorePruner};

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

/// A `[2, 3]` `bool` tensor whose second entry is the byte `second` (libtorch makes one from
/// raw bytes); transposed from `[3, 2]`, so not contiguous, when `contiguous` is false.
fn bool_mask_with(second: u8, contiguous: bool) -> Tensor {
    match contiguous {
        true => Tensor::from_data_size(&[1, second, 0, 1, 1, 0], &[2, 3], Kind::Bool),
        false => Tensor::from_data_size(&[1, 1, second, 1, 0, 0], &[3, 2], Kind::Bool).tr(),
    }
}

#[test]
fn a_bool_mask_holding_other_bytes_than_0_and_1_is_refused_by_both_front_ends() {
    for contiguous in [true, false] {
        let (vs, mut module) = common::linear_model(3, 2);
        let mut pruner = VarStorePruner::new(&vs);
        let bad = bool_mask_with(2, contiguous);
        let refused = |result: tchprune::Result<()>| {
            let message = result.unwrap_err().to_string();
            assert!(message.contains("only 0 and 1"), "{message}");
        };
        refused(prune::custom_from_mask(&mut module, "weight", &bad));
        refused(prune::custom_from_mask(&mut pruner, "weight", &bad));
        assert!(!module.is_pruned());
        assert!(pruner.pruned_names().is_empty());

        let weight = module.get("weight");
        let state = [
            ("weight_orig".to_owned(), weight.copy()),
            ("weight_mask".to_owned(), bad.shallow_clone()),
            ("bias".to_owned(), module.get("bias").copy()),
        ];
        let message = checkpoint::load_state_dict(&mut module, &state, true)
            .unwrap_err()
            .to_string();
        assert!(message.contains("weight_mask"), "{message}");
        assert!(!module.is_pruned());
        refused(pruner.load_state_dict(&state, true).map(|_| ()));
        assert!(pruner.pruned_names().is_empty());

        // The same mask holding the byte 1 there is taken.
        let good = bool_mask_with(1, contiguous);
        prune::custom_from_mask(&mut module, "weight", &good).unwrap();
        prune::custom_from_mask(&mut pruner, "weight", &good).unwrap();
        assert_eq!(
            common::mask_values(&module, "weight"),
            [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
        );
        assert_eq!(pruner.pruned_names(), ["weight"]);
    }
}
