//! Parameters of every float dtype, on the CPU and (when present) on CUDA; and what other
//! dtypes cannot do.

mod common;

use tch::{Device, Kind, Tensor};
use tchprune::{prune, Norm};

fn prune_everything(device: Device, kind: Kind) {
    let t = Tensor::randn([6, 4, 3], (kind, device));
    let mut m = common::module_with_weight(&t);
    prune::l1_unstructured(&mut m, "weight", 0.3, None).unwrap();
    prune::ln_structured(&mut m, "weight", 1, Norm::P(2.0), 0, None).unwrap();
    prune::random_unstructured(&mut m, "weight", 5).unwrap();
    prune::random_structured(&mut m, "weight", 1, -1).unwrap();
    let mask = m.buffer("weight_mask").unwrap();
    assert_eq!((mask.device(), mask.kind()), (device, Kind::Bool));
    let weight = m.get("weight");
    assert_eq!((weight.device(), weight.kind()), (device, kind));
    let state = m.state_dict();
    assert!(
        state.iter().all(|(_, t)| t.kind() == kind),
        "state_dict masks in the parameter dtype"
    );
    prune::remove(&mut m, "weight").unwrap();
    assert_eq!(m.parameter("weight").unwrap().kind(), kind);
}

#[test]
fn every_float_dtype_on_the_cpu() {
    for kind in [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16] {
        prune_everything(Device::Cpu, kind);
    }
}

#[test]
fn every_float_dtype_on_cuda() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: CUDA is not available on this machine");
        return;
    }
    for kind in [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16] {
        prune_everything(Device::Cuda(0), kind);
    }
}

#[test]
fn what_libtorch_cannot_do_for_a_dtype_is_an_error_naming_it() {
    // Integers: magnitudes rank, but norms and random draws are for floats only (libtorch's
    // refusal of the norm would reach tch as a panic: a call given a `Scalar`).
    let t = Tensor::from_slice(&[3i64, -1, 4, -1, 5, 9, -2, 6]).reshape([2, 4]);
    let mut m = tchprune::Module::new("Counts").with_parameter("weight", t);
    let err = prune::ln_structured(&mut m, "weight", 1, Norm::P(2.0), 0, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot prune Int64 tensors (norms are of floating-point or complex"),
        "{err}"
    );
    let err = prune::random_unstructured(&mut m, "weight", 2).unwrap_err();
    assert!(err.to_string().contains("cannot prune Int64"), "{err}");
    assert!(!m.is_pruned());
    prune::l1_unstructured(&mut m, "weight", 3, None).unwrap();
    assert_eq!(
        common::values(&m.get("weight")),
        [3., 0., 4., 0., 5., 9., 0., 6.]
    );
}
