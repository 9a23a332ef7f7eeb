//! `CLOUDTKEFILES` from the real process environment. The only test of this binary, so
//! that changing the environment races with nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, os::unix::fs::PermissionsExt};

use tke_workstation::{DirOrigin, FilesDir};

#[test]
fn cloudtkefiles_is_honoured_and_explicit_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let from_env = tmp.path().join("from-env");
    let explicit = tmp.path().join("explicit");
    std::env::set_var(FilesDir::ENV, &from_env);

    let dir = FilesDir::resolve(None).unwrap();
    assert_eq!(dir.path(), from_env);
    assert_eq!(dir.origin(), DirOrigin::Env);
    assert_eq!(
        fs::metadata(&from_env).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let dir = FilesDir::resolve(Some(&explicit)).unwrap();
    assert_eq!(dir.path(), explicit);
    assert_eq!(dir.origin(), DirOrigin::Explicit);

    // A CLOUDTKEFILES that names a regular file is refused, naming the variable.
    let file = tmp.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    std::env::set_var(FilesDir::ENV, &file);
    let err = FilesDir::resolve(None).unwrap_err();
    assert!(err.to_string().contains("CLOUDTKEFILES"), "{err}");
    std::env::remove_var(FilesDir::ENV);
}
