//! Paths that are not what they seem: inputs reached through symlinks and hardlinks to the
//! output, FIFOs and devices where files are expected, planted temporary files, inputs that
//! change while read, signals in the middle of a write. Each is refused with one line, or
//! handled without losing or leaving anything.

mod common;

use serde_json::json;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn identity_plan(dir: &Path) {
    common::write_plan(
        dir,
        &json!({"steps": [{"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5}]}),
    );
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Runs `tchprune args` in `dir`, killing it if it takes more than 20 s (a FIFO waited on).
fn run_bounded(dir: &Path, args: &[&str]) -> common::Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tchprune"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("tchprune {args:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    common::Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn the_input_is_never_replaced_through_a_symlink_or_a_hardlink() {
    let apply_in_to_out = common::apply_args("in.safetensors", "out.safetensors");
    let finalize_in_to_out = ["finalize", "in.safetensors", "-o", "out.safetensors"];
    for args in [&apply_in_to_out[..], &finalize_in_to_out[..]] {
        // The input is a symlink to the output.
        common::refused_in(
            "input symlinked to the output",
            |dir| {
                identity_plan(dir);
                std::fs::copy(dir.join("lenet.safetensors"), dir.join("out.safetensors")).unwrap();
                std::os::unix::fs::symlink("out.safetensors", dir.join("in.safetensors")).unwrap();
            },
            args,
            &["is the input"],
        );
        // The input is a hardlink of the output.
        common::refused_in(
            "input hardlinked to the output",
            |dir| {
                identity_plan(dir);
                std::fs::copy(dir.join("lenet.safetensors"), dir.join("out.safetensors")).unwrap();
                std::fs::hard_link(dir.join("out.safetensors"), dir.join("in.safetensors"))
                    .unwrap();
            },
            args,
            &["is the input"],
        );
        // The output is a symlink to the input.
        common::refused_in(
            "output symlinked to the input",
            |dir| {
                identity_plan(dir);
                std::fs::copy(dir.join("lenet.safetensors"), dir.join("in.safetensors")).unwrap();
                std::os::unix::fs::symlink("in.safetensors", dir.join("out.safetensors")).unwrap();
            },
            args,
            &["is the input"],
        );
    }
}

#[test]
fn outputs_are_written_through_fresh_temporary_files_only() {
    let dir = tempfile::tempdir().unwrap();
    common::lenet_checkpoint(dir.path());
    identity_plan(dir.path());
    // A victim, and symlinks to it at the names the old writer used and similar ones.
    std::fs::write(dir.path().join("victim"), b"precious").unwrap();
    for name in [
        ".out.safetensors.tmp",
        ".out.safetensors.tmp-1",
        ".out.safetensors.tmp-2",
    ] {
        std::os::unix::fs::symlink("victim", dir.path().join(name)).unwrap();
    }
    let before = common::listing(dir.path());
    let run = common::apply(
        dir.path(),
        "lenet.safetensors",
        "plan.json",
        "out.safetensors",
        &[],
    );
    assert!(run.success, "{}", run.stderr);
    assert_eq!(
        std::fs::read(dir.path().join("victim")).unwrap(),
        b"precious"
    );
    let mut after = common::listing(dir.path());
    after.retain(|(name, _)| name != "out.safetensors");
    assert_eq!(after, before, "a temporary file was left behind");
    // The output is a plain file with the permissions a new file gets (not the 0600 of a
    // temporary file).
    let mode = std::fs::metadata(dir.path().join("out.safetensors"))
        .unwrap()
        .permissions()
        .mode();
    // SAFETY: reading the umask means setting it; it is put back at once.
    let umask = unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask
    };
    assert_eq!(mode & 0o777, 0o666 & !umask);
}

#[test]
fn fifos_devices_and_directories_are_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    common::lenet_checkpoint(dir.path());
    identity_plan(dir.path());
    mkfifo(&dir.path().join("fifo"));
    std::fs::create_dir(dir.path().join("a_directory")).unwrap();
    let apply = |input: &str, plan: &str, output: &str, extra: &[&str]| {
        let mut args = vec!["apply", input, "--plan", plan, "-o", output];
        args.extend_from_slice(extra);
        run_bounded(dir.path(), &args)
    };
    let cases = [
        (
            apply("fifo", "plan.json", "out.safetensors", &[]),
            "fifo: not a regular file (a FIFO)",
        ),
        (
            apply("lenet.safetensors", "fifo", "out.safetensors", &[]),
            "not a regular file (a FIFO)",
        ),
        (
            apply(
                "lenet.safetensors",
                "plan.json",
                "out.safetensors",
                &["--plugin", "fifo"],
            ),
            "fifo: not a regular file (a FIFO)",
        ),
        (
            apply("lenet.safetensors", "/dev/zero", "out.safetensors", &[]),
            "not a regular file (a character device)",
        ),
        (
            apply("lenet.safetensors", "plan.json", "/dev/null", &[]),
            "/dev/null: not a regular file (a character device)",
        ),
        (
            apply("lenet.safetensors", "plan.json", "a_directory", &[]),
            "a_directory: not a regular file (a directory)",
        ),
        (
            apply("a_directory", "plan.json", "out.safetensors", &[]),
            "a_directory: not a regular file (a directory)",
        ),
        (
            run_bounded(dir.path(), &["stats", "fifo"]),
            "fifo: not a regular file (a FIFO)",
        ),
    ];
    for (run, expected) in cases {
        assert!(!run.success);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(!dir.path().join("out.safetensors").exists());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // A plan in the plan's own list of plugins, as a FIFO.
    common::write_plan(dir.path(), &json!({"plugins": ["fifo"], "steps": []}));
    let run = apply("lenet.safetensors", "plan.json", "out.safetensors", &[]);
    assert!(
        run.stderr.contains("not a regular file (a FIFO)"),
        "{}",
        run.stderr
    );
}

#[test]
fn reads_are_bounded() {
    common::refused_in(
        "a 65 MiB plan",
        |dir| {
            let plan = std::fs::File::create(dir.join("plan.json")).unwrap();
            plan.set_len(65 << 20).unwrap();
        },
        &common::apply_args("lenet.safetensors", "out.safetensors"),
        &["plan.json", "larger than 64 MiB"],
    );
    common::refused_in(
        "a header claiming 2^60 bytes",
        |dir| {
            let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            std::fs::write(dir.join("huge.safetensors"), bytes).unwrap();
        },
        &["stats", "huge.safetensors"],
        &["huge.safetensors: not a readable safetensors file: a header of 1152921504606846976 bytes"],
    );
}

#[test]
fn an_input_truncated_while_it_is_read_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    let big = tch::Tensor::ones([64, 1 << 20], (tch::Kind::Float, tch::Device::Cpu));
    common::write(&path, &[("w", &big)]);
    let full = std::fs::metadata(&path).unwrap().len();
    for delay in [0, 5, 20, 60] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tchprune"))
            .current_dir(dir.path())
            .args(["stats", "big.safetensors"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full / 3)
            .unwrap();
        let output = child.wait_with_output().unwrap();
        // Either it read the file before the cut, or it reports the cut: never a signal.
        assert!(
            output.status.code().is_some(),
            "killed by a signal after {delay} ms: {:?}",
            output.status
        );
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("big.safetensors: not a readable safetensors file"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn a_signal_during_a_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let big = tch::Tensor::ones([96, 1 << 20], (tch::Kind::Float, tch::Device::Cpu));
    common::write(&dir.path().join("big.safetensors"), &[("w", &big)]);
    drop(big);
    common::write_plan(
        dir.path(),
        &json!({"steps": [{"method": "identity", "params": ["w"]}]}),
    );
    let temporary = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    let mut caught = 0;
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let child = Command::new(env!("CARGO_BIN_EXE_tchprune"))
            .current_dir(dir.path())
            .args(common::apply_args("big.safetensors", "out.safetensors"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut signalled = false;
        while start.elapsed() < Duration::from_secs(60) {
            if temporary(dir.path()) {
                // SAFETY: sending a signal to our own child.
                unsafe { libc::kill(child.id() as i32, signal) };
                signalled = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let output = child.wait_with_output().unwrap();
        if signalled && output.status.code() == Some(128 + signal) {
            assert!(
                !temporary(dir.path()),
                "a temporary file survived signal {signal}"
            );
            let out = dir.path().join("out.safetensors");
            // The signal came before the output was complete (discarded) or after (whole).
            if out.exists() {
                assert!(tchprune::checkpoint::read(&out).is_ok(), "a partial output");
            } else {
                caught += 1;
            }
        }
        let _ = std::fs::remove_file(dir.path().join("out.safetensors"));
    }
    assert!(caught > 0, "no run was caught while writing");
}
