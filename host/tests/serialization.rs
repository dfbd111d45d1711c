//! state_dicts on disk: round trips, loading a pruned checkpoint into a fresh model, errors.

mod common;

use tch::{nn, Device, Kind, Tensor};
use tchprune::{checkpoint, layers, prune, Norm, PruneError};

fn lenet() -> (nn::VarStore, tchprune::Module) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = layers::lenet(&vs.root());
    (vs, model)
}

fn input() -> Tensor {
    Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu))
}

#[test]
fn a_pruned_state_dict_round_trips_into_an_identically_pruned_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (_vs, mut model) = lenet();
    prune::l1_unstructured(&mut model, "fc1.weight", 0.9, None).unwrap();
    prune::ln_structured(&mut model, "conv1.weight", 2, Norm::P(1.0), 0, None).unwrap();
    checkpoint::save(&model, &path).unwrap();
    let (_vs2, mut fresh) = lenet();
    prune::identity(&mut fresh, "fc1.weight").unwrap();
    prune::identity(&mut fresh, "conv1.weight").unwrap();
    let report =
        checkpoint::load_state_dict(&mut fresh, &checkpoint::load(&path).unwrap(), true).unwrap();
    assert!(report.restored.is_empty());
    let x = input();
    assert!(fresh.forward(&x).equal(&model.forward(&x)));
}

#[test]
fn a_pruned_checkpoint_restores_the_reparametrization_in_a_fresh_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (_vs, mut model) = lenet();
    prune::random_unstructured(&mut model, "conv2.weight", 0.5).unwrap();
    checkpoint::save(&model, &path).unwrap();
    let (_vs2, mut fresh) = lenet();
    let report =
        checkpoint::load_state_dict(&mut fresh, &checkpoint::load(&path).unwrap(), true).unwrap();
    assert_eq!(report.restored, ["conv2.weight"]);
    let x = input();
    assert!(fresh.forward(&x).equal(&model.forward(&x)));
    let keys: Vec<String> = fresh.state_dict().into_iter().map(|(k, _)| k).collect();
    let original: Vec<String> = model.state_dict().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, original);
}

#[test]
fn a_removed_pruning_loads_into_an_unpruned_model() {
    let (_vs, mut model) = lenet();
    prune::l1_unstructured(&mut model, "fc2.weight", 0.5, None).unwrap();
    prune::remove(&mut model, "fc2.weight").unwrap();
    let (_vs2, mut fresh) = lenet();
    checkpoint::load_state_dict(&mut fresh, &model.state_dict(), true).unwrap();
    let x = input();
    assert!(fresh.forward(&x).equal(&model.forward(&x)));
}

#[test]
fn strict_loading_names_missing_and_unexpected_keys_and_changes_nothing() {
    let (_vs, model) = lenet();
    let mut state = model.state_dict();
    state.retain(|(k, _)| k != "fc3.bias");
    state.push((
        "extra.weight".to_owned(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    let (_vs2, mut fresh) = lenet();
    let snapshot: Vec<Vec<f64>> = fresh
        .state_dict()
        .iter()
        .map(|(_, t)| common::values(t))
        .collect();
    let err = checkpoint::load_state_dict(&mut fresh, &state, true).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("fc3.bias") && text.contains("extra.weight"),
        "{text}"
    );
    let after: Vec<Vec<f64>> = fresh
        .state_dict()
        .iter()
        .map(|(_, t)| common::values(t))
        .collect();
    assert_eq!(snapshot, after);
    let report = checkpoint::load_state_dict(&mut fresh, &state, false).unwrap();
    assert_eq!(
        (report.missing, report.unexpected),
        (vec!["fc3.bias".to_owned()], vec!["extra.weight".to_owned()])
    );
}

#[test]
fn shape_and_dtype_mismatches_are_errors() {
    let (_vs, model) = lenet();
    let (_vs2, mut fresh) = lenet();
    let mut state = model.state_dict();
    state[0].1 = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    assert!(matches!(
        checkpoint::load_state_dict(&mut fresh, &state, true),
        Err(PruneError::ShapeMismatch { .. })
    ));
    let mut state = model.state_dict();
    state[0].1 = state[0].1.to_kind(Kind::Double);
    assert!(matches!(
        checkpoint::load_state_dict(&mut fresh, &state, true),
        Err(PruneError::StateDict(_))
    ));
}

#[test]
fn loading_a_missing_or_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        checkpoint::load(dir.path().join("none.safetensors")),
        Err(PruneError::Io { .. })
    ));
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a checkpoint").unwrap();
    let err = checkpoint::load(&corrupt).unwrap_err();
    assert!(err.to_string().contains("corrupt.safetensors"), "{err}");
}

#[test]
fn a_bool_tensor_holding_other_bytes_than_0_and_1_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = |data: [u8; 3]| {
        let header = br#"{"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"#;
        let path = dir.path().join(format!("mask-{}.safetensors", data[1]));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&data);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let read = checkpoint::read(file([1, 0, 1])).unwrap();
    assert_eq!(read.tensors[0].1.kind(), Kind::Bool);
    let err = checkpoint::read(file([1, 2, 0])).unwrap_err().to_string();
    assert!(
        err.contains("mask-2.safetensors") && err.contains("key 'm'") && err.contains("entry 1"),
        "{err}"
    );
}

