//! Amounts: validation when a method is created and when its mask is computed, and rounding.

mod common;

use serde_json::json;
use tchprune::method::{L1Unstructured, LnStructured, RandomStructured, RandomUnstructured};
use tchprune::{prune, Amount, Norm, PruneError};

#[test]
fn creation_rejects_negative_counts_and_fractions_outside_unit_interval() {
    for bad in [
        Amount::Count(-1),
        Amount::Fraction(1.1),
        Amount::Fraction(-0.1),
        Amount::Fraction(f64::NAN),
    ] {
        assert!(
            matches!(
                L1Unstructured::new(bad),
                Err(PruneError::InvalidAmount { .. })
            ),
            "{bad:?}"
        );
        assert!(RandomUnstructured::new(bad).is_err());
        assert!(RandomStructured::new(bad, 0).is_err());
        assert!(LnStructured::new(bad, Norm::P(2.0), 0).is_err());
    }
    for good in [
        Amount::Count(0),
        Amount::Count(5),
        Amount::Fraction(0.0),
        Amount::Fraction(1.0),
    ] {
        assert!(L1Unstructured::new(good).is_ok(), "{good:?}");
    }
}

#[test]
fn json_keeps_count_and_fraction_apart_and_rejects_non_numbers() {
    assert_eq!(Amount::from_json(&json!(1)).unwrap(), Amount::Count(1));
    assert_eq!(
        Amount::from_json(&json!(1.0)).unwrap(),
        Amount::Fraction(1.0)
    );
    assert_eq!(
        Amount::from_json(&json!(0.3)).unwrap(),
        Amount::Fraction(0.3)
    );
    for bad in [json!("0.3"), json!(null), json!([1]), json!(-2), json!(1.5)] {
        assert!(Amount::from_json(&bad).is_err(), "{bad}");
    }
}

#[test]
fn fractions_round_half_to_even() {
    let cases = [
        (0.5, 5, 2),
        (0.25, 10, 2),
        (0.75, 10, 8),
        (0.4, 17, 7),
        (0.3, 54, 16),
        (1.0, 9, 9),
        (0.0, 9, 0),
    ];
    for (fraction, units, expected) in cases {
        assert_eq!(
            Amount::Fraction(fraction).units_to_prune(units).unwrap(),
            expected,
            "{fraction} of {units}"
        );
    }
    assert_eq!(Amount::Count(1).units_to_prune(9).unwrap(), 1);
}

#[test]
fn a_count_larger_than_the_units_fails_when_the_mask_is_computed() {
    assert!(matches!(
        Amount::Count(11).units_to_prune(10),
        Err(PruneError::AmountTooLarge {
            amount: 11,
            units: 10
        })
    ));
    assert_eq!(Amount::Count(10).units_to_prune(10).unwrap(), 10);
    let (_vs, mut model) = common::linear_model(3, 2);
    let err = prune::l1_unstructured(&mut model, "weight", 7, None).unwrap_err();
    assert!(err.to_string().contains("amount=7"), "{err}");
    prune::l1_unstructured(&mut model, "weight", 6, None).unwrap();
    assert_eq!(common::mask_values(&model, "weight"), vec![0.0; 6]);
}

#[test]
fn one_is_a_unit_and_one_point_zero_is_everything() {
    let (_vs, mut model) = common::linear_model(4, 3);
    prune::random_unstructured(&mut model, "weight", 1).unwrap();
    assert_eq!(
        common::mask_values(&model, "weight").iter().sum::<f64>(),
        11.0
    );
    prune::random_unstructured(&mut model, "bias", 1.0).unwrap();
    assert_eq!(common::mask_values(&model, "bias"), vec![0.0; 3]);
}
