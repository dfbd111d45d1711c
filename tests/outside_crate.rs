//! A crate outside the workspace uses tchprune by following the README's section "Use tchprune
//! in your crate" to the letter: its commands, `Cargo.toml` lines, `build.rs` and `src/main.rs`
//! are read from the README, run and built in a temporary directory with an empty environment
//! (no `LIBTORCH`, no `LD_LIBRARY_PATH`), and the binary must run and print what the README says.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// The README's section `heading`, up to the next section.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme.find(heading).expect("the README has the section");
    let rest = &readme[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// A command with nothing of this process's environment but what finds the toolchain.
fn clean(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).env_clear();
    for kept in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
    ] {
        if let Some(value) = std::env::var_os(kept) {
            command.env(kept, value);
        }
    }
    command
}

fn succeeded(output: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{what} failed:\n{stderr}");
    stderr
}

#[test]
fn a_crate_outside_the_workspace_builds_and_runs_with_the_readmes_steps() {
    let readme = std::fs::read_to_string(common::workspace().join("README.md")).unwrap();
    let steps = section(&readme, "## Use tchprune in your crate");
    let repository = common::workspace().to_str().unwrap();
    let ours = |text: &str| text.replace("/path/to/tchprune", repository);
    let shell = common::code_blocks(steps, "sh");
    let manifest = common::code_blocks(steps, "toml");
    let rust = common::code_blocks(steps, "rust");
    let expected = common::code_blocks(steps, "text");
    assert_eq!(
        (shell.len(), manifest.len(), rust.len(), expected.len()),
        (1, 1, 2, 1)
    );
    let build_script = rust
        .iter()
        .find(|b| b.contains("tchprune_build::"))
        .unwrap();
    let main = rust.iter().find(|b| b.contains("VarStorePruner")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Step 1, as written: `cargo new myapp && cd myapp`, then the bootstrap.
    let output = clean("bash", dir.path())
        .args(["-euo", "pipefail", "-c", &ours(shell[0])])
        .output()
        .unwrap();
    succeeded(output, "the README's commands");
    let app = dir.path().join("myapp");
    // Step 2: the lines under the `[dependencies]` that `cargo new` wrote.
    let generated = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
    let package = &generated[..generated.find("[dependencies]").unwrap()];
    std::fs::write(
        app.join("Cargo.toml"),
        format!("{package}{}", ours(manifest[0])),
    )
    .unwrap();
    // Steps 3 and 4.
    std::fs::write(app.join("build.rs"), build_script).unwrap();
    std::fs::write(app.join("src/main.rs"), main).unwrap();

    // Not steps of the README: the workspace's lock file pins the versions the workspace
    // already fetched, so that the build runs offline; the target directory persists; and the
    // build carries no debug info, which would only fill CI's disk.
    std::fs::copy(
        common::workspace().join("Cargo.lock"),
        app.join("Cargo.lock"),
    )
    .unwrap();
    let target = common::workspace().join("target/outside-crate");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = clean(&cargo, &app)
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .args(["build", "--offline", "--target-dir"])
        .arg(&target)
        .output()
        .unwrap();
    let log = succeeded(output, "cargo build of the outside crate");
    assert!(
        !log.lines().any(|l| l.starts_with("warning")),
        "the build warns:\n{log}"
    );

    let binary = target.join("debug/myapp");
    let output = clean(&binary, &app).output().unwrap();
    succeeded(output.clone(), "the outside crate's binary");
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected[0]);
    // `link_libtorch` keeps libtorch's CUDA part (when the libtorch has one), so that
    // `Device::cuda_if_available()` sees a GPU.
    let output = Command::new("ldd").arg(&binary).output().unwrap();
    let libraries = String::from_utf8_lossy(&output.stdout);
    let torch_cpu = libraries
        .lines()
        .find_map(|l| {
            l.split("=> ")
                .nth(1)
                .filter(|p| p.contains("libtorch_cpu.so"))
        })
        .and_then(|p| p.split_whitespace().next())
        .expect("linked to libtorch_cpu");
    let lib_dir = Path::new(torch_cpu).parent().unwrap();
    if lib_dir.join("libtorch_cuda.so").exists() {
        assert!(libraries.contains("libtorch_cuda.so"), "{libraries}");
    }
}