/// Restoring several reparametrizations is one operation: when a later one cannot be restored
/// (here `bias_orig` is taken by a buffer), the earlier ones are not left behind.
#[test]
fn a_restoration_that_fails_leaves_the_model_unpruned() {
    let fresh_module = || {
        tchprune::Module::new("M")
            .with_parameter("weight", Tensor::ones([2, 3], (Kind::Float, Device::Cpu)))
            .with_parameter("bias", Tensor::ones([2], (Kind::Float, Device::Cpu)))
            .with_buffer("bias_orig", Tensor::zeros([2], (Kind::Float, Device::Cpu)))
    };
    let mut source = tchprune::Module::new("M")
        .with_parameter("weight", Tensor::ones([2, 3], (Kind::Float, Device::Cpu)))
        .with_parameter("bias", Tensor::ones([2], (Kind::Float, Device::Cpu)));
    prune::random_unstructured(&mut source, "weight", 0.5).unwrap();
    prune::random_unstructured(&mut source, "bias", 0.5).unwrap();
    let state = source.state_dict();

    let mut fresh = fresh_module();
    let before: Vec<String> = fresh.state_dict().into_iter().map(|(k, _)| k).collect();
    let err = checkpoint::load_state_dict(&mut fresh, &state, false).unwrap_err();
    assert!(matches!(err, PruneError::NameTaken { .. }), "{err}");
    let after: Vec<String> = fresh.state_dict().into_iter().map(|(k, _)| k).collect();
    assert_eq!(after, before);
    assert!(!prune::is_pruned(&fresh));
    assert!(fresh
        .get("weight")
        .equal(&Tensor::ones([2, 3], (Kind::Float, Device::Cpu))));
}

/// Small tensors are read in batches of neighbours (up to 1 MiB) and large ones on their own:
/// tensors of every size come back with their bytes, whichever batch each falls in, also one
/// that straddles the end of a batch.
#[test]
fn tensors_of_every_size_come_back_from_a_file_as_they_were_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sizes.safetensors");
    tch::manual_seed(7);
    // safetensors lays out the f64 tensor first, then the f32 ones by name: `t01` does not fit
    // in the batch read for `t20` and starts one of its own, 576 bytes longer than itself, so
    // `t02` crosses that batch's end.
    let floats = [3, 262_000, 1000, 300_000, 262_144, 262_145, 17, 0, 5];
    let mut tensors: Vec<(String, Tensor)> = (floats.iter().enumerate())
        .map(|(i, &len)| {
            let t = Tensor::randn([len], (Kind::Float, Device::Cpu));
            (format!("t{i:02}"), t)
        })
        .collect();
    let doubles = Tensor::randn([50_000], (Kind::Double, Device::Cpu));
    let bytes = Tensor::randn([3, 2], (Kind::Float, Device::Cpu)).to_kind(Kind::Int8);
    let mask = Tensor::randn([333], (Kind::Float, Device::Cpu)).gt(0);
    for (key, t) in [("t20", doubles), ("t21", bytes), ("t22", mask)] {
        tensors.push((key.to_owned(), t));
    }
    checkpoint::write(&tensors, &Default::default(), &path).unwrap();
    let read = checkpoint::read(&path).unwrap();
    assert_eq!(read.tensors.len(), tensors.len());
    for ((key, t), (read_key, read_t)) in tensors.iter().zip(&read.tensors) {
        assert_eq!(key, read_key);
        assert_eq!(
            (read_t.kind(), read_t.size()),
            (t.kind(), t.size()),
            "{key}"
        );
        assert!(read_t.equal(t), "{key}");
    }
}

/// A model's state_dict holds each mask in its parameter's dtype, as PyTorch does: 0 and 1,
/// bit for bit what libtorch's conversion gives, for small masks and large ones.
#[test]
fn masks_are_exported_in_their_parameters_dtype_whatever_their_size() {
    let kinds = [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16];
    for (rows, kind) in [4, 300].into_iter().flat_map(|r| kinds.map(|k| (r, k))) {
        let mut model =
            common::module_with_weight(&Tensor::randn([rows, 300], (kind, Device::Cpu)));
        prune::l1_unstructured(&mut model, "weight", 0.4, None).unwrap();
        let state = model.state_dict();
        let (_, exported) = state.iter().find(|(k, _)| k == "weight_mask").unwrap();
        let mask = model.buffer("weight_mask").unwrap();
        assert_eq!(exported.kind(), kind);
        let bits = |t: &Tensor| t.view_dtype(kind_of_bits(kind));
        assert!(
            bits(exported).equal(&bits(&mask.to_kind(kind))),
            "{rows} rows of {kind:?}"
        );
    }
}

fn kind_of_bits(kind: Kind) -> Kind {
    match kind {
        Kind::Double => Kind::Int64,
        Kind::Float => Kind::Int,
        _ => Kind::Int16,
    }
}
