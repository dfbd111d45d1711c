//! Memory stays bounded by the data a file actually holds: each command runs under an address
//! space limit (`setrlimit(RLIMIT_AS)`, what `prlimit --as` sets) of 768 MiB (libtorch's own
//! mappings take most of it) plus 3 times the size of its input or its output, the larger, as the README promises. Tiny
//! files that claim huge shapes (a `[2^28, 0]` tensor is 88 bytes) and plans of millions of
//! values are handled or refused within the base alone.

mod common;

use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// libtorch's share of the address space limit.
const BASE: u64 = 768 << 20;

/// Runs `tchprune args` in `dir` with an address space of at most `limit` bytes.
fn run_limited(dir: &Path, args: &[&str], limit: u64) -> common::Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tchprune"));
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let bound = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &bound) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
    };
    let output = command.current_dir(dir).args(args).output().unwrap();
    common::Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes a safetensors file whose header claims `shapes` (f32, no data: every shape has a 0).
fn claims(path: &Path, shapes: &[(&str, &[u64])]) {
    let header: serde_json::Map<String, serde_json::Value> = shapes
        .iter()
        .map(|(key, shape)| {
            let info = json!({"dtype": "F32", "shape": shape, "data_offsets": [0, 0]});
            (key.to_string(), info)
        })
        .collect();
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn tiny_files_claiming_huge_shapes_take_no_more_than_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    claims(&d.join("wide.safetensors"), &[("fc.weight", &[1 << 28, 0])]);
    claims(
        &d.join("wider.safetensors"),
        &[("fc.weight", &[1 << 40, 0])],
    );
    assert!(std::fs::metadata(d.join("wide.safetensors")).unwrap().len() < 100);
    let plans = [
        json!({"method": "ln_structured", "params": ["fc.weight"], "amount": 0.5, "n": 2, "dim": 0}),
        json!({"method": "random_structured", "params": ["fc.weight"], "amount": 0.5, "dim": 0}),
        json!({"method": "l1_unstructured", "params": ["fc.weight"], "amount": 0.5}),
    ];
    for input in ["wide.safetensors", "wider.safetensors"] {
        for step in &plans {
            common::write_plan(d, &json!({ "steps": [step] }));
            let run = run_limited(d, &common::apply_args(input, "out.safetensors"), BASE);
            assert!(run.success, "{input} {step}: {}", run.stderr);
            let out = common::read(&d.join("out.safetensors"));
            let mask = &out.iter().find(|(k, _)| k == "fc.weight_mask").unwrap().1;
            assert_eq!(mask.numel(), 0);
        }
        for args in [
            &["stats", input][..],
            &["finalize", input, "-o", "plain.safetensors"],
            &["compress", input, "-o", "compressed.safetensors"],
            &["speed", input],
        ] {
            let run = run_limited(d, args, BASE);
            assert!(run.success, "{args:?}: {}", run.stderr);
        }
    }
    // Model detection does not build a classifier of the size `fc.weight` claims.
    claims(
        &d.join("classes.safetensors"),
        &[
            ("fc.weight", &[1 << 22, 0]),
            ("conv1.weight", &[64, 3, 7, 0]),
        ],
    );
    for args in [
        &["shrink", "classes.safetensors", "--print-groups"][..],
        &["speed", "classes.safetensors", "--model", "resnet18"],
    ] {
        let run = run_limited(d, args, BASE);
        assert!(!run.success, "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("not resnet18"), "{}", run.stderr);
    }
}

#[test]
fn a_plan_of_millions_of_values_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    claims(&d.join("wide.safetensors"), &[("fc.weight", &[4, 0])]);
    let junk = vec!["0"; 30_000_000].join(",");
    let plan = format!(
        r#"{{"steps": [{{"method": "l1_unstructured", "params": ["fc.weight"], "amount": 0.5,
            "unused": [{junk}]}}]}}"#
    );
    std::fs::write(d.join("plan.json"), plan).unwrap();
    let run = run_limited(
        d,
        &common::apply_args("wide.safetensors", "out.safetensors"),
        BASE,
    );
    assert!(!run.success);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("JSON values"), "{}", run.stderr);
}

#[test]
fn commands_on_a_200_mb_checkpoint_stay_within_the_base_and_3x_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weight = tch::Tensor::randn([50_000, 1000], (tch::Kind::Float, tch::Device::Cpu));
    let _ = weight.view(-1).slice(0, 0, None, 2).fill_(0.0);
    common::write(&d.join("big.safetensors"), &[("fc.weight", &weight)]);
    drop(weight);
    common::write_plan(
        d,
        &json!({"steps": [{"method": "l1_unstructured", "params": ["fc.weight"], "amount": 0.6}]}),
    );
    let limit = |file: &str| BASE + 3 * std::fs::metadata(d.join(file)).unwrap().len();
    let runs: [(&str, &[&str]); 6] = [
        ("big.safetensors", &["stats", "big.safetensors"]),
        (
            "big.safetensors",
            &common::apply_args("big.safetensors", "pruned.safetensors"),
        ),
        (
            "pruned.safetensors",
            &["finalize", "pruned.safetensors", "-o", "plain.safetensors"],
        ),
        (
            "pruned.safetensors",
            &["compress", "pruned.safetensors", "-o", "small.safetensors"],
        ),
        (
            "big.safetensors", // its output is the larger
            &["decompress", "small.safetensors", "-o", "dense.safetensors"],
        ),
        ("small.safetensors", &["stats", "small.safetensors"]),
    ];
    for (input, args) in runs {
        let run = run_limited(d, args, limit(input));
        assert!(run.success, "{args:?}: {}", run.stderr);
    }
}
