//! Collecting the statistics of Linear layers' inputs: sums that equal `X^T X` and `||X_j||^2`
//! over every batch, from a `Module` tree (forward hooks), from a tch model (one line per layer
//! type), shared by layers that read the same input, and errors kept for after the pass.

use tch::{nn, nn::Module as _, Device, Kind, Tensor};
use tchprune::calibration::{Calibration, Needs};
use tchprune::layers;

fn close(a: &Tensor, b: &Tensor) -> bool {
    (a - b).abs().max().double_value(&[]) < 1e-3 * b.abs().max().double_value(&[]).max(1.0)
}

#[test]
fn sums_over_batches_equal_the_whole() {
    let calibration = Calibration::new(Needs::GRAM);
    let batches: Vec<Tensor> = (0..3)
        .map(|_| Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu)))
        .collect();
    for x in &batches {
        calibration.observe(&["a.weight", "b.weight"], x);
    }
    let all = Tensor::cat(&batches, 0).reshape([-1, 8]);
    let a = calibration.statistics("a.weight").unwrap().unwrap();
    let b = calibration.statistics("b.weight").unwrap().unwrap();
    assert_eq!((a.tokens, a.samples, a.features), (30, 6, 8));
    assert!(close(a.gram.as_ref().unwrap(), &all.tr().matmul(&all)));
    assert!(close(
        &a.squared_norms,
        &all.square().sum_dim_intlist(0, false, Kind::Float)
    ));
    // One accumulator for both layers.
    assert_eq!(a.squared_norms.data_ptr(), b.squared_norms.data_ptr());
    assert_eq!(calibration.layers(), ["a.weight", "b.weight"]);
    calibration.clear();
    assert!(calibration.statistics("a.weight").unwrap().is_none());
}

#[test]
fn a_module_tree_reports_through_its_forward_hooks() {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let mut model = layers::sequential([
        layers::linear(&(&root / "fc1"), 6, 4, Default::default()),
        layers::relu(),
        layers::linear(&(&root / "fc2"), 4, 3, Default::default()),
    ]);
    let calibration = Calibration::new(Needs::NORMS);
    calibration.attach(&mut model).unwrap();
    let x = Tensor::randn([7, 6], (Kind::Float, Device::Cpu));
    let y = model.forward(&x);
    assert_eq!(calibration.layers(), ["0.weight", "2.weight"]);
    let first = calibration.statistics("0.weight").unwrap().unwrap();
    assert!(close(
        &first.squared_norms,
        &x.square().sum_dim_intlist(0, false, Kind::Float)
    ));
    assert!(first.gram.is_none());
    // Detached: the same outputs, nothing more recorded.
    calibration.detach(&mut model).unwrap();
    assert!(model.forward(&x).equal(&y));
    assert_eq!(
        calibration.statistics("0.weight").unwrap().unwrap().tokens,
        7
    );
    let hidden = model.submodule("0").unwrap().forward(&x).relu();
    let second = calibration.statistics("2.weight").unwrap().unwrap();
    assert!(close(
        &second.squared_norms,
        &hidden.square().sum_dim_intlist(0, false, Kind::Float)
    ));
}

#[test]
fn a_tch_model_reports_with_one_line_per_layer() {
    let vs = nn::VarStore::new(Device::Cpu);
    let calibration = Calibration::new(Needs::GRAM);
    let net = nn::seq()
        .add(calibration.linear(&(vs.root() / "fc1"), 5, 3, Default::default()))
        .add_fn(|x| x.relu())
        .add(calibration.linear(&(vs.root() / "fc2"), 3, 2, Default::default()));
    let x = Tensor::randn([9, 5], (Kind::Float, Device::Cpu));
    let _ = net.forward(&x);
    let fc1 = calibration.statistics("fc1.weight").unwrap().unwrap();
    assert!(close(fc1.gram.as_ref().unwrap(), &x.tr().matmul(&x)));
    assert_eq!(
        calibration
            .statistics("fc2.weight")
            .unwrap()
            .unwrap()
            .features,
        3
    );
}

#[test]
fn a_width_that_changes_is_an_error_after_the_pass() {
    let calibration = Calibration::new(Needs::NORMS);
    calibration.observe(&["w"], &Tensor::ones([2, 4], (Kind::Float, Device::Cpu)));
    calibration.observe(&["w"], &Tensor::ones([2, 5], (Kind::Float, Device::Cpu)));
    let error = calibration.check().unwrap_err().to_string();
    assert!(error.contains("'w'") && error.contains("[5]"), "{error}");
}
