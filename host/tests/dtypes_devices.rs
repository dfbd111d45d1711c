//! Parameters of every float dtype, on the CPU and (when present) on CUDA.

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
