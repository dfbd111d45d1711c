//! Opening plugin files and turning their methods into registry entries.

use super::method::PluginMethod;
use crate::error::{PruneError, Result};
use crate::registry::{Origin, Registered};
use abi_stable::library::{AbiHeaderRef, LibraryError, ROOT_MODULE_LOADER_NAME_WITH_NUL};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tchprune_plugin_api::{PluginModuleRef, PLUGIN_API_VERSION};

/// The methods of the plugin at `path`, ready for [`Registry::register`](crate::Registry::register)
/// (or use [`Registry::load_plugin`](crate::Registry::load_plugin)).
pub fn load(path: &Path) -> Result<Vec<Registered>> {
    let module = open(path)?;
    let infos = (module.methods())()
        .into_result()
        .map_err(|reason| PruneError::NotAPlugin {
            path: path.to_owned(),
            reason: format!("listing its methods failed: {reason}"),
        })?;
    let plugin = Arc::new(path.to_owned());
    Ok(infos
        .into_iter()
        .map(|info| {
            let (plugin, name) = (Arc::clone(&plugin), info.name.to_string());
            let arguments = (info.arguments.iter())
                .map(|a| (a.name.to_string(), a.description.to_string()))
                .collect();
            Registered::new(
                info.name.as_str(),
                info.pruning_type.to_string(),
                info.description.as_str(),
                Origin::Plugin(path.to_owned()),
                move |args| PluginMethod::build(module, &plugin, &name, args),
            )
            .with_arguments(arguments)
        })
        .collect())
}

/// The methods of every plugin in `dir` (each file with the platform's shared-library
/// extension, in name order). Any file that fails to load is an error.
pub fn load_dir(dir: &Path) -> Result<Vec<Registered>> {
    let mut entries = Vec::new();
    for file in plugin_files(dir)? {
        entries.extend(load(&file)?);
    }
    Ok(entries)
}

/// The plugin files of `dir`: each file with the platform's shared-library extension, in name
/// order.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io_error = |error| PruneError::Io {
        path: dir.display().to_string(),
        error,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io_error)?;
    files.retain(|file| {
        file.is_file() && file.extension() == Some(std::env::consts::DLL_EXTENSION.as_ref())
    });
    files.sort();
    Ok(files)
}

/// The longest reason of a [`PruneError::PluginLoad`] kept from abi_stable's message (its
/// layout reports run to 72 KB).
const MAX_LOAD_REASON: usize = 300;

/// abi_stable's refusal `message` as one error: a version mismatch found in the types' layouts
/// (`incompatible package versions Expected: 0.1.0 Found: 0.2.0`, deep in a layout report) as
/// [`PruneError::PluginVersion`] with both versions, anything else as its first line, cut short.
fn load_failure(path: &Path, message: &str) -> PruneError {
    if let Some(at) = message.find("incompatible package versions") {
        let mut words = message[at..].split_whitespace();
        let mut after = |label: &str| {
            words
                .by_ref()
                .skip_while(|word| *word != label)
                .nth(1)
                .map(|v| {
                    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                        .to_owned()
                })
        };
        if let (Some(expected), Some(found)) = (after("Expected:"), after("Found:")) {
            return PruneError::PluginVersion {
                path: path.to_owned(),
                plugin_version: found,
                host_version: expected,
            };
        }
    }
    let first = message.trim().lines().next().unwrap_or_default();
    let mut reason = first.to_owned();
    if reason.len() > MAX_LOAD_REASON {
        let mut cut = MAX_LOAD_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    PruneError::PluginLoad {
        path: path.to_owned(),
        reason,
    }
}

/// Checks that an ELF file holds every byte its program headers and section header table say
/// it does. Why: the loader maps a library's segments, and touching a mapped page past the end
/// of the file is SIGBUS: a plugin cut to 64 KiB crashed `tchprune methods --plugin`. A file
/// that is not 64-bit little-endian ELF is left to the loader, which refuses it.
fn check_elf_extent(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = crate::files::open_regular(path).map_err(|err| err.to_string())?;
    let len = file.metadata().map_err(|err| err.to_string())?.len();
    let mut header = [0u8; 64];
    if file.read_exact_at(&mut header, 0).is_err() || header[..6] != *b"\x7fELF\x02\x01" {
        return Ok(());
    }
    let u16_at = |b: &[u8], at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let cut = |what: &str, end: Option<u64>| match end {
        Some(end) if end <= len => Ok(()),
        _ => Err(format!(
            "it is cut short: its {what} reaches past its {len} bytes (a truncated or damaged \
             library)"
        )),
    };
    let (phoff, shoff) = (u64_at(&header, 0x20), u64_at(&header, 0x28));
    let (phentsize, phnum) = (u16_at(&header, 0x36), u16_at(&header, 0x38));
    let (shentsize, shnum) = (u16_at(&header, 0x3a), u16_at(&header, 0x3c));
    let table_end = |offset: u64, size: u64, count: u64| {
        size.checked_mul(count).and_then(|n| n.checked_add(offset))
    };
    cut("section header table", table_end(shoff, shentsize, shnum))?;
    cut("program header table", table_end(phoff, phentsize, phnum))?;
    if phentsize < 56 {
        return Ok(()); // not a program header table the loader would map from
    }
    let mut entry = vec![0u8; phentsize as usize];
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        file.read_exact_at(&mut entry, at)
            .map_err(|err| err.to_string())?;
        let (offset, size) = (u64_at(&entry, 8), u64_at(&entry, 32));
        cut(&format!("segment {index}"), offset.checked_add(size))?;
    }
    Ok(())
}

