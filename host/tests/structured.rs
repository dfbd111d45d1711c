//! Structured pruning: random and Ln, by hand on a fixed Conv2d, and their validations.

mod common;

use tch::{nn, Device, Kind, Tensor};
use tchprune::{layers, prune, Norm, PruneError};

fn conv() -> (nn::VarStore, tchprune::Module) {
    let vs = nn::VarStore::new(Device::Cpu);
    let m = layers::conv2d(&vs.root(), 3, 1, 2, Default::default());
    let w = Tensor::from_slice(&[
        1.0f32, 2.0, 1.0, 2.5, 0.5, 1.0, 0.1, 0.1, -3.0, -5.0, 0.1, -1.0,
    ])
    .view([1, 3, 2, 2]);
    tch::no_grad(|| m.parameter("weight").unwrap().shallow_clone().copy_(&w));
    (vs, m)
}

/// The mask as `[channel][row][column]`.
fn mask(m: &tchprune::Module) -> Vec<f64> {
    common::mask_values(m, "weight")
}

#[test]
fn ln_structured_picks_the_channel_then_the_column() {
    let (_vs, mut m) = conv();
    prune::ln_structured(&mut m, "weight", 1, Norm::P(2.0), 1, None).unwrap();
    assert_eq!(mask(&m), [1., 1., 1., 1., 0., 0., 0., 0., 1., 1., 1., 1.]);
    prune::ln_structured(&mut m, "weight", 1, Norm::P(1.0), -1, None).unwrap();
    assert_eq!(mask(&m), [0., 1., 0., 1., 0., 0., 0., 0., 0., 1., 0., 1.]);
}

#[test]
fn ln_structured_with_importance_scores() {
    let (_vs, mut m) = conv();
    let scores = Tensor::from_slice(&[
        10.0f32, 1.0, 10.0, 1.0, 30.0, 3.0, 30.0, 3.0, -20.0, -2.0, -20.0, -2.0,
    ])
    .view([1, 3, 2, 2]);
    prune::ln_structured(&mut m, "weight", 1, Norm::P(2.0), 1, Some(&scores)).unwrap();
    assert_eq!(mask(&m), [0., 0., 0., 0., 1., 1., 1., 1., 1., 1., 1., 1.]);
    prune::ln_structured(&mut m, "weight", 1, Norm::P(1.0), -1, Some(&scores)).unwrap();
    assert_eq!(mask(&m), [0., 0., 0., 0., 1., 0., 1., 0., 1., 0., 1., 0.]);
}

#[test]
fn random_structured_prunes_exactly_one_of_two_slices() {
    for _ in 0..20 {
        let t = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
        let mut m = common::module_with_weight(&t);
        prune::random_structured(&mut m, "weight", 0.6, 0).unwrap();
        let rows: Vec<f64> = m
            .buffer("weight_mask")
            .unwrap()
            .to_kind(Kind::Float)
            .sum_dim_intlist(1, false, Kind::Float)
            .try_into()
            .unwrap();
        assert!(rows == [0.0, 5.0] || rows == [5.0, 0.0], "{rows:?}");
    }
}

#[test]
fn structured_methods_need_two_dims_and_a_valid_dim() {
    let (_vs, mut m) = common::linear_model(4, 3);
    let err = prune::ln_structured(&mut m, "bias", 1, Norm::P(2.0), 0, None).unwrap_err();
    assert!(
        matches!(err.innermost(), PruneError::NotMultidimensional { .. }),
        "{err}"
    );
    let err = prune::random_structured(&mut m, "weight", 1, 2).unwrap_err();
    assert!(
        matches!(
            err.innermost(),
            PruneError::DimOutOfRange { dim: 2, ndim: 2 }
        ),
        "{err}"
    );
    let err = prune::ln_structured(&mut m, "weight", 1, Norm::P(2.0), -3, None).unwrap_err();
    assert!(
        matches!(err.innermost(), PruneError::DimOutOfRange { .. }),
        "{err}"
    );
    assert!(!m.is_pruned());
}

#[test]
fn fro_reduces_at_most_two_dims() {
    let (_vs, mut c) = conv();
    let err = prune::ln_structured(&mut c, "weight", 1, Norm::Fro, 1, None).unwrap_err();
    assert!(
        matches!(err.innermost(), PruneError::InvalidNorm(_)),
        "{err}"
    );
    let (_vs, mut l) = common::linear_model(4, 3);
    prune::ln_structured(&mut l, "weight", 1, Norm::Fro, 0, None).unwrap();
    let rows_kept: f64 = common::mask_values(&l, "weight").iter().sum();
    assert_eq!(rows_kept, 8.0);
}

#[test]
fn norms_parse_from_text_and_json() {
    assert_eq!("inf".parse::<Norm>().unwrap(), Norm::P(f64::INFINITY));
    assert_eq!("-inf".parse::<Norm>().unwrap(), Norm::P(f64::NEG_INFINITY));
    assert_eq!("fro".parse::<Norm>().unwrap(), Norm::Fro);
    assert_eq!(
        Norm::from_json(&serde_json::json!(3)).unwrap(),
        Norm::P(3.0)
    );
    assert!("nuc".parse::<Norm>().is_err());
    assert!(Norm::from_json(&serde_json::json!([2])).is_err());
}

#[test]
fn norms_without_identity_over_slices_without_entries_are_refused_as_pytorch_does() {
    // `[3, 0]` along dim 0: three slices of no entries. p < 0 and inf have no value there
    // (libtorch refuses them); for p >= 0 each slice's norm is 0.
    for (n, refused) in [
        (Norm::P(f64::INFINITY), true),
        (Norm::P(f64::NEG_INFINITY), true),
        (Norm::P(-1.0), true),
        (Norm::P(2.0), false),
        (Norm::P(0.0), false),
        (Norm::Fro, false),
    ] {
        let mut m = common::module_with_weight(&Tensor::zeros([3, 0], (Kind::Float, Device::Cpu)));
        match prune::ln_structured(&mut m, "weight", 1, n, 0, None) {
            Err(err) => {
                assert!(refused, "{n:?}: {err}");
                assert!(
                    err.to_string().contains(
                        "norm has no value over no entries, and the slices of a tensor of \
                         shape [3, 0] along dim 0 have none"
                    ),
                    "{err}"
                );
                assert!(!m.is_pruned());
            }
            Ok(()) => assert!(!refused, "{n:?} was taken"),
        }
    }
}
