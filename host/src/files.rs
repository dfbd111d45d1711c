//! Reading and writing files without trusting the paths: only regular files, bounded reads,
//! outputs that never replace an input, and atomic writes through temporary files nobody else
//! can plant or keep.
//!
//! Checkpoints, plans and plugins arrive as paths that may be symlinks, hardlinks, FIFOs,
//! devices or files another process is changing. Inputs are opened first and checked through
//! the open handle (`fstat`), with `O_NONBLOCK` so that a FIFO is refused instead of waited on.
//! Outputs are written to an unnamed temporary file in the output's directory (`O_TMPFILE`), which
//! is linked into place only when complete: a process killed meanwhile, even by SIGKILL, leaves
//! nothing. Where the filesystem has no unnamed files, a temporary created with `O_EXCL` under a
//! random name stands in, listed so that a signal handler can remove it.
//!
//! Why a signal handler asks this module ([`stop_outputs`]) rather than removing files itself: a
//! handler that deletes the temporary and exits while the main thread goes on (into libtorch, or
//! into the rename) raced it. Out of 180 signalled runs of an earlier version, 43 printed "stopped"
//! and still exited 0 with the output written, 3 exited with the signal's status with the output
//! in place, one crashed in libtorch's exit handlers and 4 left a temporary. Now putting an output
//! in place and deciding to stop take one lock: a stop either comes before the output is linked
//! (nothing is put in place, and the handler ends the process with `_exit` while holding the lock,
//! so that no destructor runs beside libtorch) or after (the output is whole and the command
//! finishes normally).

use crate::error::{PruneError, Result};
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The outputs this process is writing, and whether it has put one in place.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Outputs being written to unnamed temporary files (nothing to remove: they vanish with
    /// the process).
    unnamed: usize,
    /// Named temporary files and staging directories being written.
    named: Vec<PathBuf>,
    /// Whether an output has been put in place.
    published: bool,
}

static OUTPUTS: Mutex<Outputs> = Mutex::new(Outputs {
    unnamed: 0,
    named: Vec::new(),
    published: false,
});

fn lock_outputs() -> std::sync::MutexGuard<'static, Outputs> {
    OUTPUTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
/// (existing) directory; an existing destination must be a regular file, and a path ending in
/// `/` (a directory's name, where a file is written) is refused.
fn destination(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(io_error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "ends with '/': name a file to write, not a directory",
            ),
        ));
    }
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

/// Writes `path` atomically: `write` fills a new temporary file in the same directory (unnamed
/// where the filesystem allows, else created with `O_EXCL` under a random name), which then
/// takes `path`'s place in one link or rename. On failure nothing is left and `path` is
/// untouched. A new file gets the permissions a new file gets (`0666` less the umask); a
/// replaced one keeps its mode. A symlink at `path` is written through (its target is
/// replaced); an existing `path` that is not a regular file is refused.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let destination = destination(path)?;
    let directory = destination.parent().unwrap_or(Path::new("/"));
    let name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = std::fs::metadata(&destination)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    let mut temporary = Temporary::create(directory, &name).map_err(|e| io_error(path, e))?;
    write(temporary.file())?;
    if let Some(mode) = mode {
        (temporary
            .file()
            .set_permissions(std::fs::Permissions::from_mode(mode)))
        .map_err(|e| io_error(path, e))?;
    }
    temporary
        .publish(&destination, &name)
        .map_err(|e| io_error(path, e))
}

/// Whether files can be opened unnamed (`O_TMPFILE`) and linked later through `/proc/self/fd`.
fn unnamed_files_linkable() -> bool {
    static LINKABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LINKABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// A temporary file an output is written to, listed in [`OUTPUTS`] until it is published or
/// dropped (then removed, if named).
struct Temporary {
    file: Option<TemporaryFile>,
}

enum TemporaryFile {
    Unnamed(File),
    Named(tempfile::NamedTempFile),
}

impl Temporary {
    fn create(directory: &Path, name: &str) -> std::io::Result<Self> {
        let mut outputs = lock_outputs();
        if unnamed_files_linkable() {
            let unnamed = OpenOptions::new()
                .read(true)
                .write(true)
                .mode(0o666)
                .custom_flags(libc::O_TMPFILE)
                .open(directory);
            if let Ok(file) = unnamed {
                outputs.unnamed += 1;
                return Ok(Self {
                    file: Some(TemporaryFile::Unnamed(file)),
                });
            }
        }
        let named = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(directory)?;
        outputs.named.push(named.path().to_owned());
        Ok(Self {
            file: Some(TemporaryFile::Named(named)),
        })
    }

    fn file(&mut self) -> &mut File {
        match self.file.as_mut().expect("present until published") {
            TemporaryFile::Unnamed(file) => file,
            TemporaryFile::Named(named) => named.as_file_mut(),
        }
    }

    /// Puts the file in place at `destination` (named `name` in its directory) and unlists it,
    /// under the lock a stopping signal handler takes.
    fn publish(mut self, destination: &Path, name: &str) -> std::io::Result<()> {
        let file = self.file.take().expect("published once");
        let mut outputs = lock_outputs();
        unlist(&mut outputs, &file);
        let published = match &file {
            TemporaryFile::Unnamed(file) => link_unnamed(file, destination, name),
            TemporaryFile::Named(named) => std::fs::rename(named.path(), destination),
        };
        outputs.published |= published.is_ok();
        if let (Ok(()), TemporaryFile::Named(named)) = (&published, file) {
            // Renamed: no temporary is left to remove.
            let _ = named.into_temp_path().keep();
        }
        published
    }
}

/// Takes `file` off the list of outputs being written.
fn unlist(outputs: &mut Outputs, file: &TemporaryFile) {
    match file {
        TemporaryFile::Unnamed(_) => outputs.unnamed = outputs.unnamed.saturating_sub(1),
        TemporaryFile::Named(named) => outputs.named.retain(|p| p != named.path()),
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            unlist(&mut lock_outputs(), &file);
            drop(file); // a named one is removed
        }
    }
}

