//! Property tests: random corruptions of a valid safetensors file thrown at the loader, and
//! random plans thrown at the plan checker and runner. Each input gives an error or a correct
//! result: never a panic, and never an output file left behind by a failure. Bounded (a few
//! hundred cases on tiny tensors) so that the suite stays fast.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use tch::{Device, Kind, Tensor};
use tchprune::checkpoint::{self, MaskDtype};
use tchprune::plan::{Plan, PrunedState};
use tchprune::Registry;

/// A small valid checkpoint: two layers, one of them pruned already, with history metadata.
fn valid_checkpoint() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid.safetensors");
    let tensors = vec![
        (
            "a.weight".to_owned(),
            Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]),
        ),
        (
            "a.bias".to_owned(),
            Tensor::arange(3, (Kind::Double, Device::Cpu)),
        ),
        (
            "b.weight_orig".to_owned(),
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
        ),
        (
            "b.weight_mask".to_owned(),
            Tensor::from_slice(&[1f32, 0., 1., 1.]).view([2, 2]),
        ),
        ("c".to_owned(), Tensor::from_slice(&[1i64, 2, 3])),
    ];
    let metadata = [(
        "tchprune.history".to_owned(),
        r#"{"b.weight":[{"method":"identity"}]}"#.to_owned(),
    )]
    .into_iter()
    .collect();
    checkpoint::write(&tensors, &metadata, &path).unwrap();
    std::fs::read(path).unwrap()
}

fn header_len(bytes: &[u8]) -> usize {
    bytes.get(..8).map_or(0, |length| {
        u64::from_le_bytes(length.try_into().unwrap()) as usize
    })
}

/// Every file of `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A corruption of a valid file.
#[derive(Clone, Debug)]
enum Corruption {
    /// Overwrite the byte at this fraction of the header (or of the length field) with a value.
    Byte(f64, u8),
    /// Cut the file at this fraction of its length.
    Cut(f64),
    /// Write this header length.
    Length(u64),
    /// Replace a token of the header's JSON with another.
    Token(usize, &'static str),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    let tokens = prop::sample::select(vec![
        "\"F32\"",
        "\"I64\"",
        "\"BOOL\"",
        "\"F8_E4M3\"",
        "[]",
        "[0,0]",
        "[999999999999]",
        "{}",
        "null",
        "\"a.weight\"",
        "\"__metadata__\"",
        "18446744073709551616",
        "-1",
        ",",
        "\"data_offsets\"",
        "\"shape\"",
        "\"dtype\"",
    ]);
    prop_oneof![
        (0.0..1.0f64, any::<u8>()).prop_map(|(at, byte)| Corruption::Byte(at, byte)),
        (0.0..1.0f64).prop_map(Corruption::Cut),
        prop_oneof![Just(0u64), Just(7), Just(u64::MAX), 0..400u64].prop_map(Corruption::Length),
        (0..200usize, tokens).prop_map(|(at, token)| Corruption::Token(at, token)),
    ]
}

