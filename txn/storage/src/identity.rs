//! Noticing that a store's files were deleted, moved or replaced under a running process.
//!
//! An open file handle keeps writing to its inode after the path was unlinked, so without a check
//! every later append would "succeed" into a file nobody will ever open again, and everything
//! acknowledged since would be gone after a restart. A durable backend remembers the identity
//! (device and inode number) each path named at open and checks, after each durable write, that
//! the path still names the same file: one `stat` per write, i.e. per group of epochs.

use std::path::{Path, PathBuf};

use crate::StorageError;

/// What a path named when the store was opened.
#[derive(Debug)]
pub(crate) struct PathIdentity {
    backend: &'static str,
    path: PathBuf,
    id: FileId,
}

/// The identity of a file or directory: (device, inode) on Unix. Elsewhere only the existence of
/// the path is checked.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct FileId {
    device: u64,
    inode: u64,
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        device: meta.dev(),
        inode: meta.ino(),
    }
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> FileId {
    FileId {
        device: 0,
        inode: 0,
    }
}

impl PathIdentity {
    /// Remembers what `path` names now.
    pub(crate) fn capture(backend: &'static str, path: &Path) -> Result<Self, StorageError> {
        let meta = std::fs::metadata(path)
            .map_err(|err| StorageError::io(backend, "read file identity", err))?;
        Ok(Self {
            backend,
            path: path.to_path_buf(),
            id: file_id(&meta),
        })
    }

    /// Fails with [`StorageError::Vanished`] unless the path still names the file it named at
    /// open.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        let vanished = |detail: String| StorageError::Vanished {
            backend: self.backend,
            path: self.path.display().to_string(),
            detail,
        };
        match std::fs::metadata(&self.path) {
            Ok(meta) if file_id(&meta) == self.id => Ok(()),
            Ok(meta) => {
                let now = file_id(&meta);
                Err(vanished(format!(
                    "was replaced: it named device {} inode {} when the store was opened and \
                     names device {} inode {} now; writes since went to the old file, so they \
                     are not acknowledged",
                    self.id.device, self.id.inode, now.device, now.inode
                )))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(vanished(
                "was deleted while the store was open (the data directory or the file is gone); \
                 writes since went to a deleted file, so they are not acknowledged"
                    .into(),
            )),
            Err(err) => Err(vanished(format!("cannot be checked: {err}"))),
        }
    }
}
