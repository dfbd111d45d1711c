//! Reading and writing files without trusting the paths: only regular files, bounded reads,
//! outputs that never replace an input, and atomic writes through temporary files nobody else
//! can plant or keep.
//!
//! Checkpoints, plans and plugins arrive as paths that may be symlinks, hardlinks, FIFOs,
//! devices or files another process is changing. Inputs are opened first and checked through
//! the open handle (`fstat`), with `O_NONBLOCK` so that a FIFO is refused instead of waited on.
//! Outputs go to a temporary file created with `O_EXCL` under a random name in the output's
//! directory, written through its handle, and renamed over the output only when complete; the
//! temporary files a process has open are listed, so that a signal handler can remove them
//! ([`remove_temporary_files`]) and none outlives the process.

use crate::error::{PruneError, Result};
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files being written by this process, removed by [`remove_temporary_files`].
static TEMPORARY_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn io_error(path: &Path, error: std::io::Error) -> PruneError {
    PruneError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// What a file that is not a regular file is, for messages.
fn kind_of(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// Fails unless `metadata` (of `path`) is a regular file's, naming what it is instead.
fn ensure_regular(path: &Path, metadata: &Metadata) -> Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(PruneError::NotRegularFile {
        path: path.display().to_string(),
        kind: kind_of(metadata),
    })
}

/// Opens `path` for reading if it is a regular file (symlinks are followed), without blocking
/// on FIFOs; the check is made on the open file, so the path cannot be swapped in between.
pub fn open_regular(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| io_error(path, error))?;
    let metadata = file.metadata().map_err(|error| io_error(path, error))?;
    ensure_regular(path, &metadata)?;
    Ok(file)
}

/// The contents of the regular file at `path`, refused when larger than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| io_error(path, error))?;
    if bytes.len() as u64 > limit {
        return Err(PruneError::TooLarge {
            path: path.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// Fails unless `path` is a regular file (following symlinks), naming what it is instead.
pub fn check_regular(path: &Path) -> Result<()> {
    let metadata = std::fs::metadata(path).map_err(|error| io_error(path, error))?;
    ensure_regular(path, &metadata)
}

/// Where writing `path` lands: the file a symlink points to, or the path itself in its
/// (existing) directory; an existing destination must be a regular file.
fn destination(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            let resolved = path.canonicalize().map_err(|error| io_error(path, error))?;
            let metadata = std::fs::metadata(&resolved).map_err(|error| io_error(path, error))?;
            ensure_regular(path, &metadata)?;
            Ok(resolved)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let name = path.file_name().ok_or_else(|| {
                io_error(
                    path,
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
                )
            })?;
            let parent = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let directory = parent.canonicalize().map_err(|error| {
                io_error(
                    path,
                    std::io::Error::new(
                        error.kind(),
                        format!(
                            "its directory {} cannot be used ({error})",
                            parent.display()
                        ),
                    ),
                )
            })?;
            Ok(directory.join(name))
        }
        Err(error) => Err(io_error(path, error)),
    }
}

/// Fails when writing `output` would replace `input`: the same path after resolving symlinks,
/// or the same file under another name (a hardlink).
pub fn check_distinct(input: &Path, output: &Path) -> Result<()> {
    let same = || PruneError::SameFile {
        input: input.display().to_string(),
        output: output.display().to_string(),
    };
    let Ok(input_metadata) = std::fs::metadata(input) else {
        return Ok(()); // reading the input will report it
    };
    let output = destination(output)?;
    if input.canonicalize().is_ok_and(|input| input == output) {
        return Err(same());
    }
    if let Ok(output_metadata) = std::fs::metadata(&output) {
        if (output_metadata.dev(), output_metadata.ino())
            == (input_metadata.dev(), input_metadata.ino())
        {
            return Err(same());
        }
    }
    Ok(())
}

/// Writes `path` atomically: `write` fills a new temporary file in the same directory (created
/// with `O_EXCL` under a random name, with the permissions a new file gets), which then
/// replaces `path` in one rename. On failure the temporary file is removed and `path` is
/// untouched. A symlink at `path` is written through (its target is replaced); an existing
/// `path` that is not a regular file is refused.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let destination = destination(path)?;
    let directory = destination.parent().unwrap_or(Path::new("/"));
    let name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    // The list stays locked while the file is created and listed, and again while it is
    // renamed (or removed) and unlisted: a signal handler calling `remove_temporary_files`
    // meanwhile waits, so it never misses a temporary file nor removes a finished output's name.
    let mut temporary = {
        let mut files = lock_temporary_files();
        let temporary = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(directory)
            .map_err(|error| io_error(path, error))?;
        files.push(temporary.path().to_owned());
        temporary
    };
    let written = write(temporary.as_file_mut());
    let mut files = lock_temporary_files();
    let temporary_path = temporary.path().to_owned();
    files.retain(|p| *p != temporary_path);
    written.and_then(|()| {
        temporary
            .persist(&destination)
            .map(drop)
            .map_err(|error| io_error(path, error.error))
    })
}

fn lock_temporary_files() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    TEMPORARY_FILES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the temporary files this process is writing (for a signal handler that is about to
/// exit: a write cut short must leave nothing behind). Returns how many it removed.
pub fn remove_temporary_files() -> usize {
    let files = std::mem::take(&mut *lock_temporary_files());
    files
        .iter()
        .filter(|file| std::fs::remove_file(file).is_ok())
        .count()
}
