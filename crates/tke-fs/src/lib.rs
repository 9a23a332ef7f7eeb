#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod atomic;
mod lock;

pub use atomic::{create_private, create_private_dir, write_private};
pub use lock::{DirLock, LockError};