fn corrupt(mut bytes: Vec<u8>, corruptions: &[Corruption]) -> Vec<u8> {
    for corruption in corruptions {
        let header = header_len(&bytes).min(bytes.len().saturating_sub(8));
        match corruption {
            Corruption::Byte(at, byte) => {
                let index = ((8 + header) as f64 * at) as usize;
                if index < bytes.len() {
                    bytes[index] = *byte;
                }
            }
            Corruption::Cut(at) => bytes.truncate((bytes.len() as f64 * at) as usize),
            Corruption::Length(length) if bytes.len() >= 8 => {
                bytes[..8].copy_from_slice(&length.to_le_bytes())
            }
            Corruption::Length(_) => {}
            Corruption::Token(index, token) => {
                let Some(text) = bytes
                    .get(8..8 + header)
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                else {
                    continue;
                };
                // The `index`-th JSON value boundary: replace what lies between two separators.
                let cuts: Vec<usize> = text
                    .match_indices([',', ':', '[', '{'])
                    .map(|(i, _)| i + 1)
                    .collect();
                if cuts.is_empty() {
                    continue;
                }
                let start = cuts[index % cuts.len()];
                let end = text[start..]
                    .find([',', '}', ']'])
                    .map_or(text.len(), |e| start + e);
                let mut header_text = text.clone();
                header_text.replace_range(start..end, token);
                let mut out = (header_text.len() as u64).to_le_bytes().to_vec();
                out.extend_from_slice(header_text.as_bytes());
                out.extend_from_slice(&bytes[8 + header..]);
                bytes = out;
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn corrupted_files_load_correctly_or_fail_cleanly(
        corruptions in prop::collection::vec(corruption(), 1..4)
    ) {
        let bytes = corrupt(valid_checkpoint(), &corruptions);
        let dir = tempfile::tempdir().unwrap();
        let (path, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        match checkpoint::read(&path) {
            Err(err) => prop_assert!(!err.to_string().is_empty()),
            Ok(file) => {
                // What loads is consistent: every tensor's bytes are in the file.
                let data: usize = file.tensors.iter().map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes()).sum();
                prop_assert!(data <= bytes.len());
                // And whatever tchprune makes of it writes and reads back, or fails leaving
                // nothing.
                match PrunedState::from_checkpoint(file) {
                    Err(_) => {}
                    Ok(state) => {
                        let out = state.to_checkpoint(MaskDtype::Parameter).unwrap();
                        match checkpoint::write(&out.tensors, &out.metadata, &output) {
                            Ok(()) => prop_assert!(checkpoint::read(&output).is_ok()),
                            Err(_) => prop_assert!(!output.exists()),
                        }
                    }
                }
            }
        }
        prop_assert!(files(dir.path()).iter().all(|f| !f.ends_with(".tmp")));
    }
}

/// A random plan step: a method (real or not), patterns, and arguments of any type.
fn step() -> impl Strategy<Value = Value> {
    let method = prop::sample::select(vec![
        "l1_unstructured",
        "random_unstructured",
        "ln_structured",
        "random_structured",
        "identity",
        "custom_from_mask",
        "remove",
        "global_unstructured",
        "no_such_method",
    ]);
    let pattern = prop::sample::select(vec![
        "a.weight",
        "a.bias",
        "b.weight",
        "c",
        "*",
        "*.weight",
        "?.bias",
        "nothing",
        "b.weight_mask",
    ]);
    let number = prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(5)),
        Just(json!(-1)),
        Just(json!(0.5)),
        Just(json!(1.0)),
        Just(json!(1.5)),
        Just(json!("0.5")),
        Just(json!(null)),
        Just(serde_json::from_str::<Value>("18446744073709551616").unwrap()),
    ];
    let norm = prop::sample::select(vec![
        json!(1),
        json!(2),
        json!("fro"),
        json!("inf"),
        json!(-1),
        json!("x"),
    ]);
    (
        method,
        prop::collection::vec(pattern, 0..3),
        prop::option::of(number),
        prop::option::of(norm),
        prop::option::of(-4..4i64),
        prop::option::of(prop::sample::select(vec![
            json!([1, 0, 1]),
            json!([[1, 0], [0, 1]]),
            json!("mask"),
        ])),
        prop::option::of(prop::sample::select(vec![
            "l1_unstructured",
            "ln_structured",
            "identity",
            "x",
        ])),
        any::<bool>(),
    )
        .prop_map(|(method, params, amount, n, dim, mask, inner, junk)| {
            let mut step = json!({"method": method, "params": params});
            let object = step.as_object_mut().unwrap();
            for (key, value) in [
                ("amount", amount),
                ("n", n),
                ("dim", dim.map(Value::from)),
                ("mask", mask),
                ("pruning_method", inner.map(Value::from)),
            ] {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            if junk {
                object.insert("unknown".to_owned(), json!(1));
            }
            step
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_plans_prune_correctly_or_fail_cleanly(
        steps in prop::collection::vec(step(), 0..4),
        seed in prop::option::of(any::<i64>()),
    ) {
        let mut plan = json!({"steps": steps});
        if let Some(seed) = seed {
            plan["seed"] = json!(seed);
        }
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.safetensors");
        std::fs::write(&input, valid_checkpoint()).unwrap();
        let output = dir.path().join("out.safetensors");
        let Ok(plan) = Plan::from_json(&plan.to_string(), dir.path(), "plan") else {
            return Ok(());
        };
        let state = PrunedState::from_checkpoint(checkpoint::read(&input).unwrap()).unwrap();
        let before = std::fs::read(&input).unwrap();
        match state.apply_plan(&plan, &Registry::with_builtins(), &mut |_, _| {}) {
            Err(err) => prop_assert!(!err.to_string().is_empty()),
            Ok(state) => {
                let out = state.to_checkpoint(MaskDtype::Parameter).unwrap();
                checkpoint::write(&out.tensors, &out.metadata, &output).unwrap();
                // A correct result: every mask holds only 0 and 1, and the sparsity of what
                // was written is what the state reports.
                let written = PrunedState::from_checkpoint(checkpoint::read(&output).unwrap()).unwrap();
                for (key, t) in checkpoint::read(&output).unwrap().tensors {
                    if key.ends_with("_mask") {
                        let binary = t.eq(0).logical_or(&t.eq(1)).all().int64_value(&[]) == 1;
                        prop_assert!(binary, "{key} is not 0/1");
                    }
                }
                let zeros = |rows: Vec<tchprune::sparsity::Sparsity>| rows.last().unwrap().zeros;
                prop_assert_eq!(zeros(written.sparsity().unwrap()), zeros(state.sparsity().unwrap()));
            }
        }
        prop_assert_eq!(std::fs::read(&input).unwrap(), before);
        prop_assert!(files(dir.path()).iter().all(|f| !f.ends_with(".tmp")));
    }
}

/// A shape with a zero somewhere (so the file holds no data for it) and other dimensions from
/// 1 to 2^62: what a tiny file can claim.
fn empty_shape() -> impl Strategy<Value = Vec<u64>> {
    let dim = prop::sample::select(vec![0u64, 1, 3, 1 << 20, 1 << 40, 1 << 62]);
    (
        prop::collection::vec(dim, 1..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut dims, at)| {
            let at = at.index(dims.len());
            dims[at] = 0;
            dims
        })
}

/// A header-only safetensors file whose tensors claim `shapes` (f32, no entries).
fn claiming(shapes: &[(&str, Vec<u64>)]) -> Vec<u8> {
    let header: serde_json::Map<String, Value> = (shapes.iter())
        .map(|(key, shape)| {
            let info = json!({"dtype": "F32", "shape": shape, "data_offsets": [0, 0]});
            (key.to_string(), info)
        })
        .collect();
    let header = Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// A well-formed step of each built-in method (what it finds in the shapes is up to them).
fn valid_step() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!({"method": "l1_unstructured", "params": ["*"], "amount": 0.5}),
        json!({"method": "random_unstructured", "params": ["a.weight"], "amount": 1}),
        json!({"method": "ln_structured", "params": ["*"], "amount": 0.5, "n": 2, "dim": 0}),
        json!({"method": "ln_structured", "params": ["b.weight"], "amount": 2, "n": "inf", "dim": -1}),
        json!({"method": "random_structured", "params": ["*"], "amount": 0.3, "dim": 1}),
        json!({"method": "global_unstructured", "params": ["*"], "pruning_method": "l1_unstructured", "amount": 0.5}),
        json!({"method": "identity", "params": ["*"]}),
        json!({"method": "remove", "params": ["a.weight"]}),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 150,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Shapes with zero and huge dimensions: every plan gives empty masks or a clean error,
    /// without materializing anything of the claimed sizes (a slice or a draw per entry of a
    /// 2^40 dimension would exhaust memory and fail the test).
    #[test]
    fn plans_on_shapes_with_zero_and_huge_dimensions_prune_or_fail_cleanly(
        a in empty_shape(),
        b in empty_shape(),
        steps in prop::collection::vec(valid_step(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.safetensors");
        std::fs::write(&input, claiming(&[("a.weight", a), ("b.weight", b)])).unwrap();
        let Ok(plan) = Plan::from_json(&json!({"steps": steps}).to_string(), dir.path(), "plan")
        else {
            return Ok(());
        };
        // A shape whose dimensions multiply past 2^64 before the zero is refused on read.
        let file = match checkpoint::read(&input) {
            Ok(file) => file,
            Err(err) => {
                prop_assert!(err.to_string().contains("too large"), "{err}");
                return Ok(());
            }
        };
        let state = PrunedState::from_checkpoint(file).unwrap();
        match state.apply_plan(&plan, &Registry::with_builtins(), &mut |_, _| {}) {
            Err(err) => prop_assert!(!err.to_string().is_empty()),
            Ok(state) => {
                let out = state.to_checkpoint(MaskDtype::Bool).unwrap();
                prop_assert!(out.tensors.iter().all(|(_, t)| t.numel() == 0));
                let output = dir.path().join("out.safetensors");
                checkpoint::write(&out.tensors, &out.metadata, &output).unwrap();
                prop_assert!(checkpoint::read(&output).is_ok());
            }
        }
    }
}
