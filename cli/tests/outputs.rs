//! Where outputs may go: never over anything the command reads (plan, side files, groups,
//! plugins), never to a name ending in `/`, a replaced file's mode kept, and a standard output
//! that cannot be written is one line and a non-zero exit, never a panic.

mod common;

use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn l1_plan(dir: &Path) {
    common::write_plan(
        dir,
        &json!({"steps": [{"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5}]}),
    );
}

#[test]
fn an_output_naming_the_plan_a_side_file_or_the_groups_file_is_refused() {
    common::refused_in(
        "the plan",
        l1_plan,
        &common::apply_args("lenet.safetensors", "plan.json"),
        &["plan.json"],
    );
    // Through a symlink to the plan.
    common::refused_in(
        "a symlink to the plan",
        |dir| {
            l1_plan(dir);
            std::os::unix::fs::symlink(dir.join("plan.json"), dir.join("link.safetensors"))
                .unwrap();
        },
        &common::apply_args("lenet.safetensors", "link.safetensors"),
        &["plan.json"],
    );
    common::refused_in(
        "a mask file",
        |dir| {
            let mask = tch::Tensor::ones([10, 84], (tch::Kind::Float, tch::Device::Cpu));
            common::write(&dir.join("masks.safetensors"), &[("fc3.weight", &mask)]);
            common::write_plan(
                dir,
                &json!({"steps": [{"method": "custom_from_mask", "params": ["fc3.weight"],
                                   "mask_file": "masks.safetensors"}]}),
            );
        },
        &common::apply_args("lenet.safetensors", "masks.safetensors"),
        &["masks.safetensors"],
    );
    common::refused_in(
        "the groups file",
        |dir| std::fs::write(dir.join("groups.json"), r#"{"groups": []}"#).unwrap(),
        &[
            "shrink",
            "lenet.safetensors",
            "--groups",
            "groups.json",
            "-o",
            "groups.json",
        ],
        &["groups.json"],
    );
}

#[test]
fn an_output_name_ending_in_a_slash_is_refused() {
    common::refused_in(
        "trailing slash",
        l1_plan,
        &common::apply_args("lenet.safetensors", "new.safetensors/"),
        &["new.safetensors/", "ends with '/'"],
    );
    common::refused_in(
        "finalize, trailing slash",
        |_| {},
        &["finalize", "lenet.safetensors", "-o", "new.safetensors/"],
        &["ends with '/'"],
    );
}

#[test]
fn a_replaced_output_keeps_its_mode_and_a_new_one_gets_the_default() {
    let dir = tempfile::tempdir().unwrap();
    common::lenet_checkpoint(dir.path());
    l1_plan(dir.path());
    let out = dir.path().join("out.safetensors");
    std::fs::write(&out, b"old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = common::apply(
        dir.path(),
        "lenet.safetensors",
        "plan.json",
        "out.safetensors",
        &[],
    );
    assert!(run.success, "{}", run.stderr);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert!(tchprune::checkpoint::read(&out).is_ok());

    // A new file: 0666 less the umask (this process's, inherited by the command).
    // SAFETY: umask only reads and sets this process's mask (set back at once).
    let umask = unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask
    };
    let run = common::apply(
        dir.path(),
        "lenet.safetensors",
        "plan.json",
        "new.safetensors",
        &[],
    );
    assert!(run.success, "{}", run.stderr);
    let mode = std::fs::metadata(dir.path().join("new.safetensors"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o666 & !(umask as u32));
}

#[test]
fn a_standard_output_that_cannot_be_written_is_one_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    common::lenet_checkpoint(dir.path());
    l1_plan(dir.path());
    std::fs::write(
        dir.path().join("groups.json"),
        r#"{"groups": [{"writers": ["fc1.weight"], "channelwise": ["fc1.bias"],
                        "readers": [{"key": "fc2.weight"}]}]}"#,
    )
    .unwrap();
    let runs: [&[&str]; 5] = [
        &["methods"],
        &common::apply_args("lenet.safetensors", "out.safetensors"),
        &["stats", "lenet.safetensors"],
        &["finalize", "lenet.safetensors", "-o", "plain.safetensors"],
        &[
            "shrink",
            "lenet.safetensors",
            "--groups",
            "groups.json",
            "--print-groups",
        ],
    ];
    for args in runs {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_tchprune"))
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("tchprune: error: ") && stderr.contains("standard output"),
            "{args:?}: {stderr}"
        );
    }
}