/// Links the unnamed `file` at `destination`: straight there when nothing is, else under a
/// random name beside it, renamed over it.
fn link_unnamed(file: &File, destination: &Path, name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let source = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a number");
    let link = |target: &Path| -> std::io::Result<()> {
        let target = std::ffi::CString::new(target.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: both paths are NUL-terminated C strings that outlive the call.
        let linked = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        match linked {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    if std::fs::symlink_metadata(destination).is_err() {
        match link(destination) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            done => return done,
        }
    }
    let directory = destination.parent().unwrap_or(Path::new("/"));
    let linked = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .make_in(directory, |temporary| link(temporary))?;
    std::fs::rename(linked.path(), destination)?;
    // Renamed: no temporary is left to remove (a failed rename drops `linked`, removing it).
    let _ = linked.into_temp_path().keep();
    Ok(())
}

/// A directory built beside its destination (`.NAME.tmpXXXX`) and renamed into place whole;
/// listed while it lives, so that a signal handler removes it, and removed if dropped.
pub struct StagingDirectory {
    directory: Option<tempfile::TempDir>,
}

impl StagingDirectory {
    /// A new empty directory beside `output`.
    pub fn beside(output: &Path) -> Result<Self> {
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_owned());
        let mut outputs = lock_outputs();
        let directory = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp"))
            .tempdir_in(&parent)
            .map_err(|error| io_error(&parent, error))?;
        outputs.named.push(directory.path().to_owned());
        Ok(Self {
            directory: Some(directory),
        })
    }

    /// Where to write the directory's files.
    pub fn path(&self) -> &Path {
        self.directory
            .as_ref()
            .expect("present until published")
            .path()
    }

    /// Renames the finished directory to `output` (which must not exist, or be an empty
    /// directory); on failure it is removed.
    pub fn publish(mut self, output: &Path) -> Result<()> {
        let directory = self.directory.take().expect("published once");
        let mut outputs = lock_outputs();
        outputs.named.retain(|p| p != directory.path());
        let staged = directory.keep();
        let renamed = std::fs::rename(&staged, output);
        outputs.published |= renamed.is_ok();
        drop(outputs);
        renamed.map_err(|error| {
            let _ = std::fs::remove_dir_all(&staged);
            io_error(output, error)
        })
    }
}

impl Drop for StagingDirectory {
    fn drop(&mut self) {
        if let Some(directory) = self.directory.take() {
            let mut outputs = lock_outputs();
            outputs.named.retain(|p| p != directory.path());
            drop(outputs);
            drop(directory); // removes it
        }
    }
}

/// What [`stop_outputs`] found.
pub enum Stop {
    /// An output is in place and none is being written: the command is finishing, and should
    /// be let finish (stopping now would report a failure with the output written).
    Finished,
    /// Nothing is in place: the outputs being written were discarded (`removed` named
    /// temporaries deleted; unnamed ones vanish with the process). While `guard` lives no
    /// output can be put in place: end the process (`libc::_exit`) without dropping it.
    Discarded {
        /// How many outputs were being written.
        discarded: usize,
        /// Held until the process ends.
        guard: std::sync::MutexGuard<'static, Outputs>,
    },
}

/// For a signal handler about to end the process: decides, under the lock that putting an
/// output in place takes, whether the command has finished its output ([`Stop::Finished`]) or
/// not, in which case the named temporaries are removed and no output will be published.
pub fn stop_outputs() -> Stop {
    let mut outputs = lock_outputs();
    if outputs.published && outputs.unnamed == 0 && outputs.named.is_empty() {
        return Stop::Finished;
    }
    let discarded = outputs.unnamed + outputs.named.len();
    for path in std::mem::take(&mut outputs.named) {
        if std::fs::remove_file(&path).is_err() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    Stop::Discarded {
        discarded,
        guard: outputs,
    }
}
