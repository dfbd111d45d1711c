//! Loading plugin files into a registry: by file and by directory, listing with their origin,
//! and every way loading can fail.

mod common;

use serde_json::json;
use tchprune::{Origin, PruneError, Registry};

#[test]
fn shipped_plugins_register_next_to_the_builtins_with_their_origin() {
    let mut registry = Registry::with_builtins();
    let builtins = registry.iter().count();
    let foobar = common::plugin("tchprune-plugin-foobar");
    let nm = common::plugin("tchprune-plugin-nm");
    assert_eq!(registry.load_plugin(&foobar).unwrap(), ["foobar"]);
    assert_eq!(registry.load_plugin(&nm).unwrap(), ["nm"]);
    assert_eq!(registry.iter().count(), builtins + 2);

    let entry = registry.get("foobar").unwrap();
    assert_eq!(entry.origin, Origin::Plugin(foobar.clone()));
    assert_eq!(entry.pruning_type, "unstructured");
    assert!(entry.description.contains("every other entry"));
    assert_eq!(registry.get("nm").unwrap().pruning_type, "global");
    assert_eq!(
        registry.get("l1_unstructured").unwrap().origin,
        Origin::BuiltIn
    );
    assert!(entry
        .origin
        .to_string()
        .contains("libtchprune_plugin_foobar"));

    let method = registry.build("nm", &json!({"n": 1, "m": 2})).unwrap();
    assert_eq!(method.name(), "nm");
    assert_eq!(method.arguments(), json!({"n": 1, "m": 2}));
    assert_eq!(method.plugin(), Some(nm.as_path()));
}

#[test]
fn a_directory_loads_every_plugin_in_it() {
    let dir = tempfile::tempdir().unwrap();
    for package in ["tchprune-plugin-foobar", "tchprune-plugin-nm"] {
        let file = common::plugin(package);
        std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("README.txt"), "not a library").unwrap();
    let mut registry = Registry::empty();
    assert_eq!(
        registry.load_plugin_dir(dir.path()).unwrap(),
        ["foobar", "nm"]
    );
}

#[test]
fn plugin_methods_refuse_bad_arguments_with_the_plugins_message() {
    let mut registry = Registry::empty();
    registry
        .load_plugin(common::plugin("tchprune-plugin-nm"))
        .unwrap();
    for (args, expected) in [
        (json!({"n": 5, "m": 4}), "need 1 <= n <= m"),
        (json!({"k": 2}), "unknown argument 'k' (accepted: n, m)"),
        (json!({"n": "two"}), "argument 'n' = \"two\" is invalid"),
        (json!([1, 2]), "arguments must be a JSON object"),
    ] {
        let err = registry.build("nm", &args).unwrap_err();
        assert!(matches!(err, PruneError::Plugin { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("libtchprune_plugin_nm"), "{message}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let missing = common::workspace().join("no/such/plugin.so");
    let err = Registry::empty().load_plugin(&missing).unwrap_err();
    assert!(
        matches!(err, PruneError::PluginNotFound(ref path) if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("no such file"), "{err}");
}

#[test]
fn a_shared_library_without_the_root_module_is_not_a_plugin() {
    let library = common::plugin("tchprune-fixture-not-a-plugin");
    let err = Registry::empty().load_plugin(&library).unwrap_err();
    assert!(matches!(err, PruneError::NotAPlugin { .. }), "{err:?}");
    assert!(
        err.to_string().contains("exports no tchprune root module"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_no_shared_library_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("libfake.so");
    std::fs::write(&file, "#!/bin/sh\necho hello\n").unwrap();
    let err = Registry::empty().load_plugin(&file).unwrap_err();
    assert!(matches!(err, PruneError::NotAPlugin { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot be opened as a shared library"),
        "{err}"
    );
}

#[test]
fn a_plugin_built_against_another_api_version_is_refused_by_version() {
    let library = common::plugin("tchprune-fixture-future-api");
    let err = Registry::empty().load_plugin(&library).unwrap_err();
    match &err {
        PruneError::PluginVersion {
            plugin_version,
            host_version,
            ..
        } => {
            assert_eq!(plugin_version, "1.0.0");
            assert_eq!(host_version, tchprune::plugin::PLUGIN_API_VERSION);
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(err.to_string().contains("rebuild the plugin"), "{err}");
}

#[test]
fn loading_the_same_file_twice_changes_nothing() {
    let mut registry = Registry::with_builtins();
    let foobar = common::plugin("tchprune-plugin-foobar");
    assert_eq!(registry.load_plugin(&foobar).unwrap(), ["foobar"]);
    let before: Vec<String> = registry.iter().map(|e| e.name.clone()).collect();
    // Again, and through a symlink: the same file, nothing new.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("libalias.so");
    std::os::unix::fs::symlink(&foobar, &link).unwrap();
    assert_eq!(registry.load_plugin(&foobar).unwrap(), ["foobar"]);
    assert_eq!(registry.load_plugin(&link).unwrap(), ["foobar"]);
    // A hardlink (made beside the plugin: a hardlink cannot cross filesystems).
    let beside = tempfile::tempdir_in(foobar.parent().unwrap()).unwrap();
    let hardlink = beside.path().join("libhardlink.so");
    std::fs::hard_link(&foobar, &hardlink).unwrap();
    assert_eq!(registry.load_plugin(&hardlink).unwrap(), ["foobar"]);
    let after: Vec<String> = registry.iter().map(|e| e.name.clone()).collect();
    assert_eq!(before, after);

    // A directory holding a plugin and other names of it loads it once.
    let mut fresh = Registry::with_builtins();
    std::fs::hard_link(&foobar, beside.path().join("libfoobar_copy.so")).unwrap();
    std::os::unix::fs::symlink(&foobar, beside.path().join("libfoobar_link.so")).unwrap();
    let mut names = fresh.load_plugin_dir(beside.path()).unwrap();
    names.dedup();
    assert_eq!(names, ["foobar"]);
    assert_eq!(fresh.iter().count(), before.len());
}

#[test]
fn two_files_with_one_method_name_are_refused_naming_both() {
    let mut registry = Registry::with_builtins();
    let foobar = common::plugin("tchprune-plugin-foobar");
    registry.load_plugin(&foobar).unwrap();
    let before: Vec<String> = registry.iter().map(|e| e.name.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libanother_foobar.so");
    std::fs::copy(&foobar, &copy).unwrap();
    let err = registry.load_plugin(&copy).unwrap_err();
    assert!(matches!(err, PruneError::DuplicateMethod { ref name, .. } if name == "foobar"));
    let message = err.to_string();
    assert!(message.contains("libtchprune_plugin_foobar"), "{message}");
    assert!(message.contains("libanother_foobar"), "{message}");
    let after: Vec<String> = registry.iter().map(|e| e.name.clone()).collect();
    assert_eq!(before, after);
}

#[test]
fn a_truncated_plugin_is_refused_without_a_crash() {
    let foobar = common::plugin("tchprune-plugin-foobar");
    let bytes = std::fs::read(&foobar).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Cut inside the segments, after them, and by one byte; loading any of them used to map
    // pages past the end of the file and die of SIGBUS on touching them.
    for cut in [64 << 10, bytes.len() / 2, bytes.len() - 1] {
        let file = dir.path().join(format!("libcut_{cut}.so"));
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let err = Registry::empty().load_plugin(&file).unwrap_err();
        assert!(matches!(err, PruneError::NotAPlugin { .. }), "{err:?}");
        assert!(err.to_string().contains("cut short"), "{err}");
    }
}