fn open(path: &Path) -> Result<PluginModuleRef> {
    if !path.exists() {
        return Err(PruneError::PluginNotFound(path.to_owned()));
    }
    // Loading a FIFO would wait for a writer forever, a device would be read without end.
    crate::files::check_regular(path)?;
    let not_a_plugin = |reason: String| PruneError::NotAPlugin {
        path: path.to_owned(),
        reason,
    };
    check_elf_extent(path).map_err(not_a_plugin)?;
    // SAFETY: loading runs the library's initialisers; that is what loading a plugin means.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|err| not_a_plugin(format!("it cannot be opened as a shared library ({err})")))?;
    // SAFETY: the symbol, when present, is the `LibHeader` static that `export_root_module!`
    // defines, which starts with an `AbiHeader`; abi_stable reads it the same way.
    let header: AbiHeaderRef = unsafe {
        library
            .get::<AbiHeaderRef>(ROOT_MODULE_LOADER_NAME_WITH_NUL.as_bytes())
            .map(|symbol| *symbol)
    }
    .map_err(|_| {
        not_a_plugin(
            "it exports no tchprune root module (plugins end with \
             `tchprune_plugin_api::export_plugin!(..)`)"
                .to_owned(),
        )
    })?;
    let load_error = |err: LibraryError| match err {
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            PruneError::PluginVersion {
                path: path.to_owned(),
                plugin_version: actual_version.to_string(),
                host_version: PLUGIN_API_VERSION.to_owned(),
            }
        }
        other => load_failure(path, &other.to_string()),
    };
    let module = header
        .upgrade()
        .and_then(|header| header.init_root_module::<PluginModuleRef>())
        .map_err(load_error)?;
    // Plugins stay loaded for the life of the process (see the module docs).
    std::mem::forget(library);
    Ok(module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_mismatch_in_the_layouts_is_one_line_with_both_versions() {
        let report = format!(
            "Compared <this>:\n{}\nincompatible package versions\nExpected:\n    0.1.0\n\
             Found:\n    0.2.0\n{}",
            "layout ".repeat(400),
            "more ".repeat(10_000)
        );
        match load_failure(Path::new("libp.so"), &report) {
            PruneError::PluginVersion {
                plugin_version,
                host_version,
                ..
            } => assert_eq!(
                (plugin_version.as_str(), host_version.as_str()),
                ("0.2.0", "0.1.0")
            ),
            other => panic!("{other:?}"),
        }
        let other = load_failure(
            Path::new("libp.so"),
            &format!("{}\nsecond", "x".repeat(5000)),
        );
        let text = other.to_string();
        assert!(text.len() < 500 && !text.contains('\n'), "{text}");
    }
}
