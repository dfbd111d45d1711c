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

/// Starts `tchprune args` in `dir` and sends it `signal` after `delay`.
fn signalled_run(dir: &Path, args: &[&str], signal: i32, delay: Duration) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_tchprune"));
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec. No core files (SIGQUIT
    // before the handlers are installed would leave one).
    unsafe {
        command.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        })
    };
    let child = command
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    // SAFETY: sending a signal to our own child (still a zombie at worst: not yet waited on).
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait_with_output().unwrap()
}

#[test]
fn a_signal_at_any_moment_leaves_the_whole_output_and_status_0_or_nothing_and_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let weight = tch::Tensor::randn([4096, 4096], (tch::Kind::Float, tch::Device::Cpu));
    let mask = weight.abs().gt(0.5).to_kind(tch::Kind::Float);
    common::write(
        &dir.path().join("in.safetensors"),
        &[("w_orig", &weight), ("w_mask", &mask)],
    );
    let expected = &weight * &mask;
    let args = ["finalize", "in.safetensors", "-o", "out.safetensors"];
    let before = common::listing(dir.path());
    // How long loading (a run that does nothing) and a whole run take here: most signals are
    // spread over the work between them, and a little beyond.
    let start = Instant::now();
    assert!(common::tchprune_in(dir.path(), &["--version"]).success);
    let loading_time = start.elapsed();
    let start = Instant::now();
    assert!(common::tchprune_in(dir.path(), &args).success);
    let whole = start.elapsed();
    std::fs::remove_file(dir.path().join("out.safetensors")).unwrap();
    let signals = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
    ];
    let (mut finished, mut stopped, mut loading) = (0, 0, 0);
    for run in 0..32 {
        let signal = signals[run % signals.len()];
        let delay = match run % 4 {
            0 => loading_time.mul_f64(rand::random::<f64>()),
            _ => {
                loading_time.mul_f64(0.8)
                    + whole.saturating_sub(loading_time).mul_f64(rand::random())
            }
        };
        let output = signalled_run(dir.path(), &args, signal, delay);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let out = dir.path().join("out.safetensors");
        match output.status.code() {
            Some(0) => {
                let written = common::tensor(&out, "w");
                assert!(common::identical(&written, &expected), "a partial output");
                assert!(stderr.is_empty(), "status 0 but: {stderr}");
                std::fs::remove_file(&out).unwrap();
                finished += 1;
            }
            Some(code) if code == 128 + signal => {
                assert_eq!(
                    common::listing(dir.path()),
                    before,
                    "signal {signal} after {delay:?}"
                );
                let lines: Vec<&str> = stderr.lines().collect();
                assert_eq!(lines.len(), 1, "signal {signal} after {delay:?}: {stderr}");
                assert!(lines[0].starts_with("tchprune: stopped by SIG"), "{stderr}");
                stopped += 1;
            }
            None => {
                // Before tchprune's code runs (libtorch's initializers take the first tenths of a
                // second) the signal's default action ends it: nothing has been written.
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(output.status.signal(), Some(signal), "after {delay:?}");
                assert_eq!(
                    common::listing(dir.path()),
                    before,
                    "signal {signal} after {delay:?}"
                );
                assert!(stderr.is_empty(), "{stderr}");
                loading += 1;
            }
            other => panic!("signal {signal} after {delay:?}: status {other:?}, {stderr}"),
        }
    }
    eprintln!("{finished} finished, {stopped} stopped, {loading} stopped while loading");
    assert!(
        stopped > 0,
        "no run was stopped ({finished} finished, {loading} stopped while loading)"
    );
}

#[test]
fn sigkill_in_the_middle_of_a_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let big = tch::Tensor::ones([64, 1 << 20], (tch::Kind::Float, tch::Device::Cpu));
    common::write(&dir.path().join("big.safetensors"), &[("w", &big)]);
    drop(big);
    let before = common::listing(dir.path());
    let args = ["finalize", "big.safetensors", "-o", "out.safetensors"];
    let mut caught = 0;
    for delay_ms in [150, 300, 450, 600, 800, 1000] {
        let output = signalled_run(
            dir.path(),
            &args,
            libc::SIGKILL,
            Duration::from_millis(delay_ms),
        );
        if output.status.code().is_none() {
            // Killed: whatever it was writing is gone, or (killed while it exits) whole.
            let out = dir.path().join("out.safetensors");
            let mut left = common::listing(dir.path());
            if out.exists() {
                assert!(tchprune::checkpoint::read(&out).is_ok(), "a partial output");
                left.retain(|(name, _)| name != "out.safetensors");
            } else {
                caught += 1;
            }
            assert_eq!(left, before, "SIGKILL after {delay_ms} ms");
        }
        let _ = std::fs::remove_file(dir.path().join("out.safetensors"));
    }
    assert!(caught > 0, "no run was killed before it finished");
}
